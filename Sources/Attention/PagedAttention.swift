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
        func operation() -> String { "attention, layer \(layer)" }  // built only when throwing
        guard layer >= 0, layer < c.layers else {
            throw TensorError.invalidArgument(operation: operation(), detail: "layer outside 0..<\(c.layers)")
        }
        guard queries.columns % d == 0, queries.columns / d % c.keyValueHeads == 0, queries.columns > 0 else {
            throw TensorError.shapeMismatch(operation: operation(),
                                            detail: "query rows of \(queries.columns) floats are not a multiple of \(c.keyValueHeads) heads × \(d)")
        }
        guard output.columns == queries.columns, n >= 0, firstRow >= 0, firstRow + n <= queries.rows, firstRow + n <= output.rows,
              firstPosition >= 0 else {
            throw TensorError.shapeMismatch(operation: operation(), detail: "\(n) rows, queries \(queries.rows)×\(queries.columns), output \(output.rows)×\(output.columns)")
        }
        if let window, window < 1 { throw TensorError.invalidArgument(operation: operation(), detail: "window \(window) must be ≥ 1") }
        let table = try cache.blockTable(of: sequence)
        guard firstPosition + n <= table.count * c.blockSize else {
            throw KVCacheError.positionOutOfRange(sequence: sequence.rawValue, position: firstPosition + n - 1, length: table.count * c.blockSize)
        }
        guard n > 0 else { return }
        let group = queries.columns / d / c.keyValueHeads
        let tiles = (n + queryTile - 1) / queryTile
        let scratchCount = queryTile * group * (d + 2) + c.blockSize * (group + 2 * d)
        let attentionScale = scale ?? 1 / Float(d).squareRoot()
        let kvType: Int32 = c.elementType == .q8_0 ? 2 : c.elementType == .f16 ? 1 : 0
        let scratch = try context.perThreadScratch(bytes: scratchCount * MemoryLayout<Float>.stride)
        // Split-K: when a decode step's (KV head × query tile) tasks cannot keep every thread
        // busy twice over (MQA, few KV heads, many cores) and the context is long, each head's
        // blocks are split into segments computed in parallel and merged afterwards.
        // Only the blocks a sliding window leaves visible to the first row are divided.
        let firstBlock = window.map { max(0, firstPosition - $0 + 1) / c.blockSize } ?? 0
        let visibleBlocks = (firstPosition + n - 1) / c.blockSize + 1 - firstBlock
        let threads = context.threadCount
        var segments = 1
        if tiles == 1 && c.keyValueHeads * tiles < 2 * threads && visibleBlocks >= 2 * minimumSegmentBlocks {
            segments = min((2 * threads + c.keyValueHeads - 1) / c.keyValueHeads, visibleBlocks / minimumSegmentBlocks)
        }
        let partialFloats = n * group * (d + 2)
        let partials = segments > 1
            ? try context.sharedScratch(bytes: c.keyValueHeads * segments * partialFloats * MemoryLayout<Float>.stride)
                .bindMemory(to: Float.self, capacity: c.keyValueHeads * segments * partialFloats)
            : nil
        // Int is Int64 on every platform Quill builds for, so the table goes to C without a copy.
        table.withUnsafeBufferPointer { $0.withMemoryRebound(to: Int64.self) { blockTable in
            let job = AttentionJob(queries: queries.pointer, output: output.pointer, rowStride: Int64(queries.columns),
                                   firstRow: firstRow, rows: n, firstPosition: firstPosition, tiles: tiles, group: group,
                                   headDimension: d, keys: cache.run(block: 0, layer: layer, head: 0, values: false),
                                   values: cache.run(block: 0, layer: layer, head: 0, values: true),
                                   headBytes: cache.run(block: 0, layer: 0, head: 1, values: false) - cache.run(block: 0, layer: 0, head: 0, values: false),
                                   runBytes: Int64(c.runBytes), blockTable: blockTable.baseAddress!, blockSize: Int64(c.blockSize),
                                   window: Int64(window ?? 0), scale: attentionScale, kvType: kvType, scratch: scratch,
                                   segments: segments, firstBlock: firstBlock, visibleBlocks: visibleBlocks, partials: partials,
                                   partialFloats: partialFloats)
            if segments > 1 {
                context.pool.parallelFor(c.keyValueHeads * segments, job: job) { job, task in
                    PagedAttention.segmentTask(job!.assumingMemoryBound(to: AttentionJob.self).pointee, Int(task))
                }
                for head in 0..<c.keyValueHeads {
                    let offset = firstRow * queries.columns + head * group * d
                    quill_attention_combine(partials! + head * segments * partialFloats, Int64(segments), Int64(n * group),
                                            Int64(group), Int64(d), output.pointer + offset, Int64(queries.columns))
                }
                return
            }
            context.pool.parallelFor(c.keyValueHeads * tiles, job: job) { job, task in
                let job = job!.assumingMemoryBound(to: AttentionJob.self).pointee
                let head = Int(task) / job.tiles, tile = Int(task) % job.tiles
                let first = tile * PagedAttention.queryTile, count = min(PagedAttention.queryTile, job.rows - first)
                let offset = (job.firstRow + first) * Int(job.rowStride) + head * job.group * job.headDimension
                quill_attention_paged(job.queries + offset, job.output + offset, job.rowStride, Int64(count), Int64(job.group),
                                      Int64(job.headDimension), job.keys + head * job.headBytes, job.values + head * job.headBytes,
                                      job.runBytes, job.blockTable, job.blockSize, Int64(job.firstPosition + first), job.window,
                                      job.scale, job.kvType,
                                      job.scratch[ThreadPool.currentThreadIndex]!.assumingMemoryBound(to: Float.self))
            }
        } }
    }

    /// Blocks per split-K segment at least: shorter ones cost more to merge than they save.
    static let minimumSegmentBlocks = 16

    /// One split-K task: segment `task % segments` of KV head `task / segments`'s blocks, for
    /// all the step's rows (one query tile), into its slot of the partials.
    private static func segmentTask(_ job: AttentionJob, _ task: Int) {
        let head = task / job.segments, segment = task % job.segments
        let begin = job.firstBlock + segment * job.visibleBlocks / job.segments
        let end = job.firstBlock + (segment + 1) * job.visibleBlocks / job.segments
        let offset = job.firstRow * Int(job.rowStride) + head * job.group * job.headDimension
        quill_attention_paged_partial(job.queries + offset, job.rowStride, Int64(job.rows), Int64(job.group), Int64(job.headDimension),
                                      job.keys + head * job.headBytes, job.values + head * job.headBytes, job.runBytes,
                                      job.blockTable, job.blockSize, Int64(job.firstPosition), job.window, job.scale, job.kvType,
                                      job.scratch[ThreadPool.currentThreadIndex]!.assumingMemoryBound(to: Float.self),
                                      Int64(begin), Int64(end), job.partials! + task * job.partialFloats)
    }

    /// What an attention task reads: everything by value, so the task captures nothing.
    private struct AttentionJob {
        var queries: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>, rowStride: Int64
        var firstRow: Int, rows: Int, firstPosition: Int, tiles: Int, group: Int, headDimension: Int
        /// Layer `layer`'s key and value runs of head 0 in block 0; head h is h × headBytes on.
        var keys: UnsafeMutableRawPointer, values: UnsafeMutableRawPointer, headBytes: Int
        var runBytes: Int64, blockTable: UnsafePointer<Int64>, blockSize: Int64, window: Int64
        var scale: Float, kvType: Int32
        var scratch: UnsafePointer<UnsafeMutableRawPointer?>
        /// Split-K: segments per head (1: off), the blocks they divide (from `firstBlock`),
        /// and each task's partial results ([head][segment][rows × group][d + 2]).
        var segments: Int, firstBlock: Int, visibleBlocks: Int, partials: UnsafeMutablePointer<Float>?, partialFloats: Int
    }
}
