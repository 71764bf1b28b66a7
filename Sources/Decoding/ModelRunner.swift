import Foundation

/// A model and the memory of its sequences behind one interface, so the scheduler and the
/// speculative decoder treat a transformer (KV blocks in a paged cache) and Mamba (one
/// recurrent state per sequence) alike. Used only from the scheduler's thread.
final class ModelRunner {
    enum Model {
        case transformer(TransformerModel, PagedKVCache)
        case mamba(MambaModel)
    }

    /// A sequence in this runner: a KV-cache sequence or a Mamba state's number.
    enum Slot: Hashable {
        case sequence(SequenceID)
        case state(Int)

        var sequence: SequenceID {
            guard case let .sequence(id) = self else { preconditionFailure("a Mamba slot used with a KV cache") }
            return id
        }
        var raw: Int {
            switch self {
            case let .sequence(id): return id.rawValue
            case let .state(n): return n
            }
        }
    }

    /// New tokens for one slot in a step.
    struct Item {
        var slot: Slot
        var tokens: [Int]
        var allLogits: Bool
        /// Mamba: record the state after each token, so `rollback` can return to any of them.
        var traceStates: Bool
    }

    let model: Model
    let vocabularySize: Int
    /// Tokens one step may hold.
    let maximumTokens: Int
    private var mambaStates: [Slot: MambaState] = [:]
    /// Mamba: the state after each token of the slot's last step (for rollback).
    private var mambaTraces: [Slot: [MambaState]] = [:]
    /// Mamba: a state saved by `snapshot`, which `rollback` can return to.
    private var mambaSnapshots: [Slot: MambaState] = [:]
    private var nextMambaSlot = 0
    // Per-step arrays, kept so that their storage is reused.
    private var chunks: [SequenceChunk] = []
    private var mambaChunks: [MambaChunk] = []
    private var states: [MambaState] = []
    private var traces: [[MambaState]] = []

    init(_ model: Model) {
        self.model = model
        switch model {
        case let .transformer(m, _): vocabularySize = m.configuration.vocabularySize; maximumTokens = m.maximumTokens
        case let .mamba(m): vocabularySize = m.configuration.vocabularySize; maximumTokens = m.maximumTokens
        }
    }

    /// A new sequence; a transformer starts it with the longest cached prefix of `tokens`.
    func open(reusingPrefixOf tokens: [Int]) -> (Slot, reused: Int) {
        switch model {
        case let .transformer(_, cache):
            let (sequence, reused) = cache.makeSequence(reusingPrefixOf: tokens)
            return (.sequence(sequence), reused)
        case let .mamba(m):
            defer { nextMambaSlot += 1 }
            let slot = Slot.state(nextMambaSlot)
            mambaStates[slot] = m.makeState()
            return (slot, 0)
        }
    }

    func release(_ slot: Slot) {
        switch model {
        case let .transformer(_, cache): try? cache.release(slot.sequence)
        case .mamba:
            mambaStates[slot] = nil
            mambaTraces[slot] = nil
            mambaSnapshots[slot] = nil
        }
    }

    /// Tokens the sequence holds.
    func length(_ slot: Slot) throws -> Int {
        switch model {
        case let .transformer(_, cache): return try cache.length(of: slot.sequence)
        case .mamba:
            guard let state = mambaStates[slot] else { throw ModelError.cacheMismatch("no Mamba state for slot \(slot.raw)") }
            return state.length
        }
    }

    /// Makes room for `count` more tokens (a transformer's KV blocks); throws
    /// `KVCacheError.outOfBlocks` and changes nothing when the pool cannot.
    func reserve(_ slot: Slot, tokens count: Int) throws {
        if case let .transformer(_, cache) = model { try cache.reserve(slot.sequence, tokens: count) }
    }

    /// KV blocks free or evictable, and the pool's size (nil for Mamba: no shared pool).
    var blocks: (available: Int, total: Int, size: Int)? {
        guard case let .transformer(_, cache) = model else { return nil }
        return (cache.availableBlockCount, cache.blockCount, cache.configuration.blockSize)
    }

    /// One batched step over `items`; the logits stay in the model's buffer until the next step.
    func forward(_ items: [Item]) throws -> StepLogits {
        switch model {
        case let .transformer(m, cache):
            chunks.removeAll(keepingCapacity: true)
            for item in items { chunks.append(SequenceChunk(sequence: item.slot.sequence, tokens: item.tokens, allLogits: item.allLogits)) }
            return try m.step(chunks, cache: cache)
        case let .mamba(m):
            // The states are taken out of the dictionary while the step runs, so the scan
            // updates them in place instead of copying every layer's state (copy-on-write).
            states.removeAll(keepingCapacity: true)
            mambaChunks.removeAll(keepingCapacity: true)
            defer {
                for (index, state) in states.enumerated() { mambaStates[items[index].slot] = state }
                states.removeAll(keepingCapacity: true)
            }
            for item in items {
                guard let state = mambaStates.removeValue(forKey: item.slot) else {
                    throw ModelError.cacheMismatch("no Mamba state for slot \(item.slot.raw)")
                }
                states.append(state)
                mambaChunks.append(MambaChunk(tokens: item.tokens, allLogits: item.allLogits, traceStates: item.traceStates))
            }
            let logits = try m.step(mambaChunks, states: &states, traces: &traces)
            for (index, item) in items.enumerated() {
                mambaTraces[item.slot] = traces[index]
                traces[index] = []
            }
            return logits
        }
    }

    /// The last step's logits of one item, copied (for callers off the scheduler's thread).
    func forwardCopying(_ item: Item) throws -> [Float] { Array(try forward([item])[0]) }

    /// Remembers the sequence's current state (Mamba), so `rollback` can return to it.
    func snapshot(_ slot: Slot) {
        if case .mamba = model { mambaSnapshots[slot] = mambaStates[slot] }
    }

    /// Returns the sequence to its first `length` tokens: a transformer truncates its KV;
    /// Mamba restores the snapshot or the traced state of that length.
    func rollback(_ slot: Slot, to length: Int) throws {
        switch model {
        case let .transformer(_, cache): try cache.truncate(slot.sequence, to: length)
        case .mamba:
            guard let current = mambaStates[slot] else { throw ModelError.cacheMismatch("no Mamba state for slot \(slot.raw)") }
            if current.length == length { return }
            if let saved = mambaSnapshots[slot], saved.length == length {
                mambaStates[slot] = saved
            } else if let traced = mambaTraces[slot]?.first(where: { $0.length == length }) {
                mambaStates[slot] = traced
            } else {
                throw ModelError.cacheMismatch("no saved Mamba state of length \(length)")
            }
        }
    }
}
