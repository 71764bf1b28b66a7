import Testing
@testable import Attention

/// Deterministic values for (sequence tag, layer, position, head, element), distinct enough
/// that any mix-up of blocks shows; exactly representable in F16.
func kvValue(tag: Int, layer: Int, position: Int, head: Int, element: Int, isValue: Bool) -> Float {
    Float((tag * 7 + layer * 5 + position * 3 + head * 11 + element + (isValue ? 13 : 0)) % 512) / 8
}

func writeTokens(_ cache: PagedKVCache, _ sequence: SequenceID, tag: Int, positions: Range<Int>) throws {
    try writeTokens(cache, sequence, tags: Array(repeating: tag, count: positions.upperBound), positions: positions)
}

/// Like real keys and values, the content at a position is a function of the tokens up to it,
/// so a prefix-cache hit on another sequence's blocks must give the same content.
func prefixTags(_ tokens: [Int]) -> [Int] {
    var hash = 17
    return tokens.map { token in hash = (hash &* 31 &+ token &+ 1) & 0xFFFF; return hash % 97 }
}

func writeTokens(_ cache: PagedKVCache, _ sequence: SequenceID, tags: [Int], positions: Range<Int>) throws {
    let c = cache.configuration
    for position in positions {
        let tag = tags[position]
        for layer in 0..<c.layers {
            var keys = [Float](repeating: 0, count: c.keyValueHeads * c.headDimension), values = keys
            for head in 0..<c.keyValueHeads {
                for e in 0..<c.headDimension {
                    keys[head * c.headDimension + e] = kvValue(tag: tag, layer: layer, position: position, head: head, element: e, isValue: false)
                    values[head * c.headDimension + e] = kvValue(tag: tag, layer: layer, position: position, head: head, element: e, isValue: true)
                }
            }
            try cache.write(sequence, layer: layer, position: position, keys: keys, values: values)
        }
    }
}

/// The keys written for tag `tags[p]` at each position p.
func expectContents(_ cache: PagedKVCache, _ sequence: SequenceID, tags: [Int], sourceLocation: SourceLocation = #_sourceLocation) throws {
    let c = cache.configuration
    for layer in 0..<c.layers {
        for head in 0..<c.keyValueHeads {
            let keys = try cache.read(sequence, layer: layer, head: head, values: false)
            let values = try cache.read(sequence, layer: layer, head: head, values: true)
            #expect(keys.count == tags.count * c.headDimension, sourceLocation: sourceLocation)
            for (p, tag) in tags.enumerated() {
                for e in 0..<c.headDimension {
                    #expect(keys[p * c.headDimension + e] == kvValue(tag: tag, layer: layer, position: p, head: head, element: e, isValue: false),
                            "layer \(layer) head \(head) position \(p)", sourceLocation: sourceLocation)
                    #expect(values[p * c.headDimension + e] == kvValue(tag: tag, layer: layer, position: p, head: head, element: e, isValue: true),
                            sourceLocation: sourceLocation)
                }
            }
        }
    }
}

@Suite struct PagedKVCacheTests {
    static func cache(blocks: Int = 16, type: ElementType = .f16) throws -> PagedKVCache {
        let shape = KVCacheConfiguration(layers: 2, keyValueHeads: 2, headDimension: 8, blockSize: 4, elementType: type, memoryBudget: 0)
        return try PagedKVCache(configuration: KVCacheConfiguration(layers: 2, keyValueHeads: 2, headDimension: 8, blockSize: 4,
                                                                    elementType: type, memoryBudget: blocks * shape.blockBytes + 100))
    }

    @Test(arguments: [ElementType.f32, .f16])
    func writesAndReadsThroughTheBlockTable(type: ElementType) throws {
        let cache = try Self.cache(type: type)
        #expect(cache.blockCount == 16)
        let s = cache.makeSequence()
        try cache.reserve(s, tokens: 10)
        #expect(try cache.blockTable(of: s).count == 3)
        try writeTokens(cache, s, tag: 1, positions: 0..<10)
        try cache.append(s, tokens: Array(100..<110))
        try expectContents(cache, s, tags: Array(repeating: 1, count: 10))
        #expect(cache.invariantViolations().isEmpty)
        try cache.release(s)
        #expect(cache.availableBlockCount == 16 && cache.invariantViolations().isEmpty)
    }

