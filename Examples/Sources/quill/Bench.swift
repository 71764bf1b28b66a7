import ArgumentParser
import Foundation
import Quill

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prompt processing and decoding tokens/s (optionally several streams at once, or with a draft).")

    @OptionGroup var model: ModelOptions
    @Option(name: .customLong("prompt-tokens"), help: "Prompt length.") var promptTokens = 128
    @Option(name: .customLong("decode-tokens"), help: "Tokens generated per stream.") var decodeTokens = 64
    @Option(help: "Concurrent streams.") var batch = 1
    @Option(help: "Repetitions (the median is reported).") var repetitions = 3
    @Flag(help: "Print JSON only.") var json = false

    func validate() throws {
        guard promptTokens > 0, decodeTokens > 0, batch > 0, repetitions > 0 else {
            throw ValidationError("--prompt-tokens, --decode-tokens, --batch and --repetitions must be positive")
        }
    }

    func run() async throws {
        try await reportingErrors {
            let generator = try model.makeGenerator(maximumBatch: batch)
            var request = GenerationParameters()
            request.maxTokens = decodeTokens
            request.ignoreEndOfSequence = true
            let parameters = request
            let vocabulary = generator.files.tokenizer.vocabularySize
            var prefill: [Double] = [], decode: [Double] = [], aggregate: [Double] = [], accepted = 0, drafted = 0
            for repetition in 0...repetitions {  // the first pass warms up (weights paged in) and is not counted
                var random = SeededGenerator(seed: UInt64(repetition))
                let prompts = (0..<batch).map { _ in (0..<promptTokens).map { _ in Int(random.next() % UInt64(vocabulary - 3)) + 3 } }
                let start = Date()
                let all = try await withThrowingTaskGroup(of: GenerationStatistics.self) { group in
                    for prompt in prompts {
                        group.addTask {
                            for try await case let .finished(_, statistics) in generator.generate(.tokens(prompt), parameters: parameters) {
                                return statistics
                            }
                            return GenerationStatistics()
                        }
                    }
                    var all: [GenerationStatistics] = []
                    for try await statistics in group { all.append(statistics) }
                    return all
                }
                guard repetition > 0 else { continue }
                let elapsed = Date().timeIntervalSince(start)
                prefill.append(all.map(\.prefillTokensPerSecond).reduce(0, +) / Double(all.count))
                decode.append(all.map(\.decodeTokensPerSecond).reduce(0, +) / Double(all.count))
                aggregate.append(Double(all.map(\.generatedTokens).reduce(0, +)) / elapsed)
                accepted += all.map(\.acceptedDraftTokens).reduce(0, +)
                drafted += all.map(\.draftTokens).reduce(0, +)
            }
            func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
            let result: [String: Any] = [
                "model": model.model, "batch": batch, "prompt_tokens": promptTokens, "decode_tokens": decodeTokens,
                "prefill_tokens_per_second": median(prefill), "decode_tokens_per_second_per_stream": median(decode),
                "aggregate_tokens_per_second": median(aggregate),
                "draft_acceptance": drafted > 0 ? Double(accepted) / Double(drafted) : 0,
            ]
            if !json {
                print("| prompt | streams | prefill tok/s | decode tok/s per stream | aggregate tok/s (incl. prefill) | drafts accepted |")
                print("|---|---|---|---|---|---|")
                print(String(format: "| %d | %d | %.1f | %.1f | %.1f | %@ |", promptTokens, batch, median(prefill), median(decode),
                             median(aggregate), drafted > 0 ? String(format: "%.0f%%", 100 * Double(accepted) / Double(drafted)) : "–"))
            }
            print(try jsonText(result))
        }
    }
}
