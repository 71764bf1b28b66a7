import Foundation
import Testing
@testable import Models

/// The family-independent `LanguageModel` interface: the same calls on a transformer with
/// its KV cache and on Mamba with its states, checked against transformers' logits.
@Suite struct LanguageModelTests {
    static func languageModel(_ name: String, maximumTokens: Int = 64) throws -> any LanguageModel {
        try ModelFiles.load(sharedModels.appendingPathComponent(name).path)
            .languageModel(context: ComputeContext(threads: 2), maximumTokens: maximumTokens, kvMemoryBudget: 1 << 22, kvElementType: .f32)
    }

    static func row(_ logits: [Float], _ position: Int, _ vocabulary: Int) -> ArraySlice<Float> {
        logits[position * vocabulary..<(position + 1) * vocabulary]
    }

    /// Full-sequence logits (in steps of 8 tokens) within 1e-4 of transformers, and the
    /// perplexity helper equal to one computed in float64 from transformers' logits.
    @Test(arguments: ["llama-gqa", "mixtral-moe", "mamba"])
    func logitsAndPerplexityMatchTransformers(name: String) throws {
        let reference = try TransformerParityTests.reference(name)
        let model = try Self.languageModel(name, maximumTokens: 8)
        let vocabulary = model.vocabularySize
        let logits = try model.logits(for: reference.prompt)
        #expect(logits.count == reference.prompt.count * vocabulary)
        for (position, row) in reference.logits.enumerated() {
            let difference = TransformerParityTests.maximumDifference(Self.row(logits, position, vocabulary), row)
            #expect(difference <= 1e-4, "\(name) position \(position): \(difference)")
        }
        var nll = 0.0
        for position in 0..<(reference.prompt.count - 1) {
            let row = reference.logits[position].map(Double.init), m = row.max()!
            nll += m + log(row.reduce(0) { $0 + exp($1 - m) }) - row[reference.prompt[position + 1]]
        }
        let expected = exp(nll / Double(reference.prompt.count - 1))
        let perplexity = try model.perplexity(of: reference.prompt)
        #expect(abs(perplexity - expected) <= 1e-4 * expected, "\(perplexity) vs \(expected)")
        if let blocks = model.kvBlocks { #expect(blocks.available == blocks.total) }  // the scoring sequence was released
    }

    /// Three sequences prefilled in one step, then decoded in one step of three rows, give
    /// exactly what each gives alone.
    @Test(arguments: ["llama-gqa", "mamba"])
    func batchedStepsEqualSeparateRuns(name: String) throws {
        let reference = try TransformerParityTests.reference(name)
        let prompts = [Array(reference.prompt[..<5]), Array(reference.prompt[3..<14]), Array(reference.prompt[9...])]
        let model = try Self.languageModel(name)
        var alone: [[Float]] = []
        for prompt in prompts {
            let (sequence, reused) = model.makeSequence(reusingPrefixOf: [])
            #expect(reused == 0)
            try model.reserve(sequence, tokens: prompt.count + 1)
            var logits = Array(try model.step([ModelInput(sequence: sequence, tokens: prompt, allLogits: true)])[0])
            logits += try model.step([ModelInput(sequence: sequence, tokens: [7])])[0]
            alone.append(logits)
            #expect(try model.length(of: sequence) == prompt.count + 1)
            model.release(sequence)
        }
        let sequences = prompts.map { _ in model.makeSequence(reusingPrefixOf: []).sequence }
        for (sequence, prompt) in zip(sequences, prompts) { try model.reserve(sequence, tokens: prompt.count + 1) }
        let prefill = try model.step(zip(sequences, prompts).map { ModelInput(sequence: $0, tokens: $1, allLogits: true) }).arrays()
        let decode = try model.step(sequences.map { ModelInput(sequence: $0, tokens: [7]) }).arrays()
        for i in 0..<3 { #expect(prefill[i] + decode[i] == alone[i], "\(name) sequence \(i)") }
    }

    /// Speculative decoding's contract: a verified step's rejected tokens roll back, and the
    /// sequence continues as if they had never been fed.
    @Test(arguments: ["llama-gqa", "mixtral-moe", "mamba"])
    func rollbackReturnsToAnEarlierLength(name: String) throws {
        let reference = try TransformerParityTests.reference(name)
        let model = try Self.languageModel(name)
        let (sequence, _) = model.makeSequence(reusingPrefixOf: [])
        try model.reserve(sequence, tokens: 12)
        _ = try model.step([ModelInput(sequence: sequence, tokens: Array(reference.prompt[..<8]))])
        model.snapshot(sequence)
        // Four tokens of which the first two are right and two are wrong (the drafts).
        let drafts = [reference.prompt[8], reference.prompt[9], 5, 6]
        _ = try model.step([ModelInput(sequence: sequence, tokens: drafts, allLogits: true, rollbackPoints: true)])
        try model.rollback(sequence, to: 10)
        #expect(try model.length(of: sequence) == 10)
        try model.reserve(sequence, tokens: 1)
        let next = Array(try model.step([ModelInput(sequence: sequence, tokens: [reference.prompt[10]])])[0])
        #expect(TransformerParityTests.maximumDifference(next[...], reference.logits[10]) <= 1e-4)
        // Back to the snapshot, too.
        try model.rollback(sequence, to: 8)
        let again = Array(try model.step([ModelInput(sequence: sequence, tokens: [reference.prompt[8]])])[0])
        #expect(TransformerParityTests.maximumDifference(again[...], reference.logits[8]) <= 1e-4)
        // Mamba keeps only saved points; a transformer can go anywhere shorter.
        if model.rollsBackToAnyLength {
            try model.rollback(sequence, to: 3)
            #expect(try model.length(of: sequence) == 3)
        } else {
            #expect(throws: ModelError.self) { try model.rollback(sequence, to: 3) }
        }
        model.release(sequence)
    }

    @Test(arguments: ["llama-gqa", "mamba"])
    func badInputThrows(name: String) throws {
        let model = try Self.languageModel(name)
        let unknown = ModelSequence(rawValue: 999)
        #expect(throws: (any Error).self) { try model.length(of: unknown) }
        #expect(throws: (any Error).self) { try model.step([ModelInput(sequence: unknown, tokens: [1])]) }
        let (sequence, _) = model.makeSequence(reusingPrefixOf: [])
        try model.reserve(sequence, tokens: 1)
        #expect(throws: ModelError.self) { try model.step([ModelInput(sequence: sequence, tokens: [model.vocabularySize])]) }
        #expect(throws: ModelError.self) { try model.step([ModelInput(sequence: sequence, tokens: Array(repeating: 1, count: 65))]) }
        // The failed steps left the sequence usable and empty.
        #expect(try model.length(of: sequence) == 0)
        _ = try model.step([ModelInput(sequence: sequence, tokens: [1])])
        #expect(try model.length(of: sequence) == 1)
        var perplexity = Perplexity()
        #expect(throws: ModelError.self) { try perplexity.add([0, 1], next: 2) }
        #expect(perplexity.value == 1)
    }
}
