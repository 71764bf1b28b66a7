import Foundation
import Testing
@testable import Decoding

let fixtureModels = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/models")

func greedyReference(_ name: String) throws -> (prompt: [Int], generated: [Int]) {
    let url = fixtureModels.appendingPathComponent("\(name)/greedy.json")
    let json = try Data(contentsOf: url).withUnsafeBytes { try StrictJSON.parse($0) }
    func integers(_ key: String) -> [Int] {
        guard case let .array(items)? = json[key] else { return [] }
        return items.compactMap { if case let .integer(i) = $0 { i } else { nil } }
    }
    return (integers("prompt_ids"), integers("generated_ids"))
}

func collect(_ stream: AsyncThrowingStream<GenerationEvent, Error>) async throws -> (text: String, tokens: [Int], reason: StopReason?, statistics: GenerationStatistics?) {
    var text = "", tokens: [Int] = []
    for try await event in stream {
        switch event {
        case let .text(piece, ids): text += piece; tokens += ids
        case .logprobs: break
        case let .finished(reason, statistics): return (text, tokens, reason, statistics)
        }
    }
    return (text, tokens, nil, nil)
}

@Suite struct GeneratorTests {
    static func generator(_ name: String = "llama-gqa", budget: Int = 1 << 22) throws -> Generator {
        var configuration = GeneratorConfiguration()
        configuration.threads = 2
        configuration.kvMemoryBudget = budget
        configuration.kvElementType = .f32
        configuration.chunkSize = 16  // the 20-token prompt goes in two chunks
        return try Generator(modelPath: fixtureModels.appendingPathComponent(name).path, configuration: configuration)
    }

    @Test(arguments: ["llama-gqa", "mamba"])
    func greedyGenerationEqualsTransformers(name: String) async throws {
        let reference = try greedyReference(name)
        var parameters = GenerationParameters()
        parameters.maxTokens = reference.generated.count
        parameters.ignoreEndOfSequence = true
        let result = try await collect(Self.generator(name).generate(.tokens(reference.prompt), parameters: parameters))
        #expect(result.reason == .maxTokens)
        #expect(result.statistics?.generatedTokens == reference.generated.count && result.statistics?.promptTokens == 20)
        // The timings are consistent: the model's share of the decode lies within the decode.
        let statistics = try #require(result.statistics)
        #expect(statistics.timeToFirstToken > 0 && statistics.prefillTokensPerSecond > 0 && statistics.decodeTokensPerSecond > 0)
        let decodeSeconds = Double(statistics.generatedTokens - 1) / statistics.decodeTokensPerSecond
        #expect(statistics.decodeModelSeconds > 0 && statistics.decodeModelSeconds <= decodeSeconds)
        // Every token is reported once text it completes is emitted; the ids must be the reference's.
        let generator = try Self.generator(name)
        let text = try generator.files.tokenizer.decode(reference.generated, skipSpecialTokens: true)
        #expect(result.text == text)
    }

    @Test func stopStringSpanningTokensIsNotEmitted() async throws {
        let reference = try greedyReference("llama-gqa")
        let generator = try Self.generator()
        let full = try generator.files.tokenizer.decode(reference.generated, skipSpecialTokens: true)
        // A stop string from the middle of the text, long enough to span tokens.
        let start = full.index(full.startIndex, offsetBy: full.count / 2)
        let stop = String(full[start...].prefix(6))
        var parameters = GenerationParameters()
        parameters.maxTokens = 30
        parameters.ignoreEndOfSequence = true
        parameters.stopStrings = [stop]
        let result = try await collect(generator.generate(.tokens(reference.prompt), parameters: parameters))
        #expect(result.reason == .stopSequence)
        #expect(result.text == String(full[..<full.range(of: stop)!.lowerBound]))
        #expect(!result.text.contains(stop))
    }

    @Test func cancellationStopsAndFreesTheSequence() async throws {
        let generator = try Self.generator()
        let total = generator.availableKVBlocks
        var parameters = GenerationParameters()
        parameters.maxTokens = 10_000
        parameters.ignoreEndOfSequence = true
        var events = 0
        for try await _ in generator.generate(.tokens([5, 6, 7]), parameters: parameters) {
            events += 1
            if events == 3 { break }  // the consumer leaves: the loop must stop
        }
        // The generator is free again (the lock was released) and the blocks are back.
        let next = try await generator.respond(.tokens([5, 6, 7]), parameters: { var p = GenerationParameters(); p.maxTokens = 2; p.ignoreEndOfSequence = true; return p }())
        #expect(next.reason == .maxTokens)
        #expect(generator.availableKVBlocks == total)
    }

    @Test func contextFullEndsWithItsReason() async throws {
        let generator = try Self.generator(budget: 3 * 2 * 2 * 2 * 16 * 8 * 4)  // 3 blocks of 16 tokens
        var parameters = GenerationParameters()
        parameters.maxTokens = 1000
        parameters.ignoreEndOfSequence = true
        let result = try await collect(generator.generate(.tokens(Array(repeating: 5, count: 20)), parameters: parameters))
        #expect(result.reason == .contextFull)
        // 28 tokens fit after the prompt; the last one stored still yields a 29th, emitted before the next step fails.
        #expect(result.statistics?.generatedTokens == 48 - 20 + 1)
    }

