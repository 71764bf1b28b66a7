import Foundation
import Synchronization
import Testing
@testable import Models

let sharedModels = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/models")

@Suite struct ModelFilesTests {
    @Test(arguments: ["llama-gqa", "llama3-tied", "mistral-sliding", "qwen2-bias", "mixtral-moe", "mamba"])
    func loadsEveryFixtureFolder(name: String) throws {
        let files = try ModelFiles.load(sharedModels.appendingPathComponent(name).path)
        #expect(files.configuration.vocabularySize == 512 && files.tokenizer.vocabularySize == 512)
        #expect(files.eosTokenIDs.contains(2))
        switch files.configuration {
        case let .transformer(c):
            #expect(c.hiddenSize == 32 && c.layerCount == 2 && c.headDimension == 8)
            #expect(try files.weights.tensor("model.embed_tokens.weight", shape: [512, 32]).elementType == .f32)
            #expect(try files.weights.tensor("model.layers.1.self_attn.k_proj.weight", shape: [c.keyValueHeadCount * 8, 32]).rows == c.keyValueHeadCount * 8)
            #expect(files.weights.contains("lm_head.weight") == !c.tieWordEmbeddings)
            if c.experts != nil {
                #expect(files.weights.contains("model.layers.0.block_sparse_moe.experts.3.w2.weight"))
            }
            #expect(throws: ModelFileError.self) { try files.weights.tensor("model.embed_tokens.weight", shape: [512, 33]) }
        case let .mamba(c):
            #expect(c.hiddenSize == 32 && c.timeStepRank == 2 && c.innerSize == 64 && c.useConvolutionBias && !c.useBias)
            #expect(files.weights.contains("backbone.layers.1.mixer.A_log"))
        }
        #expect(throws: ModelFileError.self) { try files.weights.tensor("model.nonexistent") }
    }

    /// llama.cpp's converter permutes arch `llama`'s Q/K rows so that adjacent pairs rotate:
    /// row h·d + 2i + j of the GGUF holds row h·d + j·d/2 + i of the checkpoint.
    static func permutedRows(_ values: [Float], heads: Int, headDimension: Int, columns: Int) -> [Float] {
        var out = values
        for h in 0..<heads {
            for i in 0..<headDimension / 2 {
                for j in 0..<2 {
                    let to = h * headDimension + 2 * i + j, from = h * headDimension + j * headDimension / 2 + i
                    for c in 0..<columns { out[to * columns + c] = values[from * columns + c] }
                }
            }
        }
        return out
    }

    @Test(arguments: [("llama-gqa", true), ("qwen2-bias", false), ("mixtral-moe", true)])
    func ggufExportMatchesTheCheckpoint(name: String, permuted: Bool) throws {
        let folder = try ModelFiles.load(sharedModels.appendingPathComponent(name).path)
        let gguf = try ModelFiles.load(sharedModels.appendingPathComponent("\(name).f32.gguf").path)
        guard case var .transformer(expected) = folder.configuration, case let .transformer(actual) = gguf.configuration else {
            Issue.record("not transformers"); return
        }
        #expect(actual.ropeLayout == (permuted ? .adjacentPairs : .halfSplit))
        expected.ropeLayout = actual.ropeLayout
        expected.maxPositionEmbeddings = actual.maxPositionEmbeddings
        expected.bosTokenID = actual.bosTokenID
        expected.eosTokenIDs = actual.eosTokenIDs
        #expect(actual == expected)
        #expect(Set(gguf.weights.names) == Set(folder.weights.names))
        for tensorName in folder.weights.names {
            let reference = try folder.weights.tensor(tensorName), tensor = try gguf.weights.tensor(tensorName)
            #expect(tensor.shape == reference.shape, "\(tensorName)")
            var values = reference.floats()
            if permuted, tensorName.hasSuffix("q_proj.weight") || tensorName.hasSuffix("k_proj.weight") {
                let heads = tensorName.hasSuffix("q_proj.weight") ? expected.headCount : expected.keyValueHeadCount
                values = Self.permutedRows(values, heads: heads, headDimension: expected.headDimension, columns: reference.columns)
            }
            #expect(tensor.floats() == values, "\(tensorName)")
        }
    }

