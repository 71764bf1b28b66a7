import Foundation
import Testing
@testable import Attention

/// Attention against a float64 reference computed from the very values the cache holds
/// (so F16 storage is judged on the softmax and accumulation only).
@Suite struct PagedAttentionTests {
    struct Setup {
        let cache: PagedKVCache
        let sequence: SequenceID
        let queries: FloatBuffer
        let heads: Int
    }

    /// A sequence of `length` random keys/values and `rows` random queries for the last positions.
    static func setup(headDimension d: Int, group: Int, length: Int, rows: Int, type: ElementType = .f32,
                      scrambleBlocks: Bool = false, seed: UInt64 = 1, blockSize: Int = 16) throws -> Setup {
        let kvHeads = 2
        let shape = KVCacheConfiguration(layers: 1, keyValueHeads: kvHeads, headDimension: d, blockSize: blockSize, elementType: type, memoryBudget: 0)
        let blocksNeeded = (length + blockSize - 1) / blockSize + 8
        let cache = try PagedKVCache(configuration: KVCacheConfiguration(layers: 1, keyValueHeads: kvHeads, headDimension: d,
                                                                         blockSize: blockSize, elementType: type,
                                                                         memoryBudget: blocksNeeded * shape.blockBytes))
        if scrambleBlocks {  // take blocks out of order so the table is not 0, 1, 2, ...
            let filler = cache.makeSequence()
            try cache.reserve(filler, tokens: 5 * blockSize)
            try cache.append(filler, tokens: Array(repeating: 0, count: 5 * blockSize))
            let other = cache.makeSequence()
            try cache.reserve(other, tokens: 3 * blockSize)
            try cache.release(filler)
        }
        let sequence = cache.makeSequence()
        try cache.reserve(sequence, tokens: length)
        var generator = SplitMix(seed: seed)
        for position in 0..<length {
            // Large enough that attention is far from uniform.
            let keys = (0..<kvHeads * d).map { _ in Float.random(in: -1.5...1.5, using: &generator) }
            let values = (0..<kvHeads * d).map { _ in Float.random(in: -1...1, using: &generator) }
            try cache.write(sequence, layer: 0, position: position, keys: keys, values: values)
        }
        try cache.append(sequence, tokens: Array(repeating: 1, count: length))
        let heads = kvHeads * group
        let queries = try FloatBuffer(rows: rows, columns: heads * d,
                                      values: (0..<rows * heads * d).map { _ in Float.random(in: -1.5...1.5, using: &generator) })
        return Setup(cache: cache, sequence: sequence, queries: queries, heads: heads)
    }

    static func reference(_ s: Setup, rows: Int, firstPosition: Int, window: Int?) throws -> [Double] {
        let c = s.cache.configuration, d = c.headDimension, group = s.heads / c.keyValueHeads
        let keys = try (0..<c.keyValueHeads).map { try s.cache.read(s.sequence, layer: 0, head: $0, values: false) }
        let values = try (0..<c.keyValueHeads).map { try s.cache.read(s.sequence, layer: 0, head: $0, values: true) }
        var out = [Double](repeating: 0, count: rows * s.heads * d)
        let scale = 1 / Double(d).squareRoot()
        for r in 0..<rows {
            let position = firstPosition + r
            let lowest = window.map { max(0, position - $0 + 1) } ?? 0
            for h in 0..<s.heads {
                let kv = h / group
                let q = (0..<d).map { Double(s.queries[r, h * d + $0]) }
                let scores = (lowest...position).map { j in (0..<d).reduce(0.0) { $0 + q[$1] * Double(keys[kv][j * d + $1]) } * scale }
                let m = scores.max()!
                let weights = scores.map { exp($0 - m) }, total = weights.reduce(0, +)
                for (index, j) in (lowest...position).enumerated() {
                    for e in 0..<d { out[(r * s.heads + h) * d + e] += weights[index] / total * Double(values[kv][j * d + e]) }
                }
            }
        }
        return out
    }

    static func run(_ s: Setup, rows: Int, firstPosition: Int, window: Int?, threads: Int = 2) throws -> FloatBuffer {
        let output = try FloatBuffer(rows: rows, columns: s.queries.columns)
        try PagedAttention.attend(queries: s.queries, rows: rows, firstPosition: firstPosition, cache: s.cache, sequence: s.sequence,
                                  layer: 0, window: window, output: output, context: ComputeContext(threads: threads))
        return output
    }

