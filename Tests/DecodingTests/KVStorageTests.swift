import Foundation
import Testing
@testable import Decoding

/// The KV cache's storage types on a trained model (the bundled one: head dimension 32, so
/// Q8_0 applies), where attention is peaked the way real text makes it.
@Suite struct KVStorageTests {
    static let bundledModel = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Examples/Models/quill-license").path

    /// The opening of the GPL's preamble: text of the kind the model was trained on.
    static let text = """
        The licenses for most software are designed to take away your freedom to share and change it. \
        By contrast, the GNU General Public License is intended to guarantee your freedom to share and change \
        free software--to make sure the software is free for all its users. This General Public License \
        applies to most of the Free Software Foundation's software and to any other program whose authors \
        commit to using it.
        """

    static func generator(_ type: ElementType) throws -> Generator {
        var configuration = GeneratorConfiguration()
        configuration.threads = 2
        configuration.kvMemoryBudget = 1 << 22
        configuration.kvElementType = type
        return try Generator(modelPath: bundledModel, configuration: configuration)
    }

    /// Q8_0 keys and values change the next-token distributions by a small KL divergence and
    /// the perplexity by well under 1%; F16 by less still. (Measured: Q8_0 mean KL 1.3e-5,
    /// perplexity +0.05%; F16 mean KL 2.5e-8.)
    @Test func q8AndF16StayCloseToF32() async throws {
        let f32 = try Self.generator(.f32)
        let tokens = f32.files.tokenizer.encode(Self.text)
        #expect(tokens.count > 60)
        let exact = try await f32.logits(for: tokens)
        let reference = try await f32.perplexity(of: tokens)
        for (type, meanBound, perplexityBound) in [(ElementType.f16, 1e-6, 1e-4), (.q8_0, 2e-4, 5e-3)] {
            let generator = try Self.generator(type)
            let logits = try await generator.logits(for: tokens)
            let divergences = zip(exact, logits).map { klDivergence($0, $1) }
            let mean = divergences.reduce(0, +) / Double(divergences.count)
            #expect(mean > 0 && mean < meanBound, "\(type): mean KL \(mean), max \(divergences.max()!)")
            let perplexity = try await generator.perplexity(of: tokens)
            #expect(abs(perplexity / reference - 1) < perplexityBound, "\(type): perplexity \(perplexity) vs \(reference)")
        }
    }

    /// The fixtures' heads of 8 cannot be tiled by Q8_0's blocks of 32: a typed error at load.
    @Test func q8NeedsHeadsOfMultiplesOf32() {
        var configuration = GeneratorConfiguration()
        configuration.kvElementType = .q8_0
        #expect(throws: KVCacheError.self) {
            try Generator(modelPath: fixtureModels.appendingPathComponent("llama-gqa").path, configuration: configuration)
        }
    }
}

/// KL(softmax(p) || softmax(q)) of two logit rows, in float64.
func klDivergence(_ p: [Float], _ q: [Float]) -> Double {
    func logSoftmax(_ x: [Float]) -> [Double] {
        let m = Double(x.max()!), total = x.reduce(0.0) { $0 + exp(Double($1) - m) }
        return x.map { Double($0) - m - log(total) }
    }
    let a = logSoftmax(p), b = logSoftmax(q)
    return zip(a, b).reduce(0) { $0 + exp($1.0) * ($1.0 - $1.1) }
}
