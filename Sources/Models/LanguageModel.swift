import Foundation

/// A sequence of a `LanguageModel`: the number of its KV-cache sequence (transformers) or of
/// its recurrent state (Mamba). Numbers come from `makeSequence`; one made up names no
/// sequence, and operations on it throw.
public struct ModelSequence: Hashable, Sendable, CustomStringConvertible {
    /// The model's number for the sequence.
    public let rawValue: Int
    /// The sequence numbered `rawValue`.
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// A one-line description for logs and error messages.
    public var description: String { "sequence \(rawValue)" }
}

/// New tokens for one sequence in a `LanguageModel.step`: a prompt chunk, one decoded token,
/// or a token and the drafts to verify after it.
public struct ModelInput: Sendable {
    /// The sequence the tokens continue.
    public var sequence: ModelSequence
    /// Token ids, in order (at least one).
    public var tokens: [Int]
    /// Logits for every new token (true) or only for the last (false).
    public var allLogits: Bool
    /// Keep what `rollback` needs to return to any length inside these tokens. Mamba then
    /// records its state after each token; a transformer truncates its KV and needs nothing.
    public var rollbackPoints: Bool

    /// Input of `tokens` for `sequence`; by default only the last token's logits.
    public init(sequence: ModelSequence, tokens: [Int], allLogits: Bool = false, rollbackPoints: Bool = false) {
        self.sequence = sequence
        self.tokens = tokens
        self.allLogits = allLogits
        self.rollbackPoints = rollbackPoints
    }
}

/// A model together with the memory of its sequences, one interface over the families: a
/// transformer keeps keys and values in a paged KV cache, Mamba one recurrent state per
/// sequence. The Generator's scheduler and speculative decoder drive models only through
/// it, and so can a program that batches sequences itself. Not thread-safe: use a model
/// from one thread at a time.
public protocol LanguageModel: AnyObject {
    /// Logits per row.
    var vocabularySize: Int { get }
    /// Tokens one step may hold, over all its inputs.
    var maximumTokens: Int { get }
    /// KV blocks free or evictable, the pool's size and tokens per block (nil when the model
    /// has no shared pool, as Mamba).
    var kvBlocks: (available: Int, total: Int, size: Int)? { get }
    /// Whether `rollback` accepts any shorter length (a transformer truncates its KV) rather
    /// than only saved points (Mamba's snapshot and rollback points).
    var rollsBackToAnyLength: Bool { get }

    /// A new, empty sequence. A transformer starts it with the longest prefix of `tokens`
    /// its prefix cache holds and returns how many tokens that reused (0 for Mamba).
    func makeSequence(reusingPrefixOf tokens: [Int]) -> (sequence: ModelSequence, reused: Int)
    /// Frees the sequence's memory (a transformer's full blocks stay in its prefix cache).
    func release(_ sequence: ModelSequence)
    /// Tokens the sequence holds.
    func length(of sequence: ModelSequence) throws -> Int
    /// Makes room for `count` more tokens; throws `KVCacheError.outOfBlocks`, changing
    /// nothing, when the pool cannot (a scheduler's signal to preempt).
    func reserve(_ sequence: ModelSequence, tokens count: Int) throws
    /// One batched step: every input's tokens are appended to its sequence, with each weight
    /// matrix read once for all rows. A sequence's logits do not depend on the others in the
    /// step. The result is a view valid until the next step; nothing is allocated per step.
    func step(_ inputs: [ModelInput]) throws -> StepLogits
    /// Remembers the sequence's current state, so `rollback` can return to its length.
    func snapshot(_ sequence: ModelSequence)
    /// Returns the sequence to its first `length` tokens: any length for a transformer; for
    /// Mamba the snapshot's length or one inside the last step's `rollbackPoints` input.
    func rollback(_ sequence: ModelSequence, to length: Int) throws
}

extension LanguageModel {
    /// Logits for every position of `tokens` as a fresh sequence (evaluation and scoring),
    /// processed in steps of `maximumTokens`: [tokens.count][vocabulary].
    public func logits(for tokens: [Int]) throws -> [Float] {
        let (sequence, _) = makeSequence(reusingPrefixOf: [])
        defer { release(sequence) }
        var result: [Float] = []
        result.reserveCapacity(tokens.count * vocabularySize)
        var start = 0
        while start < tokens.count {
            let end = min(tokens.count, start + maximumTokens)
            try reserve(sequence, tokens: end - start)
            result += try step([ModelInput(sequence: sequence, tokens: Array(tokens[start..<end]), allLogits: true)])[0]
            start = end
        }
        return result
    }