    @Test(arguments: [64, 80, 128], [1, 4, 8])
    func matchesFloat64Reference(headDimension: Int, group: Int) throws {
        for length in [1, 15, 16, 17, 100, 1000] where !(length == 1000 && group == 8 && headDimension != 128) {
            let rows = min(length, 9)  // a prefill chunk crossing a tile and block boundary
            let s = try Self.setup(headDimension: headDimension, group: group, length: length, rows: rows, seed: UInt64(length))
            for window in [nil, 7] as [Int?] {
                let output = try Self.run(s, rows: rows, firstPosition: length - rows, window: window)
                let expected = try Self.reference(s, rows: rows, firstPosition: length - rows, window: window)
                let worst = zip(output.values(), expected).map { abs(Double($0) - $1) }.max() ?? 0
                #expect(worst <= 1e-5, "d=\(headDimension) group=\(group) length=\(length) window=\(window.map(String.init) ?? "none"): \(worst)")
            }
        }
    }

    /// Decode and verify steps over long contexts with 2 KV heads have fewer tasks than
    /// 2 × threads, so each head's blocks are split into segments (split-K) and merged; a
    /// window of 600 splits only the blocks it leaves visible (one of 100 is too short to
    /// split). Both kernel levels.
    @Test(arguments: [KernelLevel.scalar, .avx2], [(d: 64, group: 1), (d: 80, group: 8)])
    func splitKeyRangesMatchReference(level: KernelLevel, shape: (d: Int, group: Int)) throws {
        for (length, rows) in [(1000, 1), (700, 5), (513, 1)] {
            let s = try Self.setup(headDimension: shape.d, group: shape.group, length: length, rows: rows, seed: UInt64(length + rows))
            for window in [nil, 100, 600] as [Int?] {
                let expected = try Self.reference(s, rows: rows, firstPosition: length - rows, window: window)
                for threads in [1, 2, 4] {
                    let output = try KernelLevel.withThreadLevel(level) {
                        try Self.run(s, rows: rows, firstPosition: length - rows, window: window, threads: threads)
                    }
                    let worst = zip(output.values(), expected).map { abs(Double($0) - $1) }.max() ?? 0
                    #expect(worst <= 1e-5, "\(level) d=\(shape.d) group=\(shape.group) length=\(length) rows=\(rows) window=\(window.map(String.init) ?? "none") threads=\(threads): \(worst)")
                }
            }
        }
    }

    /// The portable path (CPUs without AVX2), on the calling thread of a one-thread pool.
    @Test(arguments: [ElementType.f32, .f16, .q8_0])
    func scalarPathMatchesReference(type: ElementType) throws {
        let s = try Self.setup(headDimension: type == .q8_0 ? 64 : 80, group: 4, length: 70, rows: 9, type: type)
        let output = try KernelLevel.withThreadLevel(.scalar) { try Self.run(s, rows: 9, firstPosition: 61, window: 20, threads: 1) }
        let expected = try Self.reference(s, rows: 9, firstPosition: 61, window: 20)
        #expect(zip(output.values(), expected).allSatisfy { abs(Double($0) - $1) <= 1e-5 })
    }

    @Test func f16CacheMatchesReferenceOfStoredValues() throws {
        let s = try Self.setup(headDimension: 64, group: 4, length: 300, rows: 5, type: .f16)
        let output = try Self.run(s, rows: 5, firstPosition: 295, window: nil)
        let expected = try Self.reference(s, rows: 5, firstPosition: 295, window: nil)
        #expect(zip(output.values(), expected).allSatisfy { abs(Double($0) - $1) <= 1e-5 })
    }

