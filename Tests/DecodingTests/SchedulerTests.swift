import Foundation
import Testing
@testable import Decoding

/// Continuous batching and speculative decoding, on the random-weight fixture models (all
/// share one byte-level vocabulary, so any of them can draft for another).
@Suite struct SchedulerTests {
    static func generator(_ name: String, budget: Int = 1 << 22, draft: DraftSource? = nil,
                          quantization: ElementType? = nil) throws -> Generator {
        var configuration = GeneratorConfiguration()
        configuration.quantization = quantization
        configuration.threads = 2
        configuration.kvMemoryBudget = budget
        configuration.kvElementType = .f32
        configuration.chunkSize = 16
        configuration.draft = draft
        return try Generator(modelPath: fixtureModels.appendingPathComponent(name).path, configuration: configuration)
    }

    static func parameters(seed: UInt64, sampled: Bool, maxTokens: Int = 12) -> GenerationParameters {
        var parameters = GenerationParameters()
        parameters.maxTokens = maxTokens
        parameters.ignoreEndOfSequence = true
        parameters.seed = seed
        if sampled {
            parameters.temperature = 0.8
            parameters.topK = 40
        }
        return parameters
    }

    /// Eight prompts of 5 to 54 tokens (one to four prefill chunks).
    static let prompts = (0..<8).map { i in (0..<(5 + i * 7)).map { 3 + ($0 * 31 + i * 17) % 400 } }

    static func concurrently(_ generator: Generator, _ prompts: [[Int]], _ parameters: [GenerationParameters]) async throws
        -> [(tokens: [Int], reason: StopReason?, generated: Int)] {
        try await withThrowingTaskGroup(of: (Int, [Int], StopReason?, Int).self) { group in
            for index in prompts.indices {
                group.addTask {
                    let result = try await collect(generator.generate(.tokens(prompts[index]), parameters: parameters[index]))
                    return (index, result.tokens, result.reason, result.statistics?.generatedTokens ?? 0)
                }
            }
            var results = [([Int], StopReason?, Int)](repeating: ([], nil, 0), count: prompts.count)
            for try await (index, tokens, reason, generated) in group { results[index] = (tokens, reason, generated) }
            return results.map { (tokens: $0.0, reason: $0.1, generated: $0.2) }
        }
    }

    /// Eight concurrent streams, greedy and sampled, give exactly the tokens of eight solo
    /// runs with the same seeds, in fewer forward passes (they shared steps).
    /// Quantized at load too: several rows then go through the fused multi-row Q4_0/Q8_0
    /// kernels, which must give each row exactly its single-row result.
    @Test(arguments: [("llama-gqa", nil), ("mixtral-moe", nil), ("mamba", nil), ("llama-gqa", .q4_0), ("mixtral-moe", .q8_0),
                      ("mamba", .q4_0)] as [(String, ElementType?)])
    func concurrentStreamsEqualSoloRuns(name: String, quantization: ElementType?) async throws {
        let parameters = (0..<8).map { Self.parameters(seed: UInt64(100 + $0), sampled: $0 % 2 == 1) }
        let solo = try Self.generator(name, quantization: quantization)
        var expected: [[Int]] = []
        for (prompt, p) in zip(Self.prompts, parameters) {
            expected.append(try await collect(solo.generate(.tokens(prompt), parameters: p)).tokens)
        }
        let batched = try Self.generator(name, quantization: quantization)
        let results = try await Self.concurrently(batched, Self.prompts, parameters)
        #expect(results.map(\.tokens) == expected)
        #expect(results.allSatisfy { $0.reason == .maxTokens })
        print("\(name): 8 streams in \(batched.forwardPasses) steps, solo \(solo.forwardPasses)")
        #expect(batched.forwardPasses < solo.forwardPasses)
    }