    /// Mamba's GGUF stores A = -exp(A_log) (as `mixer.A`) and the convolution as [inner, kernel].
    @Test func mambaGGUFMatchesTheCheckpoint() throws {
        let folder = try ModelFiles.load(sharedModels.appendingPathComponent("mamba").path)
        let gguf = try ModelFiles.load(sharedModels.appendingPathComponent("mamba.f32.gguf").path)
        guard case var .mamba(expected) = folder.configuration, case let .mamba(actual) = gguf.configuration else {
            Issue.record("not mamba"); return
        }
        expected.bosTokenID = actual.bosTokenID
        expected.eosTokenIDs = actual.eosTokenIDs
        #expect(actual == expected)
        for name in folder.weights.names {
            let reference = try folder.weights.tensor(name)
            if name.hasSuffix("A_log") {
                let a = try gguf.weights.tensor(name.replacingOccurrences(of: "A_log", with: "A"))
                let expectedA = reference.floats().map { -Foundation.exp($0) }
                #expect(zip(a.floats(), expectedA).allSatisfy { abs($0 - $1) <= 1e-6 * abs($1) }, "\(name)")
                continue
            }
            let tensor = try gguf.weights.tensor(name)
            #expect(tensor.floats() == reference.floats(), "\(name)")
            #expect(tensor.elementCount == reference.elementCount)
        }
        #expect(try gguf.weights.tensor("backbone.layers.0.mixer.conv1d.weight").shape == [64, 4])
    }

    @Test func quantizesAtLoadWithProgress() throws {
        final class Log: Sendable { let fractions = Mutex<[Double]>([]) }
        let log = Log()
        let options = LoadOptions(quantization: .q8_0, threads: 2) { progress in log.fractions.withLock { $0.append(progress.fraction) } }
        let files = try ModelFiles.load(sharedModels.appendingPathComponent("llama-gqa").path, options: options)
        let plain = try ModelFiles.load(sharedModels.appendingPathComponent("llama-gqa").path)
        let q = try files.weights.tensor("model.layers.0.mlp.down_proj.weight")
        #expect(q.elementType == .q8_0x8)  // quantized straight to the layout the kernels read
        let reference = try plain.weights.tensor("model.layers.0.mlp.down_proj.weight").floats()
        let maximum = reference.map(abs).max()!
        #expect(zip(q.floats(), reference).allSatisfy { abs($0 - $1) <= maximum / 127 })
        #expect(try files.weights.tensor("model.embed_tokens.weight").elementType == .f32)  // embeddings stay
        #expect(try files.weights.tensor("model.norm.weight").elementType == .f32)
        let fractions = log.fractions.withLock { $0 }
        #expect(fractions.first == 0 && fractions.last == 1 && fractions == fractions.sorted())
    }

    @Test func badPathsAndFilesThrow() throws {
        #expect { try ModelFiles.load("/nonexistent/model") } throws: { "\($0)".contains("/nonexistent/model") }
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("quill-empty-\(UUID())")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        #expect { try ModelFiles.load(empty.path) } throws: { "\($0)".contains("config.json") }
        // A GGUF holding only a vocabulary has no architecture dimensions.
        let vocabularyOnly = sharedModels.deletingLastPathComponent().appendingPathComponent("tokenizers/byte-level.gguf").path
        #expect { try ModelFiles.load(vocabularyOnly) } throws: { "\($0)".contains("llama.embedding_length") }
        #expect(throws: ConfigurationError.self) {
            try ModelFiles.load(sharedModels.appendingPathComponent("llama-gqa").path, options: LoadOptions(quantization: .f16))
        }
    }
}