    @Test(arguments: [ElementType.f32, .f16, .q8_0])
    func pagedEqualsContiguousBitForBit(type: ElementType) throws {
        let d = type == .q8_0 ? 64 : 80
        let contiguous = try Self.setup(headDimension: d, group: 4, length: 200, rows: 12, type: type)
        let scrambled = try Self.setup(headDimension: d, group: 4, length: 200, rows: 12, type: type, scrambleBlocks: true)
        let table = try scrambled.cache.blockTable(of: scrambled.sequence)
        #expect(table != Array(table.sorted()) || table.first != 0, "the scrambled table must not be contiguous: \(table)")
        #expect(try Self.run(contiguous, rows: 12, firstPosition: 188, window: nil).values()
                == Self.run(scrambled, rows: 12, firstPosition: 188, window: nil).values())
        // One thread or two: the same bits.
        #expect(try Self.run(contiguous, rows: 12, firstPosition: 188, window: 50, threads: 1).values()
                == Self.run(contiguous, rows: 12, firstPosition: 188, window: 50, threads: 2).values())
    }

    /// Q8_0 storage: attention over the dequantized keys and values, as the reference reads
    /// them back, for prefill chunks and decode steps (split-K included), GQA 1/4/8, head
    /// dimensions 64 and 128, with and without a window, at both kernel levels.
    @Test(arguments: [KernelLevel.scalar, .avx2], [64, 128])
    func q8CacheMatchesReferenceOfStoredValues(level: KernelLevel, headDimension: Int) throws {
        for group in [1, 4, 8] {
            for (length, rows) in [(1, 1), (17, 9), (100, 9), (513, 1), (700, 3)] {
                let s = try Self.setup(headDimension: headDimension, group: group, length: length, rows: rows, type: .q8_0,
                                       seed: UInt64(length * 10 + group))
                for window in [nil, 7] as [Int?] {
                    // The level is per thread: the scalar run stays on the calling thread of a one-thread pool.
                    let output = try KernelLevel.withThreadLevel(level) {
                        try Self.run(s, rows: rows, firstPosition: length - rows, window: window, threads: level == .scalar ? 1 : 2)
                    }
                    let expected = try Self.reference(s, rows: rows, firstPosition: length - rows, window: window)
                    let worst = zip(output.values(), expected).map { abs(Double($0) - $1) }.max() ?? 0
                    #expect(worst <= 1e-5, "\(level) d=\(headDimension) group=\(group) length=\(length) window=\(window.map(String.init) ?? "none"): \(worst)")
                }
            }
        }
    }

    /// Blocks of other than 16 tokens take the portable path (the vector kernels assume 16),
    /// for every storage type.
    @Test(arguments: [ElementType.f32, .f16, .q8_0])
    func otherBlockSizesMatchReference(type: ElementType) throws {
        for blockSize in [5, 32] {
            let s = try Self.setup(headDimension: 64, group: 4, length: 150, rows: 6, type: type, seed: UInt64(blockSize), blockSize: blockSize)
            for window in [nil, 40] as [Int?] {
                let output = try Self.run(s, rows: 6, firstPosition: 144, window: window)
                let expected = try Self.reference(s, rows: 6, firstPosition: 144, window: window)
                let worst = zip(output.values(), expected).map { abs(Double($0) - $1) }.max() ?? 0
                #expect(worst <= 1e-5, "\(type) block size \(blockSize) window \(window.map(String.init) ?? "none"): \(worst)")
            }
        }
    }

    /// What Q8_0 storage costs in accuracy: attention over the original F32 keys and values
    /// against attention over their Q8_0 copies (the same random inputs).
    @Test func q8CacheStaysCloseToF32() throws {
        let exact = try Self.setup(headDimension: 128, group: 4, length: 300, rows: 4, type: .f32)
        let quantized = try Self.setup(headDimension: 128, group: 4, length: 300, rows: 4, type: .q8_0)
        let a = try Self.run(exact, rows: 4, firstPosition: 296, window: nil).values()
        let b = try Self.run(quantized, rows: 4, firstPosition: 296, window: nil).values()
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
        #expect(worst > 0 && worst < 0.01, "Q8_0 vs F32 attention: \(worst)")
    }

    /// Several sequences in one call (prefill chunks, decode and verification rows, an item
    /// with no rows): each sequence's rows equal what it gets alone, bit for bit, the
    /// batch-invariance the scheduler relies on, including a long decode that split-K divides.
    @Test(arguments: [ElementType.f32, .f16, .q8_0])
    func batchEqualsEachSequenceAlone(type: ElementType) throws {
        let d = 64, kvHeads = 2, group = 4, blockSize = 16
        let shape = KVCacheConfiguration(layers: 1, keyValueHeads: kvHeads, headDimension: d, elementType: type, memoryBudget: 0)
        let cache = try PagedKVCache(configuration: KVCacheConfiguration(layers: 1, keyValueHeads: kvHeads, headDimension: d,
                                                                         elementType: type, memoryBudget: 100 * shape.blockBytes))
        var generator = SplitMix(seed: 9)
        // (length, rows): the last `rows` positions are the ones queried.
        let shapes = [(700, 1), (40, 12), (1, 1), (300, 5), (20, 0)]
        var batch: [AttentionRows] = [], row = 0
        for (length, rows) in shapes {
            let sequence = cache.makeSequence()
            try cache.reserve(sequence, tokens: length)
            for position in 0..<length {
                let keys = (0..<kvHeads * d).map { _ in Float.random(in: -1.5...1.5, using: &generator) }
                let values = (0..<kvHeads * d).map { _ in Float.random(in: -1...1, using: &generator) }
                try cache.write(sequence, layer: 0, position: position, keys: keys, values: values)
            }
            try cache.append(sequence, tokens: Array(repeating: 1, count: length))
            batch.append(AttentionRows(sequence: sequence, firstRow: row, rows: rows, firstPosition: length - rows))
            row += rows
        }
        #expect((700 + blockSize - 1) / blockSize >= 2 * PagedAttention.minimumSegmentBlocks && kvHeads < 2 * 2)  // the first is split
        let columns = kvHeads * group * d
        let queries = try FloatBuffer(rows: row, columns: columns,
                                      values: (0..<row * columns).map { _ in Float.random(in: -1.5...1.5, using: &generator) })
        for threads in [1, 2, 3] {
            let context = try ComputeContext(threads: threads)
            for window in [nil, 50] as [Int?] {
                let together = try FloatBuffer(rows: row, columns: columns)
                try PagedAttention.attend(batch: batch, queries: queries, cache: cache, layer: 0, window: window, output: together, context: context)
                let alone = try FloatBuffer(rows: row, columns: columns)
                for item in batch {
                    try PagedAttention.attend(queries: queries, firstRow: item.firstRow, rows: item.rows, firstPosition: item.firstPosition,
                                              cache: cache, sequence: item.sequence, layer: 0, window: window, output: alone, context: context)
                }
                #expect(together.values() == alone.values(), "\(type), \(threads) threads, window \(window.map(String.init) ?? "none")")
            }
        }
        // Overlapping rows would race: refused.
        var overlapping = batch
        overlapping[1].firstRow = 0
        #expect(throws: TensorError.self) {
            try PagedAttention.attend(batch: overlapping, queries: queries, cache: cache, layer: 0, output: try FloatBuffer(rows: row, columns: columns),
                                      context: ComputeContext(threads: 2))
        }
        #expect(throws: KVCacheError.self) {
            try PagedAttention.attend(batch: [AttentionRows(sequence: SequenceID(rawValue: 99), firstRow: 0, rows: 1, firstPosition: 0)],
                                      queries: queries, cache: cache, layer: 0, output: try FloatBuffer(rows: row, columns: columns),
                                      context: ComputeContext(threads: 2))
        }
    }

    @Test func prefixCacheHitGivesTheSameAttention() throws {
        let s = try Self.setup(headDimension: 64, group: 2, length: 40, rows: 1)
        let tokens = Array(repeating: 1, count: 40)
        let original = try Self.run(s, rows: 1, firstPosition: 39, window: nil)
        // A second sequence reusing the 32 cached tokens and writing the rest again.
        let (second, reused) = s.cache.makeSequence(reusingPrefixOf: tokens + [2])
        #expect(reused == 32)
        try s.cache.reserve(second, tokens: 8)
        for position in 32..<40 {
            var keys = [Float](), values = [Float]()
            for head in 0..<2 {
                keys += try s.cache.read(s.sequence, layer: 0, head: head, values: false)[(position * 64)..<(position * 64 + 64)]
                values += try s.cache.read(s.sequence, layer: 0, head: head, values: true)[(position * 64)..<(position * 64 + 64)]
            }
            try s.cache.write(second, layer: 0, position: position, keys: keys, values: values)
        }
        try s.cache.append(second, tokens: Array(tokens[32...]))
        let output = try FloatBuffer(rows: 1, columns: s.queries.columns)
        try PagedAttention.attend(queries: s.queries, rows: 1, firstPosition: 39, cache: s.cache, sequence: second, layer: 0,
                                  output: output, context: ComputeContext(threads: 1))
        #expect(output.values() == original.values())
    }

    @Test func badArgumentsThrow() throws {
        let s = try Self.setup(headDimension: 64, group: 2, length: 20, rows: 2)
        let output = try FloatBuffer(rows: 2, columns: s.queries.columns)
        let context = try ComputeContext(threads: 1)
        #expect(throws: KVCacheError.self) {
            try PagedAttention.attend(queries: s.queries, rows: 2, firstPosition: 100, cache: s.cache, sequence: s.sequence, layer: 0, output: output, context: context)
        }
        #expect(throws: TensorError.self) {
            try PagedAttention.attend(queries: s.queries, rows: 2, firstPosition: 10, cache: s.cache, sequence: s.sequence, layer: 1, output: output, context: context)
        }
        #expect(throws: TensorError.self) {
            try PagedAttention.attend(queries: try FloatBuffer(rows: 2, columns: 96), rows: 2, firstPosition: 10, cache: s.cache, sequence: s.sequence, layer: 0,
                                      output: try FloatBuffer(rows: 2, columns: 96), context: context)
        }
        #expect(throws: TensorError.self) {
            try PagedAttention.attend(queries: s.queries, rows: 2, firstPosition: 10, cache: s.cache, sequence: s.sequence, layer: 0, window: 0, output: output, context: context)
        }
        // Rows or positions near Int.max: typed errors, not an overflow trap.
        #expect(throws: TensorError.self) {
            try PagedAttention.attend(batch: [AttentionRows(sequence: s.sequence, firstRow: .max, rows: 2, firstPosition: 10)], queries: s.queries,
                                      cache: s.cache, layer: 0, output: output, context: context)
        }
        #expect(throws: KVCacheError.self) {
            try PagedAttention.attend(queries: s.queries, rows: 2, firstPosition: .max, cache: s.cache, sequence: s.sequence, layer: 0, output: output, context: context)
        }
    }
}