    /// With KV room for about a third of the requests, the scheduler queues and preempts,
    /// but every request finishes with all its tokens and the pool ends full again.
    @Test func preemptionUnderATinyBudgetLosesNoRequest() async throws {
        let probe = try Self.generator("llama-gqa")
        let blockBytes = (1 << 22) / probe.availableKVBlocks!
        let generator = try Self.generator("llama-gqa", budget: blockBytes * 12)
        let total = generator.availableKVBlocks
        let parameters = (0..<8).map { Self.parameters(seed: UInt64($0), sampled: $0 % 2 == 0, maxTokens: 40) }
        let results = try await Self.concurrently(generator, Self.prompts, parameters)
        print("preemption results: \(results.map { "\($0.reason.map { "\($0)" } ?? "nil") \($0.generated)" })")
        #expect(results.allSatisfy { $0.reason == .maxTokens && $0.generated == 40 })
        print("preemptions: \(generator.scheduler.preemptions)")
        #expect(generator.scheduler.preemptions > 0)
        for _ in 0..<300 where generator.availableKVBlocks != total { try await Task.sleep(nanoseconds: 10_000_000) }
        #expect(generator.availableKVBlocks == total)
    }

    /// A request that reuses cached prompt blocks generates what a cold run generates.
    @Test(arguments: ["llama-gqa", "mixtral-moe"])
    func prefixReuseEqualsAColdRun(name: String) async throws {
        let history = Self.prompts[7]  // 54 tokens: three full blocks can be reused
        let p = Self.parameters(seed: 7, sampled: false, maxTokens: 16)
        let cold = try await collect(Self.generator(name).generate(.tokens(history), parameters: p))
        let warm = try Self.generator(name)
        _ = try await collect(warm.generate(.tokens(Array(history.prefix(50))), parameters: p))
        let reused = try await collect(warm.generate(.tokens(history), parameters: p))
        #expect(reused.statistics?.reusedPromptTokens == 48)
        #expect(reused.tokens == cold.tokens)
    }

    /// Greedy speculative decoding gives plain greedy decoding's tokens exactly, for every
    /// draft source and for dense, mixture-of-experts and Mamba targets.
    @Test(arguments: [
        ("llama-gqa", DraftSource.model(path: fixtureModels.appendingPathComponent("llama3-tied").path)),
        // A model drafting for itself: every draft is accepted, so the draft's cache keeps them.
        ("llama-gqa", .model(path: fixtureModels.appendingPathComponent("llama-gqa").path)),
        ("mamba", .model(path: fixtureModels.appendingPathComponent("mamba").path)),
        ("llama-gqa", .quantizedSelf(.q8_0)), ("llama-gqa", .ngram(maximumN: 3)),
        ("mixtral-moe", .quantizedSelf(.q8_0)), ("mixtral-moe", .ngram(maximumN: 3)),
        ("mamba", .model(path: fixtureModels.appendingPathComponent("llama-gqa").path)),
        ("mamba", .quantizedSelf(.q8_0)), ("mamba", .ngram(maximumN: 3)),
    ])
    func greedySpeculationEqualsGreedy(name: String, draft: DraftSource) async throws {
        let p = Self.parameters(seed: 0, sampled: false, maxTokens: 40)
        let prompt = (0..<30).map { 3 + ($0 * 7) % 24 }  // repetitive, so n-grams find matches
        let plain = try await collect(Self.generator(name).generate(.tokens(prompt), parameters: p))
        let speculative = try await collect(Self.generator(name, draft: draft).generate(.tokens(prompt), parameters: p))
        #expect(speculative.tokens == plain.tokens)
        let s = try #require(speculative.statistics)
        print("\(name) \(draft): \(s.acceptedDraftTokens)/\(s.draftTokens) drafts accepted")
        #expect(s.draftTokens > 0)
        if case let .model(path) = draft, path.hasSuffix(name) { #expect(s.acceptedDraftTokens == s.draftTokens) }
    }
}

@Suite struct SpeculativeSamplingTests {
    /// Pearson's chi-square statistic of `counts` against `probabilities` × total.
    static func chiSquare(_ counts: [Int], _ probabilities: [Double]) -> Double {
        let total = Double(counts.reduce(0, +))
        return zip(counts, probabilities).reduce(0) { $0 + pow(Double($1.0) - total * $1.1, 2) / (total * $1.1) }
    }

