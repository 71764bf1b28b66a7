import Foundation
import Testing
@testable import Decoding

/// Requests and configurations beyond what the model or the machine allows end with typed
/// errors or the `contextFull` reason, never a trap or a hang (issue 9).
@Suite struct ResourceLimitTests {
    static let model = fixtureModels.appendingPathComponent("llama-gqa").path  // 256 positions

    static func configuration(budget: Int = 1 << 22) -> GeneratorConfiguration {
        var configuration = GeneratorConfiguration()
        configuration.threads = 2
        configuration.kvMemoryBudget = budget
        configuration.kvElementType = .f32
        configuration.chunkSize = 16
        return configuration
    }

    static func parameters(maxTokens: Int) -> GenerationParameters {
        var parameters = GenerationParameters()
        parameters.maxTokens = maxTokens
        parameters.ignoreEndOfSequence = true
        return parameters
    }

    @Test func promptLongerThanTheContextIsRefused() async throws {
        let generator = try Generator(modelPath: Self.model, configuration: Self.configuration())
        #expect(generator.contextLength == 256)
        await #expect(throws: GenerationError.promptTooLong(tokens: 300, contextLength: 256)) {
            _ = try await collect(generator.generate(.tokens(Array(repeating: 7, count: 300)), parameters: Self.parameters(maxTokens: 4)))
        }
        await #expect(throws: GenerationError.promptTooLong(tokens: 257, contextLength: 256)) {
            _ = try await generator.logits(for: Array(repeating: 7, count: 257))
        }
        // A prompt that fills the context exactly still yields the one token its last position predicts.
        let full = try await collect(generator.generate(.tokens(Array(repeating: 7, count: 256)), parameters: Self.parameters(maxTokens: 4)))
        #expect(full.reason == .contextFull && full.tokens.count == 1)
    }

    /// `maxTokens` past the context ends at the context (every fed token has a position
    /// below the limit), with and without speculative decoding.
    @Test(arguments: [nil, DraftSource.ngram(maximumN: 3)])
    func generationEndsAtTheContextLength(draft: DraftSource?) async throws {
        var configuration = Self.configuration()
        configuration.contextLength = 40
        configuration.draft = draft
        let generator = try Generator(modelPath: Self.model, configuration: configuration)
        let result = try await collect(generator.generate(.tokens([3, 4, 5, 3, 4, 5]), parameters: Self.parameters(maxTokens: 10_000)))
        #expect(result.reason == .contextFull)
        #expect(result.tokens.count == 40 - 6 + 1)
        var plain = Self.configuration()
        plain.contextLength = 40
        let reference = try await collect(Generator(modelPath: Self.model, configuration: plain)
            .generate(.tokens([3, 4, 5, 3, 4, 5]), parameters: Self.parameters(maxTokens: 10_000)))
        #expect(result.tokens == reference.tokens)
    }

    @Test(arguments: [0, 100, -5])
    func budgetSmallerThanOneBlockIsRefused(budget: Int) {
        let blockBytes = 2 * 2 * 2 * 8 * 16 * 4  // keys and values × 2 layers × 2 KV heads × 8 dimensions × 16 tokens × F32
        #expect(throws: KVCacheError.budgetTooSmall(budget: budget, blockBytes: blockBytes)) {
            _ = try Generator(modelPath: Self.model, configuration: Self.configuration(budget: budget))
        }
    }

    /// A budget of a few blocks serves what fits and ends a longer request with `contextFull`.
    @Test func requestLargerThanTheWholeBudgetEndsWithContextFull() async throws {
        let generator = try Generator(modelPath: Self.model, configuration: Self.configuration(budget: 2 * 2 * 2 * 2 * 16 * 8 * 4))
        let result = try await collect(generator.generate(.tokens(Array(repeating: 9, count: 100)), parameters: Self.parameters(maxTokens: 4)))
        #expect(result.reason == .contextFull && result.tokens.isEmpty)
        let small = try await collect(generator.generate(.tokens([3, 4, 5]), parameters: Self.parameters(maxTokens: 4)))
        #expect(small.reason == .maxTokens && small.tokens.count == 4)
    }

    @Test func nonPositiveSettingsAreRefused() {
        for change in [{ (c: inout GeneratorConfiguration) in c.threads = 0 }, { $0.chunkSize = 0 }, { $0.maximumBatch = -1 },
                       { $0.contextLength = 0 }] {
            var configuration = Self.configuration()
            change(&configuration)
            #expect(throws: ConfigurationError.self) { _ = try Generator(modelPath: Self.model, configuration: configuration) }
        }
    }

    /// The model folder is deleted after loading starts: a typed error, not a crash.
    @Test func modelFolderThatDisappearsWhileLoading() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("quill-vanishing-\(UUID().uuidString)")
        try FileManager.default.copyItem(atPath: Self.model, toPath: folder.path)
        var configuration = Self.configuration()
        configuration.progress = { progress in
            if progress.stage == "mapping" { try? FileManager.default.removeItem(at: folder) }
        }
        let error = #expect(throws: (any Error).self) { _ = try Generator(modelPath: folder.path, configuration: configuration) }
        #expect(error is ConfigurationError, "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: folder.path))
    }
}
