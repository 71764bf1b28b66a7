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

    /// Fixture JSON through Quill's own parser (Foundation's JSONSerialization on Linux has
    /// crashed here when several tests parsed large files at once).
    static func json(_ url: URL) throws -> StrictJSON { try Data(contentsOf: url).withUnsafeBytes { try StrictJSON.parse($0) } }

    static func integers(_ value: StrictJSON?) -> [Int] {
        guard case let .array(items)? = value else { return [] }
        return items.compactMap { if case let .integer(i) = $0 { return i } else { return nil } }
    }

    static func floatRows(_ value: StrictJSON?) -> [[Float]] {
        guard case let .array(rows)? = value else { return [] }
        return rows.map { row in
            guard case let .array(items) = row else { return [] }
            return items.map { item -> Float in
                switch item {
                case let .number(d): return Float(d)
                case let .integer(i): return Float(i)
                default: return .nan
                }
            }
        }
    }

    static func reference(_ name: String) throws -> Reference {
        let folder = sharedModels.appendingPathComponent(name)
        let logits = try json(folder.appendingPathComponent("logits.json"))
        let greedy = try json(folder.appendingPathComponent("greedy.json"))
        return Reference(prompt: integers(logits["prompt_ids"]), logits: floatRows(logits["logits"]), greedy: integers(greedy["generated_ids"]))
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

/// Mamba against transformers: full-sequence logits, token by token from a restored
/// snapshot, the greedy continuation (with its logits), and the GGUF export.
@Suite struct MambaParityTests {
    static func model(_ path: String) throws -> MambaModel {
        try MambaModel(files: ModelFiles.load(path), context: ComputeContext(threads: 2), maximumTokens: 64)
    }

    @Test(arguments: ["mamba", "mamba.f32.gguf"])
    func fullSequenceLogits(name: String) throws {
        let reference = try TransformerParityTests.reference("mamba")
        let model = try Self.model(sharedModels.appendingPathComponent(name).path)
        var state = model.makeState()
        let logits = try model.forward(reference.prompt, state: &state, allLogits: true)
        let vocabulary = model.configuration.vocabularySize
        var worst: Float = 0
        for (position, row) in reference.logits.enumerated() {
            worst = max(worst, TransformerParityTests.maximumDifference(logits[position * vocabulary..<(position + 1) * vocabulary], row))
        }
        print("PARITY \(name): max |logit difference| over all 20 positions \(worst)")
        #expect(worst <= 1e-4)
    }

    @Test func stepByStepFromASnapshotEqualsFullSequence() throws {
        let reference = try TransformerParityTests.reference("mamba")
        let model = try Self.model(sharedModels.appendingPathComponent("mamba").path)
        var state = model.makeState()
        _ = try model.forward(Array(reference.prompt[..<7]), state: &state)
        let snapshot = state
        _ = try model.forward([5, 6, 7], state: &state)  // a detour, then roll back
        state = snapshot
        #expect(state.length == 7)
        for position in 7..<reference.prompt.count {
            let logits = try model.forward([reference.prompt[position]], state: &state)
            #expect(TransformerParityTests.maximumDifference(logits[...], reference.logits[position]) <= 1e-4, "position \(position)")
        }
    }

    @Test func greedyContinuationAndItsLogits() throws {
        let folder = sharedModels.appendingPathComponent("mamba")
        // generated_logits[step]: the logit transformers gave the token it chose at that step.
        guard case let .array(values)? = try TransformerParityTests.json(folder.appendingPathComponent("greedy.json"))["generated_logits"] else {
            Issue.record("no generated_logits"); return
        }
        let chosenLogits = values.map { value -> Float in if case let .number(d) = value { Float(d) } else { .nan } }
        let reference = try TransformerParityTests.reference("mamba")
        let model = try Self.model(folder.path)
        var state = model.makeState()
        var logits = try model.forward(reference.prompt, state: &state)
        var generated: [Int] = []
        for step in 0..<reference.greedy.count {
            let next = logits.withUnsafeBufferPointer { Kernels.argmax($0)! }
            #expect(abs(logits[next] - chosenLogits[step]) <= 1e-4, "step \(step): \(logits[next]) vs \(chosenLogits[step])")
            generated.append(next)
            logits = try model.forward([next], state: &state)
        }
        #expect(generated == reference.greedy)
    }
}

@Suite struct TransformerAPITests {
    /// Several sequences in one step give what each gives alone.
    @Test func batchedStepEqualsSeparateSteps() throws {
        let reference = try TransformerParityTests.reference("llama-gqa")
        let path = sharedModels.appendingPathComponent("llama-gqa").path
        let model = try TransformerParityTests.model(path)
        let vocabulary = model.configuration.vocabularySize
        let prompts = [Array(reference.prompt[..<5]), Array(reference.prompt[3..<14]), Array(reference.prompt[9...])]
        // Alone.
        var alone: [[Float]] = []
        for prompt in prompts {
            let cache = try model.makeCache(memoryBudget: 1 << 22, elementType: .f32)
            let sequence = cache.makeSequence()
            var logits = try model.forward(prompt, sequence: sequence, cache: cache, allLogits: true)
            logits += try model.forward([7], sequence: sequence, cache: cache)
            alone.append(logits)
        }
        // Together: one prefill step for all three, then one decode step of three rows.
        let cache = try model.makeCache(memoryBudget: 1 << 22, elementType: .f32)
        let sequences = prompts.map { _ in cache.makeSequence() }
        let prefill = try model.forward(zip(sequences, prompts).map { SequenceChunk(sequence: $0, tokens: $1, allLogits: true) }, cache: cache)
        let decode = try model.forward(sequences.map { SequenceChunk(sequence: $0, tokens: [7]) }, cache: cache)
        for i in 0..<3 {
            let together = prefill[i] + decode[i]
            #expect(together.count == (prompts[i].count + 1) * vocabulary)
            #expect(zip(together, alone[i]).allSatisfy { abs($0 - $1) <= 1e-5 }, "sequence \(i)")
        }
        #expect(throws: ModelError.self) {
            try model.forward([SequenceChunk(sequence: sequences[0], tokens: [1]), SequenceChunk(sequence: sequences[0], tokens: [2])], cache: cache)
        }
    }

    @Test func logitsInChunksAndPerplexity() throws {
        let reference = try TransformerParityTests.reference("qwen2-bias")
        let model = try TransformerModel(files: ModelFiles.load(sharedModels.appendingPathComponent("qwen2-bias").path),
                                         context: ComputeContext(threads: 2), maximumTokens: 8)
        let cache = try model.makeCache(memoryBudget: 1 << 22, elementType: .f32)
        let logits = try model.logits(for: reference.prompt, cache: cache)  // 20 tokens in chunks of 8
        let vocabulary = model.configuration.vocabularySize
        for (position, row) in reference.logits.enumerated() {
            #expect(TransformerParityTests.maximumDifference(logits[position * vocabulary..<(position + 1) * vocabulary], row) <= 1e-4)
        }
        // Perplexity from the reference logits, in float64.
        var nll = 0.0
        for position in 0..<(reference.prompt.count - 1) {
            let row = reference.logits[position].map(Double.init), m = row.max()!
            nll += m + log(row.reduce(0) { $0 + exp($1 - m) }) - row[reference.prompt[position + 1]]
        }
        let expected = exp(nll / Double(reference.prompt.count - 1))
        let perplexity = try model.perplexity(of: reference.prompt, cache: cache)
        #expect(abs(perplexity - expected) <= 1e-4 * expected, "\(perplexity) vs \(expected)")
        #expect(cache.availableBlockCount == cache.blockCount)
    }

    /// A tied Q4_0 or Q8_0 embedding (as a GGUF file of that type has it) is stored
    /// interleaved for the output head: a token lookup gives exactly the row-major row, and
    /// the head's logits match the same values held as F32 (only the activations' int8
    /// rounding differs).
    @Test(arguments: [ElementType.q4_0, .q8_0])
    func tiedEmbeddingIsInterleavedForTheHead(type: ElementType) throws {
        let files = try ModelFiles.load(sharedModels.appendingPathComponent("llama3-tied").path)
        let name = "model.embed_tokens.weight"
        let rowMajor = try files.weights.tensor(name).converted(to: type)
        func model(embedding: Tensor) throws -> TransformerModel {
            let weights = ModelWeights(source: files.weights.source, replaced: [name: embedding], path: files.weights.path)
            let replaced = ModelFiles(configuration: files.configuration, weights: weights, tokenizer: files.tokenizer, eosTokenIDs: files.eosTokenIDs)
            return try TransformerModel(files: replaced, context: ComputeContext(threads: 2), maximumTokens: 64)
        }
        let quantized = try model(embedding: rowMajor), f32 = try model(embedding: rowMajor.converted(to: .f32))
        #expect(quantized.embedding.elementType.isInterleaved && quantized.embedding.elementType.rowMajor == type)
        #expect(quantized.outputHead.elementType == quantized.embedding.elementType)
        let columns = quantized.configuration.hiddenSize, vocabulary = quantized.configuration.vocabularySize
        var expected = [Float](repeating: 0, count: columns), actual = expected
        for token in [0, 1, 7, 8, 255, vocabulary - 1] {
            try rowMajor.dequantizeRow(token, into: &expected)
            try quantized.embedding.dequantizeRow(token, into: &actual)
            #expect(actual == expected, "token \(token)")
        }
        let prompt = try TransformerParityTests.reference("llama3-tied").prompt
        let a = try quantized.logits(for: prompt, cache: quantized.makeCache(memoryBudget: 1 << 22, elementType: .f32))
        let b = try f32.logits(for: prompt, cache: f32.makeCache(memoryBudget: 1 << 22, elementType: .f32))
        let scale = b.map(abs).max() ?? 1
        let difference = zip(a, b).map { abs($0 - $1) }.max() ?? .infinity
        #expect(difference <= 0.02 * scale, "\(difference) of \(scale)")
    }

    /// Q8_0 weights change the next-token distribution by a small, stated amount.
    @Test(arguments: ["llama-gqa", "mixtral-moe"])
    func q8QuantizationKLDivergence(name: String) throws {
        let path = sharedModels.appendingPathComponent(name).path
        let reference = try TransformerParityTests.reference(name)
        let f32 = try TransformerParityTests.model(path)
        let q8 = try TransformerModel(files: ModelFiles.load(path, options: LoadOptions(quantization: .q8_0)),
                                      context: ComputeContext(threads: 2), maximumTokens: 64)
        let vocabulary = f32.configuration.vocabularySize
        let a = try f32.logits(for: reference.prompt, cache: f32.makeCache(memoryBudget: 1 << 22, elementType: .f32))
        let b = try q8.logits(for: reference.prompt, cache: q8.makeCache(memoryBudget: 1 << 22, elementType: .f32))
        func distribution(_ row: ArraySlice<Float>) -> [Double] {
            let m = Double(row.max()!), e = row.map { exp(Double($0) - m) }, total = e.reduce(0, +)
            return e.map { $0 / total }
        }
        var divergences: [Double] = []
        for position in 0..<reference.prompt.count {
            let p = distribution(a[position * vocabulary..<(position + 1) * vocabulary])
            let q = distribution(b[position * vocabulary..<(position + 1) * vocabulary])
            divergences.append(zip(p, q).reduce(0) { $0 + $1.0 * log($1.0 / $1.1) })
        }
        let mean = divergences.reduce(0, +) / Double(divergences.count), maximum = divergences.max()!
        print("KL \(name) Q8_0 vs F32 next-token distribution: mean \(mean), max \(maximum)")
        #expect(maximum < 1e-3)
    }
}
