@_exported import TensorCore
import CQuillKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a KV cache operation failed. The scheduler acts on `outOfBlocks` (preempt a
/// sequence and retry); the others are programming or input errors.
public enum KVCacheError: Error, Equatable, CustomStringConvertible {
    /// The pool has no free or evictable block left; nothing was changed.
    case outOfBlocks(needed: Int, available: Int)
    /// The memory budget cannot hold a single block.
    case budgetTooSmall(budget: Int, blockBytes: Int)
    case invalidConfiguration(String)
    case unknownSequence(Int)
    case positionOutOfRange(sequence: Int, position: Int, length: Int)

    /// A one-line description for logs and error messages.
    public var description: String {
        switch self {
        case let .outOfBlocks(needed, available): return "KV cache full: \(needed) blocks needed, \(available) available"
        case let .budgetTooSmall(budget, blockBytes): return "KV budget of \(budget) bytes is smaller than one block (\(blockBytes) bytes)"
        case let .invalidConfiguration(detail): return "KV cache: \(detail)"
        case let .unknownSequence(id): return "KV cache: no sequence \(id)"
        case let .positionOutOfRange(sequence, position, length): return "KV cache: position \(position) outside sequence \(sequence) of length \(length)"
        }
    }
}

/// The shape of a KV cache.
public struct KVCacheConfiguration: Sendable, Equatable {
    /// Transformer layers whose keys and values the cache holds.
    public var layers: Int
    /// Key/value heads per layer.
    public var keyValueHeads: Int
    /// Elements per head vector.
    public var headDimension: Int
    /// Tokens per block (vLLM's default, 16).
    public var blockSize: Int
    /// F32, F16 (the default: half of F32's memory) or Q8_0 (about half of F16's; needs a
    /// head dimension that is a multiple of 32). Softmax and accumulation stay in F32.
    public var elementType: ElementType
    /// Bytes the pool may use; the pool holds as many whole blocks as fit.
    public var memoryBudget: Int

    /// Describes a cache; blocks default to 16 tokens and storage to F16.
    public init(layers: Int, keyValueHeads: Int, headDimension: Int, blockSize: Int = 16,
                elementType: ElementType = .f16, memoryBudget: Int) {
        self.layers = layers
        self.keyValueHeads = keyValueHeads
        self.headDimension = headDimension
        self.blockSize = blockSize
        self.elementType = elementType
        self.memoryBudget = memoryBudget
    }

    /// Bytes of one (layer, K or V, head) run of `blockSize` tokens.
    public var runBytes: Int { blockSize * (headDimension / elementType.blockSize) * elementType.blockBytes }
    /// Bytes of one block: every layer's keys and values for `blockSize` tokens.
    public var blockBytes: Int { layers * 2 * keyValueHeads * runBytes }
}

/// A sequence's handle in a `PagedKVCache`.
public struct SequenceID: Hashable, Sendable, CustomStringConvertible {
    /// The cache's number for the sequence (assigned in order, never reused by that cache).
    public let rawValue: Int
    /// The sequence numbered `rawValue` (numbers come from `makeSequence`; an operation on a
    /// number the cache never gave throws).
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// A one-line description for logs and error messages.
    public var description: String { "sequence \(rawValue)" }
}

/// Keys and values of many sequences in one pool of fixed-size blocks, the way vLLM's
/// PagedAttention keeps them: per-sequence block tables, reference-counted blocks shared
/// copy-on-write between forks, and a prefix cache that lets a new sequence reuse the
/// full blocks of any earlier one that began with the same tokens.
///
/// Not thread-safe: one scheduler owns it. Memory is allocated once, from the budget.
public final class PagedKVCache {
    /// The shape and memory budget the pool was built for.
    public let configuration: KVCacheConfiguration
    /// Blocks in the pool.
    public let blockCount: Int
    /// The pool: one region per (layer, keys or values, head), each holding that run of
    /// every block back to back — so a sequence whose blocks are consecutive is read as one
    /// stream (one region per block would put 180 KB between a head's runs in a 1.1B model
    /// and defeat the prefetcher).
    public let storage: UnsafeMutableRawPointer

    struct Block {
        var referenceCount = 0
        /// The prefix hash of this block when it is full and registered for reuse.
        var hash: UInt64?
        /// Its tokens, compared on every prefix-cache hit (a hash collision must not
        /// return someone else's keys).
        var tokens: [Int] = []
        var lastUse: UInt64 = 0
    }

    struct Sequence {
        var blocks: [Int] = []
        var length = 0
        /// Tokens written so far (for hashing full blocks).
        var tokens: [Int] = []
    }

    var blocks: [Block]
    var freeList: [Int]
    /// Unreferenced blocks still in the prefix cache, evicted least recently used first.
    var evictable: Set<Int> = []
    var prefixCache: [UInt64: Int] = [:]
    var sequences: [Int: Sequence] = [:]
    private var nextSequence = 0
    private var clock: UInt64 = 0

    /// Allocates the pool once (as many blocks as fit the budget); throws `KVCacheError` for a bad configuration.
    public init(configuration c: KVCacheConfiguration) throws {
        guard c.layers > 0, c.keyValueHeads > 0, c.headDimension > 0, c.blockSize > 0 else {
            throw KVCacheError.invalidConfiguration("layers, heads, head dimension and block size must be positive")
        }
        guard [.f32, .f16, .q8_0].contains(c.elementType) else {
            throw KVCacheError.invalidConfiguration("element type \(c.elementType) (F32, F16 or Q8_0)")
        }
        guard c.headDimension % c.elementType.blockSize == 0 else {
            throw KVCacheError.invalidConfiguration("\(c.elementType) keys and values need a head dimension that is a multiple of \(c.elementType.blockSize), not \(c.headDimension)")
        }
        var blockBytes = 1  // c.blockBytes, computed here without trapping on overflow
        for factor in [c.layers, 2, c.keyValueHeads, c.blockSize, c.headDimension / c.elementType.blockSize, c.elementType.blockBytes] {
            let (product, overflow) = blockBytes.multipliedReportingOverflow(by: factor)
            guard !overflow else { throw KVCacheError.invalidConfiguration("block size overflows") }
            blockBytes = product
        }
        guard c.memoryBudget >= blockBytes else { throw KVCacheError.budgetTooSmall(budget: c.memoryBudget, blockBytes: blockBytes) }
        configuration = c
        blockCount = c.memoryBudget / blockBytes
        // Anonymous memory: zero-filled, page-aligned, and only touched pages become resident.
        guard let raw = mmap(nil, blockCount * blockBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              raw != MAP_FAILED else {
            throw KVCacheError.invalidConfiguration("cannot allocate \(blockCount * blockBytes) bytes")
        }
        storage = raw
        blocks = Array(repeating: Block(), count: blockCount)
        freeList = Array((0..<blockCount).reversed())
    }

    deinit { munmap(storage, blockCount * configuration.blockBytes) }

    // MARK: - Inspection

    /// Blocks neither referenced nor cached.
    public var freeBlockCount: Int { freeList.count }
    /// Blocks that can be handed out now (free, or cached and unreferenced).
    public var availableBlockCount: Int { freeList.count + evictable.count }
    /// Tokens stored for `sequence`.
    public func length(of sequence: SequenceID) throws -> Int { try state(sequence).length }
    /// The block table of `sequence`.
    public func blockTable(of sequence: SequenceID) throws -> [Int] { try state(sequence).blocks }

    /// Where layer `layer`'s keys (or values) of `head` start inside block `block`. Keys are
    /// stored transposed, [headDimension][blockSize], so attention scores several heads of a
    /// block at once in registers; values by token, [blockSize][headDimension].
    public func run(block: Int, layer: Int, head: Int, values: Bool) -> UnsafeMutableRawPointer {
        let c = configuration
        let region = (layer * 2 + (values ? 1 : 0)) * c.keyValueHeads + head
        return storage + (region * blockCount + block) * c.runBytes
    }

    /// Copies every run of block `source` to block `target`.
    func copyBlock(_ source: Int, to target: Int) {
        let c = configuration
        for layer in 0..<c.layers {
            for head in 0..<c.keyValueHeads {
                for values in [false, true] {
                    run(block: target, layer: layer, head: head, values: values)
                        .copyMemory(from: run(block: source, layer: layer, head: head, values: values), byteCount: c.runBytes)
                }
            }
        }
    }

    func state(_ sequence: SequenceID) throws -> Sequence {
        guard let state = sequences[sequence.rawValue] else { throw KVCacheError.unknownSequence(sequence.rawValue) }
        return state
    }

    /// Changes a sequence's state where it is stored: a copy would make copy-on-write
    /// duplicate its arrays on every append (quadratic over a long generation). Through
    /// `values[index]`, not `sequences[key]!`, which copied both arrays on every call.
    func modify<T>(_ sequence: SequenceID, _ body: (inout Sequence) throws -> T) throws -> T {
        guard let index = sequences.index(forKey: sequence.rawValue) else { throw KVCacheError.unknownSequence(sequence.rawValue) }
        return try body(&sequences.values[index])
    }

    // MARK: - Sequences

    /// A new, empty sequence.
    public func makeSequence() -> SequenceID {
        defer { nextSequence += 1 }
        sequences[nextSequence] = Sequence()
        return SequenceID(rawValue: nextSequence)
    }

    /// A new sequence starting with the longest cached prefix of `tokens` (whole blocks;
    /// at most tokens.count - 1 tokens, so the last token is always computed and yields
    /// logits). Returns the sequence and how many tokens it already holds.
    public func makeSequence(reusingPrefixOf tokens: [Int]) -> (SequenceID, reusedTokens: Int) {
        let sequence = makeSequence()
        let size = configuration.blockSize
        var parent: UInt64 = 0
        var state = Sequence()
        var index = 0
        while (index + 1) * size <= tokens.count - 1 {
            let chunk = Array(tokens[index * size..<(index + 1) * size])
            let hash = Self.hash(parent: parent, tokens: chunk)
            guard let block = prefixCache[hash], blocks[block].tokens == chunk else { break }
            retain(block)
            state.blocks.append(block)
            state.tokens += chunk
            parent = hash
            index += 1
        }
        state.length = state.tokens.count
        sequences[sequence.rawValue] = state
        return (sequence, state.length)
    }

    /// Makes room for `count` more tokens (allocating blocks, copying a shared last block
    /// before it is written). Throws `outOfBlocks` and changes nothing when the pool cannot.
    public func reserve(_ sequence: SequenceID, tokens count: Int) throws {
        let state = try self.state(sequence)
        guard count > 0 else { return }
        let size = configuration.blockSize
        let needed = max((state.length + count + size - 1) / size - state.blocks.count, 0)
        let lastIsShared = state.length % size != 0 && !isPrivate(state.blocks[state.blocks.count - 1])
        let total = needed + (lastIsShared ? 1 : 0)
        guard total > 0 else { return }  // the common decode step: room in the last block, nothing to change
        guard total <= availableBlockCount else { throw KVCacheError.outOfBlocks(needed: total, available: availableBlockCount) }
        var replacement: Int?
        if lastIsShared {
            let shared = state.blocks[state.blocks.count - 1]
            let copy = takeBlock()
            copyBlock(shared, to: copy)
            release(block: shared)
            replacement = copy
        }
        var added: [Int] = []
        for _ in 0..<needed { added.append(takeBlock()) }
        try modify(sequence) { state in
            if let replacement { state.blocks[state.blocks.count - 1] = replacement }
            state.blocks += added
        }
    }

    /// Records that `tokens` were written at the end of `sequence` (after `reserve` and the
    /// attention layers' writes); full blocks enter the prefix cache.
    public func append(_ sequence: SequenceID, tokens: [Int]) throws {
        let size = configuration.blockSize
        let (blockTable, firstNewBlock, fullBlocks) = try modify(sequence) { state -> ([Int], Int, Int) in
            guard state.length + tokens.count <= state.blocks.count * size else {
                throw KVCacheError.positionOutOfRange(sequence: sequence.rawValue, position: state.length + tokens.count,
                                                      length: state.blocks.count * size)
            }
            let firstNewBlock = state.length / size
            state.tokens += tokens
            state.length += tokens.count
            return (state.blocks, firstNewBlock, state.length / size)
        }
        guard fullBlocks > firstNewBlock else { return }
        let allTokens = sequences[sequence.rawValue]!.tokens
        var parent: UInt64 = firstNewBlock == 0 ? 0 : blocks[blockTable[firstNewBlock - 1]].hash
            ?? Self.prefixHash(allTokens, blocks: firstNewBlock, size: size)
        for index in firstNewBlock..<fullBlocks {
            let chunk = Array(allTokens[index * size..<(index + 1) * size])
            let hash = Self.hash(parent: parent, tokens: chunk)
            let block = blockTable[index]
            if prefixCache[hash] == nil, blocks[block].hash == nil {
                prefixCache[hash] = block
                blocks[block].hash = hash
                blocks[block].tokens = chunk
            }
            parent = hash
        }
    }

    /// A new sequence sharing all of `sequence`'s blocks (n > 1 samples from one prompt).
    /// Nothing is copied until one of them writes into a shared block.
    public func fork(_ sequence: SequenceID) throws -> SequenceID {
        let state = try self.state(sequence)
        for block in state.blocks { retain(block) }
        let child = makeSequence()
        sequences[child.rawValue] = state
        return child
    }

    /// Keeps only the first `length` tokens (speculative decoding rolls back this way).
    public func truncate(_ sequence: SequenceID, to length: Int) throws {
        let released = try modify(sequence) { state -> [Int] in
            guard length >= 0, length <= state.length else {
                throw KVCacheError.positionOutOfRange(sequence: sequence.rawValue, position: length, length: state.length)
            }
            let keep = (length + configuration.blockSize - 1) / configuration.blockSize
            let released = Array(state.blocks[keep...])
            state.blocks.removeLast(state.blocks.count - keep)
            state.tokens.removeLast(state.length - length)
            state.length = length
            return released
        }
        for block in released { release(block: block) }
    }

    /// Ends `sequence`: its blocks return to the pool (full ones stay cached for reuse).
    public func release(_ sequence: SequenceID) throws {
        let state = try self.state(sequence)
        for block in state.blocks { release(block: block) }
        sequences[sequence.rawValue] = nil
    }

    // MARK: - Keys and values

    /// Stores one token's keys and values (keyValueHeads × headDimension floats each) for
    /// `layer` at `position`, converting to the pool's element type. The position must lie in
    /// space `reserve` made; writing into a block another sequence or the prefix cache
    /// holds throws instead of changing their data.
    public func write(_ sequence: SequenceID, layer: Int, position: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>) throws {
        let state = try self.state(sequence)
        let size = configuration.blockSize
        guard layer >= 0, layer < configuration.layers, position >= 0, position < state.blocks.count * size else {
            throw KVCacheError.positionOutOfRange(sequence: sequence.rawValue, position: position, length: state.blocks.count * size)
        }
        let block = state.blocks[position / size]
        guard isPrivate(block) else {
            throw KVCacheError.invalidConfiguration("write into shared block \(block) of \(sequence) at position \(position)")
        }
        let d = configuration.headDimension, row = position % size
        let f32 = configuration.elementType == .f32
        for head in 0..<configuration.keyValueHeads {
            if configuration.elementType == .q8_0 {
                // Quants first ([d][size] keys, [size][d] values), then the scales, [d / 32][size].
                let k = run(block: block, layer: layer, head: head, values: false)
                quill_kv_quantize_q8_0(keys + head * d, Int64(d), (k + row).assumingMemoryBound(to: Int8.self), Int64(size),
                                       (k + size * d + row * 2).assumingMemoryBound(to: UInt16.self), Int64(size))
                let v = run(block: block, layer: layer, head: head, values: true)
                quill_kv_quantize_q8_0(values + head * d, Int64(d), (v + row * d).assumingMemoryBound(to: Int8.self), 1,
                                       (v + size * d + row * 2).assumingMemoryBound(to: UInt16.self), Int64(size))
                continue
            }
            let k = run(block: block, layer: layer, head: head, values: false)
            // Transposed: element e of every token is contiguous, so a token's keys go `size` apart.
            if f32 { for e in 0..<d { k.storeBytes(of: keys[head * d + e], toByteOffset: (e * size + row) * 4, as: Float.self) } }
            else { quill_f32_to_f16_strided(keys + head * d, (k + row * 2).assumingMemoryBound(to: UInt16.self), Int64(d), Int64(size)) }
            let v = run(block: block, layer: layer, head: head, values: true)
            if f32 { (v + row * d * 4).copyMemory(from: values + head * d, byteCount: d * 4) }
            else { quill_f32_to_f16(values + head * d, (v + row * d * 2).assumingMemoryBound(to: UInt16.self), Int64(d)) }
        }
    }

    /// Keys (or values) of `head` in `layer` for every stored position, as floats
    /// ([length][headDimension]); for tests and reference implementations.
    public func read(_ sequence: SequenceID, layer: Int, head: Int, values: Bool) throws -> [Float] {
        let state = try self.state(sequence)
        guard (0..<configuration.layers).contains(layer), (0..<configuration.keyValueHeads).contains(head) else {
            throw KVCacheError.invalidConfiguration("no layer \(layer), head \(head) in a cache of \(configuration.layers) layers × \(configuration.keyValueHeads) heads")
        }
        let d = configuration.headDimension, size = configuration.blockSize
        var result = [Float](repeating: 0, count: state.length * d)
        let f32 = configuration.elementType == .f32
        if configuration.elementType == .q8_0 {
            var run = [Float](repeating: 0, count: size * d)  // one run, dequantized in its own layout
            for (index, block) in state.blocks.enumerated() where index * size < state.length {
                quill_kv_dequantize_q8_0(self.run(block: block, layer: layer, head: head, values: values), Int64(d), Int64(size),
                                         values ? 1 : 0, &run)
                for row in 0..<min(size, state.length - index * size) {
                    for e in 0..<d { result[(index * size + row) * d + e] = run[values ? row * d + e : e * size + row] }
                }
            }
            return result
        }
        for position in 0..<state.length {
            let source = run(block: state.blocks[position / size], layer: layer, head: head, values: values)
            let row = position % size
            for e in 0..<d {
                let index = values ? row * d + e : e * size + row  // keys are stored transposed
                result[position * d + e] = f32 ? source.load(fromByteOffset: index * 4, as: Float.self)
                    : quill_f16_to_f32_scalar(source.load(fromByteOffset: index * 2, as: UInt16.self))
            }
        }
        return result
    }

    // MARK: - Blocks

    /// A block only this sequence uses and the prefix cache does not hold (safe to write).
    func isPrivate(_ block: Int) -> Bool { blocks[block].referenceCount == 1 && blocks[block].hash == nil }

    private func retain(_ block: Int) {
        if blocks[block].referenceCount == 0 { evictable.remove(block) }
        blocks[block].referenceCount += 1
        clock += 1
        blocks[block].lastUse = clock
    }

    private func release(block: Int) {
        blocks[block].referenceCount -= 1
        precondition(blocks[block].referenceCount >= 0, "KV block \(block) released more often than retained")
        guard blocks[block].referenceCount == 0 else { return }
        if blocks[block].hash != nil { evictable.insert(block) } else { freeList.append(block) }
    }

    /// A free block, or the least recently used cached one (dropped from the cache).
    /// Callers check availability first.
    private func takeBlock() -> Int {
        let block: Int
        if let next = freeList.popLast() {
            block = next
        } else {
            block = evictable.min { blocks[$0].lastUse < blocks[$1].lastUse }!
            evictable.remove(block)
            if let hash = blocks[block].hash { prefixCache[hash] = nil }
            blocks[block].hash = nil
            blocks[block].tokens = []
        }
        blocks[block].referenceCount = 1
        clock += 1
        blocks[block].lastUse = clock
        return block
    }

    /// Violations of the pool's bookkeeping invariants (empty when consistent): every block
    /// is free, evictable or referenced, never two of them; reference counts equal the
    /// block-table entries that name each block; cache entries point at blocks holding that hash.
    func invariantViolations() -> [String] {
        var problems: [String] = []
        var references = [Int](repeating: 0, count: blockCount)
        for state in sequences.values { for block in state.blocks { references[block] += 1 } }
        let freeSet = Set(freeList)
        if freeSet.count != freeList.count { problems.append("a block is on the free list twice") }
        for block in 0..<blockCount {
            let b = blocks[block]
            if b.referenceCount != references[block] { problems.append("block \(block): count \(b.referenceCount), referenced \(references[block]) times") }
            let states = [freeSet.contains(block), evictable.contains(block), b.referenceCount > 0].filter { $0 }.count
            if states != 1 { problems.append("block \(block) is in \(states) of free/evictable/referenced") }
            if evictable.contains(block), b.hash == nil { problems.append("block \(block) evictable without a hash") }
        }
        for (hash, block) in prefixCache where blocks[block].hash != hash { problems.append("cache entry for block \(block) has a stale hash") }
        for state in sequences.values where state.blocks.count * configuration.blockSize < state.length || state.tokens.count != state.length {
            problems.append("a sequence's length \(state.length) exceeds its blocks or tokens")
        }
        return problems
    }

    /// FNV-1a over the parent hash and the block's tokens.
    static func hash(parent: UInt64, tokens: [Int]) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        func mix(_ value: UInt64) {
            var v = value
            for _ in 0..<8 { h = (h ^ (v & 0xFF)) &* 0x100_0000_01B3; v >>= 8 }
        }
        mix(parent)
        for token in tokens { mix(UInt64(bitPattern: Int64(token))) }
        return h
    }

    static func prefixHash(_ tokens: [Int], blocks count: Int, size: Int) -> UInt64 {
        var parent: UInt64 = 0
        for index in 0..<count { parent = hash(parent: parent, tokens: Array(tokens[index * size..<(index + 1) * size])) }
        return parent
    }
}