    /// exp(mean negative log-likelihood) of each token of `tokens` given the ones before it.
    public func perplexity(of tokens: [Int]) throws -> Double {
        guard tokens.count >= 2 else { throw ModelError.tooManyTokens(count: tokens.count, maximum: 2) }
        let logits = try self.logits(for: tokens)
        var perplexity = Perplexity()
        for position in 0..<(tokens.count - 1) {
            try perplexity.add(logits[position * vocabularySize..<(position + 1) * vocabularySize], next: tokens[position + 1])
        }
        return perplexity.value
    }
}

/// Perplexity accumulated one position at a time: exp of the mean negative log-likelihood
/// of each next token under its position's logits (log-softmax in Float64).
public struct Perplexity: Sendable {
    /// Sum of −log p(next token) so far.
    public private(set) var negativeLogLikelihood = 0.0
    /// Positions added.
    public private(set) var count = 0

    /// Nothing scored yet.
    public init() {}

    /// Scores `next` under one position's `logits` (a row of the vocabulary's size).
    public mutating func add<C: Collection>(_ logits: C, next: Int) throws where C.Element == Float {
        guard next >= 0, next < logits.count else { throw ModelError.tokenOutOfRange(token: next, vocabularySize: logits.count) }
        let maximum = Double(logits.max() ?? 0)
        let logSum = maximum + Foundation.log(logits.reduce(0.0) { $0 + Foundation.exp(Double($1) - maximum) })
        negativeLogLikelihood += logSum - Double(logits[logits.index(logits.startIndex, offsetBy: next)])
        count += 1
    }

    /// exp(mean negative log-likelihood); 1 before anything was added.
    public var value: Double { count == 0 ? 1 : Foundation.exp(negativeLogLikelihood / Double(count)) }
}

extension ModelFiles {
    /// The model these files describe, with the memory for its sequences: a transformer with
    /// a paged KV cache of `kvMemoryBudget` bytes of `kvElementType`, or Mamba. Activation
    /// buffers hold `maximumTokens` tokens per step.
    public func languageModel(context: ComputeContext, maximumTokens: Int = 256, kvMemoryBudget: Int = 256 << 20,
                              kvElementType: ElementType = .f16) throws -> any LanguageModel {
        switch configuration {
        case .transformer:
            let model = try TransformerModel(files: self, context: context, maximumTokens: maximumTokens)
            return TransformerWithCache(model, cache: try model.makeCache(memoryBudget: kvMemoryBudget, elementType: kvElementType))
        case .mamba:
            return MambaWithStates(try MambaModel(files: self, context: context, maximumTokens: maximumTokens))
        }
    }
}

/// A `TransformerModel` and the paged KV cache of its sequences, as a `LanguageModel`.
public final class TransformerWithCache: LanguageModel {
    /// The network.
    public let model: TransformerModel
    /// Keys and values of every sequence.
    public let cache: PagedKVCache
    // Per-step array, kept so that its storage is reused.
    private var chunks: [SequenceChunk] = []

    /// `model` with `cache` (shaped for it, e.g. by `model.makeCache`).
    public init(_ model: TransformerModel, cache: PagedKVCache) {
        self.model = model
        self.cache = cache
    }

    public var vocabularySize: Int { model.configuration.vocabularySize }
    public var maximumTokens: Int { model.maximumTokens }
    public var kvBlocks: (available: Int, total: Int, size: Int)? {
        (cache.availableBlockCount, cache.blockCount, cache.configuration.blockSize)
    }
    public var rollsBackToAnyLength: Bool { true }

    public func makeSequence(reusingPrefixOf tokens: [Int]) -> (sequence: ModelSequence, reused: Int) {
        let (sequence, reused) = cache.makeSequence(reusingPrefixOf: tokens)
        return (ModelSequence(rawValue: sequence.rawValue), reused)
    }

    public func release(_ sequence: ModelSequence) { try? cache.release(SequenceID(rawValue: sequence.rawValue)) }

    public func length(of sequence: ModelSequence) throws -> Int { try cache.length(of: SequenceID(rawValue: sequence.rawValue)) }