    /// Draft from q, keep or replace by the rule: the output follows p (chi-square, 4
    /// degrees of freedom, below the 0.1% critical value 18.47), for a q far from p and for
    /// a deterministic (n-gram style) draft.
    @Test func acceptedOrResampledTokensFollowTheTargetDistribution() {
        let p = [0.1, 0.4, 0.05, 0.3, 0.15], q = [0.3, 0.1, 0.3, 0.1, 0.2]
        let target = p.enumerated().map { (token: $0.offset, probability: $0.element) }
        let draft = q.enumerated().map { (token: $0.offset, probability: $0.element) }
        var random = SeededGenerator(seed: 42)
        func uniform() -> Double { Double(random.next() >> 11) * 0x1p-53 }
        for deterministic in [false, true] {
            var counts = [Int](repeating: 0, count: 5)
            for trial in 0..<20_000 {
                let proposed: Int
                if deterministic { proposed = trial % 5 } else {
                    var u = uniform(), index = 0
                    while index < 4 && u >= q[index] { u -= q[index]; index += 1 }
                    proposed = index
                }
                let output = SpeculativeSampling.verify(draft: proposed, p: target, q: deterministic ? nil : draft, uniform: uniform) ?? proposed
                counts[output] += 1
            }
            let statistic = Self.chiSquare(counts, p)
            print("speculative sampling (deterministic draft: \(deterministic)): chi-square \(statistic), counts \(counts)")
            #expect(statistic < 18.47)
        }
    }

    /// End to end: the distribution of the third generated token (the first one a draft
    /// supplies) is the same with and without speculation (two-sample chi-square over the
    /// tokens seen, 0.1% critical value).
    @Test func speculativeSamplingMatchesPlainSampling() async throws {
        var p = GenerationParameters()
        p.maxTokens = 4  // the first decode step is plain (it times plain decoding): a draft proposes the third token
        p.ignoreEndOfSequence = true
        p.temperature = 1
        p.topK = 4
        let prompt = (0..<12).map { 3 + $0 * 5 }
        let plain = try SchedulerTests.generator("llama-gqa")
        let speculative = try SchedulerTests.generator("llama-gqa", draft: .quantizedSelf(.q4_0))
        var plainCounts: [Int: Int] = [:], speculativeCounts: [Int: Int] = [:]
        var drafted = 0
        for seed in 0..<400 {
            p.seed = UInt64(seed)
            let a = try await collect(plain.generate(.tokens(prompt), parameters: p))
            let b = try await collect(speculative.generate(.tokens(prompt), parameters: p))
            let first = try #require(a.tokens.count >= 3 ? a.tokens[2] : nil), second = try #require(b.tokens.count >= 3 ? b.tokens[2] : nil)
            plainCounts[first, default: 0] += 1
            speculativeCounts[second, default: 0] += 1
            drafted += b.statistics?.draftTokens ?? 0
        }
        // Tokens seen fewer than 10 times in both samples together share one bin, so every
        // bin is large enough for the chi-square approximation.
        var bins: [(Double, Double)] = [], rare = (0.0, 0.0)
        for token in Set(plainCounts.keys).union(speculativeCounts.keys).sorted() {
            let a = Double(plainCounts[token] ?? 0), b = Double(speculativeCounts[token] ?? 0)
            if a + b < 10 { rare = (rare.0 + a, rare.1 + b) } else { bins.append((a, b)) }
        }
        if rare.0 + rare.1 > 0 { bins.append(rare) }
        let statistic = bins.reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) / ($1.0 + $1.1) }  // equal sample sizes
        // The 0.1% critical value by the Wilson–Hilferty approximation (z = 3.09).
        let degrees = Double(bins.count - 1), h = 2 / (9 * degrees)
        let critical = degrees * pow(1 - h + 3.09 * h.squareRoot(), 3)
        print("third token: \(bins.count) bins, chi-square \(statistic), critical \(critical), \(drafted) drafts")
        #expect(drafted > 0)
        #expect(degrees >= 1 && statistic < critical)
    }
}

