import CQuillKernels

/// Attention of new queries over a sequence's keys and values in a `PagedKVCache`, read
/// through its block table: online softmax over one block of keys at a time (no score
/// matrix), query heads sharing a key/value head read it once (GQA/MQA), softmax and
/// accumulation in F32 whatever the cache stores.
public enum PagedAttention {
    /// Queries per task: they share each block of keys while it is in L1.
    static let queryTile = 8

    /// `output[i]` = attention of `queries[i]` (position `firstPosition + i`, causal) over
    /// keys 0 ... that position of `sequence` in `layer` (only the last `window` of them
    /// with a sliding window). Rows hold `heads × headDimension` floats, head h using key/
    /// value head h / (heads / keyValueHeads). The keys of the new positions must already
    /// be written. `firstRow` selects where in the buffers this sequence's rows start (a
    /// batch holds several sequences' rows). Parallel over key/value heads and query tiles.
    public static func attend(queries: FloatBuffer, firstRow: Int = 0, rows n: Int, firstPosition: Int, cache: PagedKVCache,
                              sequence: SequenceID, layer: Int, window: Int? = nil, scale: Float? = nil,
                              output: FloatBuffer, context: ComputeContext) throws {
        let c = cache.configuration
        let d = c.headDimension
        let operation = "attention, layer \(layer)"
        guard layer >= 0, layer < c.layers else {
            throw TensorError.invalidArgument(operation: operation, detail: "layer outside 0..<\(c.layers)")
        }
        guard queries.columns % d == 0, queries.columns / d % c.keyValueHeads == 0, queries.columns > 0 else {
            throw TensorError.shapeMismatch(operation: operation,
                                            detail: "query rows of \(queries.columns) floats are not a multiple of \(c.keyValueHeads) heads × \(d)")
        }
        guard output.columns == queries.columns, n >= 0, firstRow >= 0, firstRow + n <= queries.rows, firstRow + n <= output.rows,
              firstPosition >= 0 else {
            throw TensorError.shapeMismatch(operation: operation, detail: "\(n) rows, queries \(queries.rows)×\(queries.columns), output \(output.rows)×\(output.columns)")
        }
        if let window, window < 1 { throw TensorError.invalidArgument(operation: operation, detail: "window \(window) must be ≥ 1") }
        let table = try cache.blockTable(of: sequence)
        guard firstPosition + n <= table.count * c.blockSize else {
            throw KVCacheError.positionOutOfRange(sequence: sequence.rawValue, position: firstPosition + n - 1, length: table.count * c.blockSize)
        }
        guard n > 0 else { return }
        let group = queries.columns / d / c.keyValueHeads
        let tiles = (n + queryTile - 1) / queryTile
        let scratchCount = queryTile * group * (d + 2) + c.blockSize * (group + 2 * d)
        let attentionScale = scale ?? 1 / Float(d).squareRoot()
        let kvType: Int32 = c.elementType == .f16 ? 1 : 0
        let rowStride = Int64(queries.columns)
        // Int is Int64 on every platform Quill builds for, so the table goes to C without a copy.
        table.withUnsafeBufferPointer { $0.withMemoryRebound(to: Int64.self) { blockTable in
            context.pool.parallelFor(c.keyValueHeads * tiles) { task in
                let head = task / tiles, tile = task % tiles
                let first = tile * queryTile, count = min(queryTile, n - first)
                let offset = (firstRow + first) * queries.columns + head * group * d
                withUnsafeTemporaryAllocation(of: Float.self, capacity: scratchCount) { scratch in
                    quill_attention_paged(queries.pointer + offset, output.pointer + offset, rowStride, Int64(count), Int64(group), Int64(d),
                                          cache.run(block: 0, layer: layer, head: head, values: false),
                                          cache.run(block: 0, layer: layer, head: head, values: true),
                                          Int64(c.runBytes), blockTable.baseAddress!, Int64(c.blockSize),
                                          Int64(firstPosition + first), Int64(window ?? 0), attentionScale, kvType, scratch.baseAddress!)
                }
            }
        } }
    }
}