    public func reserve(_ sequence: ModelSequence, tokens count: Int) throws {
        try cache.reserve(SequenceID(rawValue: sequence.rawValue), tokens: count)
    }

    public func step(_ inputs: [ModelInput]) throws -> StepLogits {
        chunks.removeAll(keepingCapacity: true)
        for input in inputs {
            chunks.append(SequenceChunk(sequence: SequenceID(rawValue: input.sequence.rawValue), tokens: input.tokens, allLogits: input.allLogits))
        }
        return try model.step(chunks, cache: cache)
    }

    /// Nothing to save: `rollback` truncates the KV to any length.
    public func snapshot(_ sequence: ModelSequence) {}

    public func rollback(_ sequence: ModelSequence, to length: Int) throws {
        try cache.truncate(SequenceID(rawValue: sequence.rawValue), to: length)
    }
}

/// A `MambaModel` and the recurrent state of each of its sequences, as a `LanguageModel`.
public final class MambaWithStates: LanguageModel {
    /// The network.
    public let model: MambaModel
    private var states: [ModelSequence: MambaState] = [:]
    /// The state after each token of a sequence's last `rollbackPoints` input.
    private var traces: [ModelSequence: [MambaState]] = [:]
    /// A state saved by `snapshot`.
    private var snapshots: [ModelSequence: MambaState] = [:]
    private var nextSequence = 0
    // Per-step arrays, kept so that their storage is reused.
    private var chunks: [MambaChunk] = []
    private var stepStates: [MambaState] = []
    private var stepTraces: [[MambaState]] = []

    /// `model` with no sequences yet.
    public init(_ model: MambaModel) { self.model = model }

    public var vocabularySize: Int { model.configuration.vocabularySize }
    public var maximumTokens: Int { model.maximumTokens }
    public var kvBlocks: (available: Int, total: Int, size: Int)? { nil }
    public var rollsBackToAnyLength: Bool { false }

    public func makeSequence(reusingPrefixOf tokens: [Int]) -> (sequence: ModelSequence, reused: Int) {
        defer { nextSequence += 1 }
        let sequence = ModelSequence(rawValue: nextSequence)
        states[sequence] = model.makeState()
        return (sequence, 0)
    }

    public func release(_ sequence: ModelSequence) {
        states[sequence] = nil
        traces[sequence] = nil
        snapshots[sequence] = nil
    }

    public func length(of sequence: ModelSequence) throws -> Int { try state(sequence).length }

    /// Nothing to reserve: a state has a fixed size.
    public func reserve(_ sequence: ModelSequence, tokens count: Int) throws { _ = try state(sequence) }

    public func step(_ inputs: [ModelInput]) throws -> StepLogits {
        // The states leave the dictionary while the step runs, so the scan updates them in
        // place instead of copying every layer's state (copy-on-write).
        stepStates.removeAll(keepingCapacity: true)
        chunks.removeAll(keepingCapacity: true)
        defer {
            for (index, state) in stepStates.enumerated() { states[inputs[index].sequence] = state }
            stepStates.removeAll(keepingCapacity: true)
        }
        for input in inputs {
            guard let state = states.removeValue(forKey: input.sequence) else {
                throw ModelError.cacheMismatch("no Mamba state for \(input.sequence)")
            }
            stepStates.append(state)
            chunks.append(MambaChunk(tokens: input.tokens, allLogits: input.allLogits, traceStates: input.rollbackPoints))
        }
        let logits = try model.step(chunks, states: &stepStates, traces: &stepTraces)
        for (index, input) in inputs.enumerated() {
            traces[input.sequence] = stepTraces[index]
            stepTraces[index] = []
        }
        return logits
    }

    public func snapshot(_ sequence: ModelSequence) { snapshots[sequence] = states[sequence] }

    public func rollback(_ sequence: ModelSequence, to length: Int) throws {
        let current = try state(sequence)
        if current.length == length { return }
        if let saved = snapshots[sequence], saved.length == length {
            states[sequence] = saved
        } else if let traced = traces[sequence]?.first(where: { $0.length == length }) {
            states[sequence] = traced
        } else {
            throw ModelError.cacheMismatch("no saved Mamba state of length \(length) for \(sequence)")
        }
    }

    private func state(_ sequence: ModelSequence) throws -> MambaState {
        guard let state = states[sequence] else { throw ModelError.cacheMismatch("no Mamba state for \(sequence)") }
        return state
    }
}
