import Foundation
import Testing
@testable import Decoding

/// Many concurrent requests with random parameters, random cancellations and a KV budget
/// that forces preemption, on one generator (issue 9). Sized to run in CI in seconds.
@Suite struct StressTests {
    /// The outcome a consumer saw: the tokens it received and the stop reason, or nil when it
    /// cancelled before the stream finished.
    struct Outcome: Equatable {
        var tokens: [Int]
        var reason: StopReason?
    }

    /// How a request's consumer behaves.
    enum Consumer {
        case readToTheEnd
        /// Cancels its task after this many text events (mid-decode).
        case cancelAfterTokens(Int)
        /// Cancels its task this many microseconds after starting (mid-prefill or queued).
        case cancelAfter(microseconds: UInt64)
    }

    static func randomParameters(_ random: inout SeededGenerator, seed: UInt64) -> GenerationParameters {
        var parameters = GenerationParameters()
        parameters.seed = seed
        parameters.maxTokens = 1 + Int(random.next() % 40)
        parameters.ignoreEndOfSequence = random.next() % 4 != 0
        func chance(_ percent: UInt64) -> Bool { random.next() % 100 < percent }
        if chance(70) { parameters.temperature = 0.3 + Float(random.next() % 100) / 100 }
        if chance(40) { parameters.topK = 1 + Int(random.next() % 50) }
        if chance(30) { parameters.topP = 0.5 + Double(random.next() % 50) / 100 }
        if chance(30) { parameters.minP = Double(random.next() % 20) / 100 }
        if chance(30) { parameters.repetitionPenalty = 1 + Float(random.next() % 50) / 100 }
        if chance(20) { parameters.frequencyPenalty = Float(random.next() % 10) / 10 }
        if chance(20) { parameters.presencePenalty = Float(random.next() % 10) / 10 }
        if chance(20) { parameters.penaltyWindow = Int(random.next() % 100) }
        if chance(20) { parameters.logitBias = [Int(3 + random.next() % 400): Float(random.next() % 10) - 5] }
        if chance(20) { parameters.logprobs = Int(random.next() % 4) }
        return parameters
    }

    static func run(_ generator: Generator, _ prompt: [Int], _ parameters: GenerationParameters,
                    consumer: Consumer) async throws -> Outcome {
        let task = Task { () throws -> Outcome in
            var outcome = Outcome(tokens: [], reason: nil)
            var pieces = 0
            for try await event in generator.generate(.tokens(prompt), parameters: parameters) {
                switch event {
                case let .text(_, ids):
                    outcome.tokens += ids
                    pieces += 1
                    if case let .cancelAfterTokens(limit) = consumer, pieces >= limit { withUnsafeCurrentTask { $0?.cancel() } }
                case .logprobs: break
                case let .finished(reason, _): outcome.reason = reason
                }
            }
            return outcome
        }
        if case let .cancelAfter(microseconds) = consumer {
            try await Task.sleep(nanoseconds: microseconds * 1000)
            task.cancel()
        }
        return try await task.value
    }

    /// 32 requests at once; afterwards every request has finished or was cancelled, every
    /// finished one equals its solo run with the same seed, and the block pool is full again.
    @Test(arguments: [("llama-gqa", 2026), ("llama-gqa", 7), ("mixtral-moe", 11), ("mamba", 3)] as [(String, UInt64)])
    func thirtyTwoRandomRequestsWithCancellationsAndPreemption(model: String, seed: UInt64) async throws {
        let probe = try SchedulerTests.generator(model)
        let blockBytes = (1 << 22) / (probe.availableKVBlocks ?? 1)  // Mamba has no KV blocks
        let count = 32
        var random = SeededGenerator(seed: seed)
        let prompts = (0..<count).map { i in (0..<(1 + Int(random.next() % 100))).map { _ in 3 + Int(random.next() % 400) } }
        var parameters = (0..<count).map { Self.randomParameters(&random, seed: UInt64(1000 + $0)) }
        // Stop strings that do occur: a few characters from the middle of an unconstrained run.
        for index in 0..<count where random.next() % 3 == 0 {
            let text = try await collect(probe.generate(.tokens(prompts[index]), parameters: parameters[index])).text
            guard text.count >= 4 else { continue }
            let start = text.index(text.startIndex, offsetBy: text.count / 2)
            parameters[index].stopStrings = [String(text[start...].prefix(2 + Int(random.next() % 3)))]
        }
        let consumers: [Consumer] = (0..<count).map { _ in
            switch random.next() % 6 {
            case 0: .cancelAfterTokens(1 + Int(random.next() % 10))
            case 1: .cancelAfter(microseconds: random.next() % 20_000)
            default: .readToTheEnd
            }
        }
        var expected: [Outcome] = []
        for index in 0..<count {
            let solo = try await collect(probe.generate(.tokens(prompts[index]), parameters: parameters[index]))
            expected.append(Outcome(tokens: solo.tokens, reason: solo.reason))
        }

        // 14 blocks of 16 tokens for requests of up to 140 tokens (9 blocks) each.
        let generator = try SchedulerTests.generator(model, budget: blockBytes * 14)
        let total = generator.availableKVBlocks
        let start = Date()
        let requests = parameters
        let outcomes = try await withThrowingTaskGroup(of: (Int, Outcome).self) { group in
            for index in 0..<count {
                group.addTask { (index, try await Self.run(generator, prompts[index], requests[index], consumer: consumers[index])) }
            }
            var outcomes = [Outcome](repeating: Outcome(tokens: [], reason: nil), count: count)
            for try await (index, outcome) in group { outcomes[index] = outcome }
            return outcomes
        }
        var finished = 0, cancelled = 0, cancelledBeforeDecoding = 0, stopped = 0
        for index in 0..<count {
            let outcome = outcomes[index]
            if outcome.reason == nil || outcome.reason == .cancelled {
                // A cancelled request received a prefix of what it would have generated.
                cancelled += 1
                if outcome.tokens.isEmpty { cancelledBeforeDecoding += 1 }
                #expect(expected[index].tokens.starts(with: outcome.tokens), "request \(index)")
                if case .readToTheEnd = consumers[index] { Issue.record("request \(index) was never cancelled but did not finish") }
            } else {
                finished += 1
                if outcome.reason == .stopSequence { stopped += 1 }
                #expect(outcome == expected[index], "request \(index)")
            }
        }
        print("stress \(model) seed \(seed): \(count) requests in \(String(format: "%.2f", Date().timeIntervalSince(start))) s: \(finished) finished "
              + "(\(stopped) on a stop string), \(cancelled) cancelled (\(cancelledBeforeDecoding) before a token), \(generator.forwardPasses) steps, \(generator.scheduler.preemptions) preemptions")
        #expect(cancelled > 0 && stopped > 0)
        guard total != nil else { return }
        #expect(generator.scheduler.preemptions > 0)
        for _ in 0..<300 where generator.availableKVBlocks != total { try await Task.sleep(nanoseconds: 10_000_000) }
        #expect(generator.availableKVBlocks == total)
    }
}