    @Test func seededSamplingIsReproducibleAndPrefixReuseIsReported() async throws {
        let generator = try Self.generator()
        var parameters = GenerationParameters()
        parameters.temperature = 0.9
        parameters.topP = 0.95
        parameters.seed = 1234
        parameters.maxTokens = 12
        parameters.ignoreEndOfSequence = true
        let prompt = Array(10..<50)
        let first = try await collect(generator.generate(.tokens(prompt), parameters: parameters))
        let second = try await collect(generator.generate(.tokens(prompt), parameters: parameters))
        #expect(first.text == second.text && !first.text.isEmpty)
        #expect(second.statistics?.reusedPromptTokens == 32)  // two full blocks of the prompt were cached
        parameters.seed = 4321
        let other = try await collect(generator.generate(.tokens(prompt), parameters: parameters))
        #expect(other.text != first.text)
    }

    /// A call without parameters uses the configuration's defaults.
    @Test func defaultParametersComeFromTheConfiguration() async throws {
        var parameters = GenerationParameters()
        parameters.temperature = 0.9
        parameters.seed = 77
        parameters.maxTokens = 7
        parameters.ignoreEndOfSequence = true
        var configuration = GeneratorConfiguration()
        configuration.threads = 2
        configuration.kvElementType = .f32
        configuration.kvMemoryBudget = 1 << 22
        configuration.defaultParameters = parameters
        let generator = try Generator(modelPath: fixtureModels.appendingPathComponent("llama-gqa").path, configuration: configuration)
        let implicit = try await collect(generator.generate(.tokens([3, 4, 5])))
        let explicit = try await collect(Self.generator().generate(.tokens([3, 4, 5]), parameters: parameters))
        #expect(implicit.tokens.count == 7 && implicit.tokens == explicit.tokens)
        let (text, reason) = try await generator.respond(.tokens([3, 4, 5]))
        #expect(reason == .maxTokens && text == implicit.text)
    }
}

@Suite struct GeneratorCancellationTests {
    /// A consumer that leaves during a long prefill stops it within a chunk.
    @Test func cancellationDuringPrefillStopsWithinAChunk() async throws {
        let generator = try GeneratorTests.generator()  // chunks of 16 tokens
        let total = generator.availableKVBlocks
        let prompt = (0..<1_600).map { 3 + $0 % 500 }  // 100 chunks
        var parameters = GenerationParameters()
        parameters.maxTokens = 5
        let task = Task {
            for try await _ in generator.generate(.tokens(prompt), parameters: parameters) {}
        }
        try await Task.sleep(nanoseconds: 30_000_000)
        task.cancel()
        _ = try? await task.value
        // The scheduler drops the request at its next step; wait (boundedly) for that.
        for _ in 0..<300 where generator.availableKVBlocks != total { try await Task.sleep(nanoseconds: 10_000_000) }
        let passes = generator.forwardPasses
        print("cancelled prefill after \(passes) of 100 chunks")
        #expect(passes < 100, "prefill ran \(passes) of 100 chunks after cancellation")
        #expect(generator.availableKVBlocks == total)
    }
}

@Suite struct LogprobTests {
    /// Each step's log-probabilities are the log-softmax of the logits the bare model gives.
    @Test func logprobsMatchTheModelDistribution() async throws {
        let reference = try greedyReference("llama-gqa")
        let generator = try GeneratorTests.generator()
        var parameters = GenerationParameters()
        parameters.maxTokens = 4
        parameters.ignoreEndOfSequence = true
        parameters.logprobs = 3
        var steps: [TokenLogprobs] = []
        for try await event in generator.generate(.tokens(reference.prompt), parameters: parameters) {
            if case let .logprobs(entry) = event { steps.append(entry) }
        }
        #expect(steps.count == 4)
        // The bare model, greedy, step by step.
        let files = try ModelFiles.load(fixtureModels.appendingPathComponent("llama-gqa").path)
        let model = try TransformerModel(files: files, context: ComputeContext(threads: 1), maximumTokens: 32)
        let cache = try model.makeCache(memoryBudget: 1 << 22, elementType: .f32)
        let sequence = cache.makeSequence()
        var logits = try model.forward(reference.prompt, sequence: sequence, cache: cache)
        for step in steps {
            let m = Double(logits.max()!), logSum = m + log(logits.reduce(0.0) { $0 + exp(Double($1) - m) })
            let order = logits.indices.sorted { logits[$0] > logits[$1] }
            #expect(step.chosen.token == order[0])  // greedy: the most likely
            #expect(abs(step.chosen.logprob - (Double(logits[order[0]]) - logSum)) < 1e-5)
            #expect(step.top.map(\.token) == Array(order.prefix(3)))
            #expect(zip(step.top, order.prefix(3)).allSatisfy { abs($0.logprob - (Double(logits[$1]) - logSum)) < 1e-5 })
            logits = try model.forward([step.chosen.token], sequence: sequence, cache: cache)
        }
    }
}