    /// Q8_0 runs: every value read back lies within half a quantization step (its 32-value
    /// block's largest magnitude / 254, F16-rounded) of what was written, a block of zeros and
    /// NaN read back as 0, and the blocks return to the pool.
    @Test func q8RoundTripsWithinHalfAStep() throws {
        let shape = KVCacheConfiguration(layers: 2, keyValueHeads: 2, headDimension: 64, blockSize: 4, elementType: .q8_0, memoryBudget: 0)
        #expect(shape.runBytes == 4 * 2 * 34)  // two Q8_0 blocks of 32 per token
        let cache = try PagedKVCache(configuration: KVCacheConfiguration(layers: 2, keyValueHeads: 2, headDimension: 64, blockSize: 4,
                                                                         elementType: .q8_0, memoryBudget: 8 * shape.blockBytes))
        let s = cache.makeSequence()
        try cache.reserve(s, tokens: 10)
        var generator = SplitMix(seed: 5)
        var written: [[Float]] = []  // per position, layer 1: keys of both heads then values
        for position in 0..<10 {
            for layer in 0..<2 {
                var keys = (0..<128).map { _ in Float.random(in: -3...3, using: &generator) }
                let values = (0..<128).map { index in Float(index % 64 - 20) * 0.37 }
                if position == 3 { keys.replaceSubrange(0..<32, with: repeatElement(0, count: 32)); keys[40] = .nan }
                try cache.write(s, layer: layer, position: position, keys: keys, values: values)
                if layer == 1 { written.append(keys + values) }
            }
        }
        try cache.append(s, tokens: Array(0..<10))
        for head in 0..<2 {
            let keys = try cache.read(s, layer: 1, head: head, values: false)
            let values = try cache.read(s, layer: 1, head: head, values: true)
            for position in 0..<10 {
                for (offset, stored) in [(0, keys), (128, values)] {
                    for block in 0..<2 {
                        let range = (head * 64 + block * 32)..<(head * 64 + block * 32 + 32)
                        let original = written[position][(offset + range.lowerBound)..<(offset + range.upperBound)]
                        let step = (original.filter { !$0.isNaN }.map(abs).max() ?? 0) / 127
                        for (index, value) in original.enumerated() {
                            let back = stored[position * 64 + block * 32 + index]
                            let expected = value.isNaN ? 0 : value
                            #expect(abs(back - expected) <= step * 0.502 + 1e-6, "position \(position) head \(head) element \(block * 32 + index): \(value) read back as \(back)")
                        }
                    }
                }
            }
        }
        #expect(try cache.read(s, layer: 1, head: 0, values: false)[3 * 64] == 0)
        #expect(throws: KVCacheError.self) { try cache.read(s, layer: 2, head: 0, values: false) }
        try cache.release(s)
        #expect(cache.availableBlockCount == 8 && cache.invariantViolations().isEmpty)
    }