@Suite struct ScoringTests {
    /// `Generator.logits` (chunks of 16 between generation steps) gives transformers' logits,
    /// for a transformer and for Mamba, and `perplexity` is the exp of their mean NLL.
    @Test(arguments: ["llama-gqa", "mamba"])
    func logitsAndPerplexityMatchTransformers(name: String) async throws {
        let url = fixtureModels.appendingPathComponent("\(name)/logits.json")
        let json = try Data(contentsOf: url).withUnsafeBytes { try StrictJSON.parse($0) }
        guard case let .array(ids)? = json["prompt_ids"], case let .array(rows)? = json["logits"] else { Issue.record("fixture"); return }
        let prompt = ids.compactMap { if case let .integer(i) = $0 { i } else { nil } }
        let expected: [[Double]] = rows.map { row in
            guard case let .array(values) = row else { return [] }
            return values.compactMap { if case let .number(x) = $0 { x } else if case let .integer(i) = $0 { Double(i) } else { nil } }
        }
        let generator = try SchedulerTests.generator(name)
        let logits = try await generator.logits(for: prompt)
        #expect(logits.count == prompt.count)
        var worst = 0.0
        for (row, reference) in zip(logits, expected) {
            for (value, target) in zip(row, reference) { worst = max(worst, abs(Double(value) - target)) }
        }
        #expect(worst < 1e-4, "max |Δ| \(worst)")
        var nll = 0.0
        for position in 0..<(prompt.count - 1) {
            let row = expected[position], m = row.max()!
            nll += m + log(row.reduce(0) { $0 + exp($1 - m) }) - row[prompt[position + 1]]
        }
        let perplexity = try await generator.perplexity(of: prompt)
        #expect(abs(perplexity - exp(nll / Double(prompt.count - 1))) < 1e-3 * perplexity)
        // In windows of 8 tokens (8 + 8 + 4), each scored from scratch: the pooled NLL of the
        // windows' own logits.
        var windowNLL = 0.0, predictions = 0
        for start in stride(from: 0, to: prompt.count, by: 8) {
            let part = Array(prompt[start..<min(prompt.count, start + 8)])
            let rows = try await generator.logits(for: part)
            for position in 0..<(part.count - 1) {
                let row = rows[position].map(Double.init), m = row.max()!
                windowNLL += m + log(row.reduce(0) { $0 + exp($1 - m) }) - row[part[position + 1]]
                predictions += 1
            }
        }
        let windowed = try await generator.perplexity(of: prompt, window: 8)
        #expect(predictions == 17 && abs(windowed - exp(windowNLL / 17)) < 1e-4 * windowed && windowed != perplexity)
        await #expect(throws: GenerationError.self) { _ = try await generator.perplexity(of: prompt, window: 1) }
        await #expect(throws: ModelError.self) { _ = try await generator.logits(for: [0, 100_000]) }
    }
}

@Suite struct ParameterValidationTests {
    /// Out-of-range parameters are refused with a typed error before the request starts
    /// (a negative penalty window used to trap in `suffix`).
    @Test func badParametersThrowTypedErrors() async throws {
        let generator = try SchedulerTests.generator("llama-gqa")
        var cases: [GenerationParameters] = []
        for change in [{ (p: inout GenerationParameters) in p.penaltyWindow = -1 }, { $0.maxTokens = 0 }, { $0.temperature = -1 },
                       { $0.temperature = .nan }, { $0.topK = 0 }, { $0.topP = 1.5 }, { $0.minP = -0.1 },
                       { $0.repetitionPenalty = 0 }, { $0.logprobs = -2 }, { $0.draftTokens = -1 }] {
            var p = GenerationParameters()
            change(&p)
            cases.append(p)
        }
        for p in cases {
            await #expect(throws: GenerationError.self) { _ = try await collect(generator.generate(.tokens([3, 4, 5]), parameters: p)) }
        }
        // The processor itself no longer traps on a negative window.
        var candidates = Candidates(capacity: 4)
        [1, 2, 3, 4].map(Float.init).withUnsafeBufferPointer { candidates.reset($0) }
        RepetitionPenalty(2, window: -1).process(&candidates, history: TokenHistory([1, 2]))
        #expect(candidates.logits[0..<4] == [1, 2, 3, 4])
    }
}
