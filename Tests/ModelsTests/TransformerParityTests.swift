import Foundation
import Testing
@testable import Models

/// Float32 logits against Hugging Face transformers on the fixture models
/// (Scripts/make_model_fixtures.py): the whole prompt at once, prompt then token by token,
/// the greedy continuation, and the same weights from GGUF.
@Suite struct TransformerParityTests {
    struct Reference {
        let prompt: [Int]
        let logits: [[Float]]
        let greedy: [Int]
    }

    static func reference(_ name: String) throws -> Reference {
        let folder = sharedModels.appendingPathComponent(name)
        let logits = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("logits.json"))) as! [String: Any]
        let greedy = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("greedy.json"))) as! [String: Any]
        return Reference(prompt: logits["prompt_ids"] as! [Int],
                         logits: (logits["logits"] as! [[NSNumber]]).map { $0.map(\.floatValue) },
                         greedy: greedy["generated_ids"] as! [Int])
    }

    static func model(_ path: String) throws -> TransformerModel {
        try TransformerModel(files: ModelFiles.load(path), context: ComputeContext(threads: 2), maximumTokens: 64)
    }

    static func maximumDifference(_ a: ArraySlice<Float>, _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max() ?? .infinity }

    @Test(arguments: ["llama-gqa", "llama3-tied", "mistral-sliding", "qwen2-bias", "mixtral-moe"])
    func fullSequenceLogits(name: String) throws {
        let reference = try Self.reference(name)
        let model = try Self.model(sharedModels.appendingPathComponent(name).path)
        let cache = try model.makeCache(memoryBudget: 1 << 22, elementType: .f32)
        let logits = try model.forward(reference.prompt, sequence: cache.makeSequence(), cache: cache, allLogits: true)
        let vocabulary = model.configuration.vocabularySize
        var worst: Float = 0
        defer { print("PARITY \(name): max |logit difference| over all 20 positions \(worst)") }
        for (position, row) in reference.logits.enumerated() {
            let difference = Self.maximumDifference(logits[position * vocabulary..<(position + 1) * vocabulary], row)
            worst = max(worst, difference)
            #expect(difference <= 1e-4, "\(name) position \(position): max |difference| \(difference)")
        }
    }

    @Test(arguments: ["llama-gqa", "mistral-sliding", "qwen2-bias", "mixtral-moe"])
    func stepByStepEqualsFullSequence(name: String) throws {
        let reference = try Self.reference(name)
        let model = try Self.model(sharedModels.appendingPathComponent(name).path)
        let cache = try model.makeCache(memoryBudget: 1 << 22, elementType: .f32)
        let sequence = cache.makeSequence()
        let vocabulary = model.configuration.vocabularySize
        _ = try model.forward(Array(reference.prompt[..<7]), sequence: sequence, cache: cache)
        for position in 7..<reference.prompt.count {
            let logits = try model.forward([reference.prompt[position]], sequence: sequence, cache: cache)
            let difference = Self.maximumDifference(logits[0..<vocabulary], reference.logits[position])
            #expect(difference <= 1e-4, "\(name) position \(position): \(difference)")
        }
    }

    @Test(arguments: ["llama-gqa", "llama3-tied", "mistral-sliding", "qwen2-bias", "mixtral-moe"])
    func greedyContinuationIsIdentical(name: String) throws {
        let reference = try Self.reference(name)
        let model = try Self.model(sharedModels.appendingPathComponent(name).path)
        let cache = try model.makeCache(memoryBudget: 1 << 22, elementType: .f32)
        let sequence = cache.makeSequence()
        var logits = try model.forward(reference.prompt, sequence: sequence, cache: cache)
        var generated: [Int] = []
        for _ in 0..<reference.greedy.count {
            let next = logits.withUnsafeBufferPointer { Kernels.argmax($0)! }
            generated.append(next)
            logits = try model.forward([next], sequence: sequence, cache: cache)
        }
        #expect(generated == reference.greedy)
    }

    @Test(arguments: ["llama-gqa", "qwen2-bias", "mixtral-moe"])
    func ggufGivesTheSameLogits(name: String) throws {
        let reference = try Self.reference(name)
        let model = try Self.model(sharedModels.appendingPathComponent("\(name).f32.gguf").path)
        let cache = try model.makeCache(memoryBudget: 1 << 22, elementType: .f32)
        let logits = try model.forward(reference.prompt, sequence: cache.makeSequence(), cache: cache, allLogits: true)
        let vocabulary = model.configuration.vocabularySize
        for (position, row) in reference.logits.enumerated() {
            #expect(Self.maximumDifference(logits[position * vocabulary..<(position + 1) * vocabulary], row) <= 1e-4, "position \(position)")
        }
    }

    @Test func badInputThrows() throws {
        let model = try Self.model(sharedModels.appendingPathComponent("llama-gqa").path)
        let cache = try model.makeCache(memoryBudget: 1 << 16, elementType: .f32)
        let sequence = cache.makeSequence()
        #expect(throws: ModelError.tokenOutOfRange(token: 512, vocabularySize: 512)) { try model.forward([1, 512], sequence: sequence, cache: cache) }
        #expect(throws: ModelError.tooManyTokens(count: 65, maximum: 64)) { try model.forward(Array(repeating: 1, count: 65), sequence: sequence, cache: cache) }
        #expect(throws: KVCacheError.self) { for _ in 0..<100 { _ = try model.forward(Array(repeating: 1, count: 60), sequence: sequence, cache: cache) } }
    }
}