    @Test func unsupportedStorageThrows() {
        #expect(throws: KVCacheError.self) {  // Q8_0 blocks of 32 cannot tile a head of 80
            try PagedKVCache(configuration: KVCacheConfiguration(layers: 1, keyValueHeads: 1, headDimension: 80, elementType: .q8_0, memoryBudget: 1 << 20))
        }
        #expect(throws: KVCacheError.self) {
            try PagedKVCache(configuration: KVCacheConfiguration(layers: 1, keyValueHeads: 1, headDimension: 64, elementType: .q4_0, memoryBudget: 1 << 20))
        }
    }

    @Test func overflowingBlockSizeThrows() {
        #expect(throws: KVCacheError.invalidConfiguration("block size overflows")) {
            try PagedKVCache(configuration: KVCacheConfiguration(layers: 1, keyValueHeads: 1 << 30, headDimension: 1 << 30,
                                                                 blockSize: 1 << 10, memoryBudget: 1 << 30))
        }
    }

    @Test func exhaustionThrowsAndChangesNothing() throws {
        let cache = try Self.cache(blocks: 3)
        let a = cache.makeSequence()
        try cache.reserve(a, tokens: 8)
        try cache.append(a, tokens: Array(0..<8))
        let table = try cache.blockTable(of: a)
        #expect(throws: KVCacheError.outOfBlocks(needed: 2, available: 1)) { try cache.reserve(a, tokens: 5) }
        #expect(try cache.blockTable(of: a) == table && cache.availableBlockCount == 1)
        #expect(throws: KVCacheError.budgetTooSmall(budget: 10, blockBytes: 512)) {
            try PagedKVCache(configuration: KVCacheConfiguration(layers: 2, keyValueHeads: 2, headDimension: 8, blockSize: 4, memoryBudget: 10))
        }
        #expect(throws: KVCacheError.unknownSequence(99)) { try cache.reserve(SequenceID(rawValue: 99), tokens: 1) }
    }

    @Test func forkSharesUntilAWriteThenCopies() throws {
        let cache = try Self.cache()
        let parent = cache.makeSequence()
        try cache.reserve(parent, tokens: 6)
        try writeTokens(cache, parent, tag: 1, positions: 0..<6)
        try cache.append(parent, tokens: Array(0..<6))
        let child = try cache.fork(parent)
        #expect(try cache.blockTable(of: child) == cache.blockTable(of: parent))
        let used = 16 - cache.availableBlockCount
        // The child writes position 6, inside the shared partial block: it gets a copy.
        try cache.reserve(child, tokens: 1)
        #expect(16 - cache.availableBlockCount == used + 1)
        try writeTokens(cache, child, tag: 2, positions: 6..<7)
        try cache.append(child, tokens: [6])
        try expectContents(cache, parent, tags: Array(repeating: 1, count: 6))
        try expectContents(cache, child, tags: Array(repeating: 1, count: 6) + [2])
        #expect(cache.invariantViolations().isEmpty)
        try cache.release(parent)
        try cache.release(child)
        #expect(cache.availableBlockCount == 16 && cache.invariantViolations().isEmpty)
    }

    @Test func prefixCacheReusesFullBlocks() throws {
        let cache = try Self.cache()
        let prompt = Array(500..<511)  // 11 tokens: 2 full blocks of 4
        let first = cache.makeSequence()
        try cache.reserve(first, tokens: prompt.count)
        try writeTokens(cache, first, tag: 3, positions: 0..<prompt.count)
        try cache.append(first, tokens: prompt)
        try cache.release(first)
        #expect(cache.evictable.count == 2 && cache.invariantViolations().isEmpty)

        let (second, reused) = cache.makeSequence(reusingPrefixOf: prompt + [7, 8])
        #expect(reused == 8)
        try cache.reserve(second, tokens: 5)
        try writeTokens(cache, second, tag: 3, positions: 8..<13)
        try cache.append(second, tokens: Array(prompt[8...]) + [7, 8])
        try expectContents(cache, second, tags: Array(repeating: 3, count: 13))
        // A different prompt shares only what matches; the last token is never reused.
        #expect(cache.makeSequence(reusingPrefixOf: Array(prompt[0..<4]) + [0, 0, 0, 0, 1]).reusedTokens == 4)
        #expect(cache.makeSequence(reusingPrefixOf: Array(prompt[0..<8])).reusedTokens == 4)
        #expect(cache.invariantViolations().isEmpty)
    }

    @Test func truncatingIntoACachedBlockCopiesBeforeWriting() throws {
        let cache = try Self.cache()
        let s = cache.makeSequence()
        try cache.reserve(s, tokens: 8)
        try writeTokens(cache, s, tag: 1, positions: 0..<8)
        try cache.append(s, tokens: Array(0..<8))
        try cache.truncate(s, to: 6)
        try cache.reserve(s, tokens: 2)
        try writeTokens(cache, s, tag: 9, positions: 6..<8)
        try cache.append(s, tokens: [60, 70])
        try expectContents(cache, s, tags: [1, 1, 1, 1, 1, 1, 9, 9])
        // The cached block still holds the original tokens 4..<8 for reuse.
        let (again, reused) = cache.makeSequence(reusingPrefixOf: Array(0..<9))
        #expect(reused == 8)
        try expectContents(cache, again, tags: Array(repeating: 1, count: 8))
        #expect(throws: KVCacheError.self) { try cache.truncate(s, to: 9) }
        #expect(cache.invariantViolations().isEmpty)
    }

    /// Random reserve/write/append/fork/truncate/release/prefix-reuse operations against a
    /// shadow model of each sequence's tokens; the invariants hold after every step, every
    /// sequence reads back what its tokens imply, and every block returns to the pool.
    @Test(arguments: 0..<8)
    func randomOperationsKeepInvariants(seed: Int) throws {
        var generator = SplitMix(seed: UInt64(seed))
        let cache = try Self.cache(blocks: 12)
        var shadow: [SequenceID: [Int]] = [:]
        var reusedTokens = 0, forks = 0, truncations = 0
        func randomTokens() -> [Int] {
            (0..<Int.random(in: 1...14, using: &generator)).map { _ in Int.random(in: 0..<3, using: &generator) }
        }
        for step in 0..<300 {
            let live = Array(shadow.keys).sorted { $0.rawValue < $1.rawValue }
            switch Int.random(in: 0..<7, using: &generator) {
            case 0, 1:  // a new sequence, often extending an earlier one's tokens (prefix reuse)
                var tokens = randomTokens()
                if let donor = shadow.values.randomElement(using: &generator), Bool.random(using: &generator) { tokens = donor + tokens }
                let (s, reused) = cache.makeSequence(reusingPrefixOf: tokens)
                reusedTokens += reused
                do {
                    try cache.reserve(s, tokens: tokens.count - reused)
                    try writeTokens(cache, s, tags: prefixTags(tokens), positions: reused..<tokens.count)
                    try cache.append(s, tokens: Array(tokens[reused...]))
                    shadow[s] = tokens
                } catch KVCacheError.outOfBlocks {
                    try cache.release(s)
                }
            case 2:  // extend
                guard let s = live.randomElement(using: &generator) else { continue }
                let tokens = shadow[s]! + randomTokens()
                do {
                    try cache.reserve(s, tokens: tokens.count - shadow[s]!.count)
                    try writeTokens(cache, s, tags: prefixTags(tokens), positions: shadow[s]!.count..<tokens.count)
                    try cache.append(s, tokens: Array(tokens[shadow[s]!.count...]))
                    shadow[s] = tokens
                } catch KVCacheError.outOfBlocks {}
            case 3:
                guard let s = live.randomElement(using: &generator) else { continue }
                shadow[try cache.fork(s)] = shadow[s]
                forks += 1
            case 4:
                guard let s = live.randomElement(using: &generator) else { continue }
                let length = Int.random(in: 0...shadow[s]!.count, using: &generator)
                try cache.truncate(s, to: length)
                shadow[s]!.removeLast(shadow[s]!.count - length)
                truncations += 1
            default:
                guard let s = live.randomElement(using: &generator) else { continue }
                try cache.release(s)
                shadow[s] = nil
            }
            let problems = cache.invariantViolations()
            #expect(problems.isEmpty, "step \(step): \(problems.prefix(3))")
            if !problems.isEmpty { return }
            if step % 25 == 0 { for (s, tokens) in shadow { try expectContents(cache, s, tags: prefixTags(tokens)) } }
        }
        for (s, tokens) in shadow { try expectContents(cache, s, tags: prefixTags(tokens)) }
        for s in shadow.keys { try cache.release(s) }
        #expect(cache.availableBlockCount == cache.blockCount && cache.invariantViolations().isEmpty)
        #expect(reusedTokens > 0 && forks > 0 && truncations > 0, "the run exercised reuse, forks and truncation")
    }
}

struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x1234_5678 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
