import CQuillKernels

/// One sequence's part of a batched attention call: `rows` query rows starting at buffer row
/// `firstRow`, for positions `firstPosition` ..< `firstPosition + rows` of `sequence`.
public struct AttentionRows: Sendable, Equatable {
    /// The sequence whose keys and values the rows attend to.
    public var sequence: SequenceID
    /// The first of the rows in the query and output buffers.
    public var firstRow: Int
    /// Query rows (a prompt chunk, a decode step's 1, or a verification's k + 1).
    public var rows: Int
    /// The position of the first row (the keys of every row's position must be written).
    public var firstPosition: Int

    /// The rows `firstRow ..< firstRow + rows` at positions from `firstPosition` of `sequence`.
    public init(sequence: SequenceID, firstRow: Int, rows: Int, firstPosition: Int) {
        self.sequence = sequence
        self.firstRow = firstRow
        self.rows = rows
        self.firstPosition = firstPosition
    }
}

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
        // On the stack: a decode loop calling this allocates nothing.
        try withUnsafeTemporaryAllocation(of: AttentionRows.self, capacity: 1) { batch in
            batch.initialize(repeating: AttentionRows(sequence: sequence, firstRow: firstRow, rows: n, firstPosition: firstPosition))
            try attend(batch: UnsafeBufferPointer(batch), queries: queries, cache: cache, layer: layer, window: window, scale: scale,
                       output: output, context: context)
        }
    }

    /// Attention for several sequences' rows in one call (a batched decode or prefill step):
    /// every (sequence, key/value head, query tile) is a task of one parallel loop, so threads
    /// stay busy even when each sequence alone has fewer heads than there are cores. Each
    /// sequence's output equals what `attend(queries:rows:...)` gives it alone, bit for bit.
    /// The sequences' row ranges must not overlap.
    public static func attend(batch: [AttentionRows], queries: FloatBuffer, cache: PagedKVCache, layer: Int, window: Int? = nil,
                              scale: Float? = nil, output: FloatBuffer, context: ComputeContext) throws {
        try batch.withUnsafeBufferPointer {
            try attend(batch: $0, queries: queries, cache: cache, layer: layer, window: window, scale: scale, output: output, context: context)
        }
    }

    static func attend(batch: UnsafeBufferPointer<AttentionRows>, queries: FloatBuffer, cache: PagedKVCache, layer: Int, window: Int?,
                       scale: Float?, output: FloatBuffer, context: ComputeContext) throws {
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
        guard output.columns == queries.columns else {
            throw TensorError.shapeMismatch(operation: operation(), detail: "queries \(queries.rows)×\(queries.columns), output \(output.rows)×\(output.columns)")
        }
        if let window, window < 1 { throw TensorError.invalidArgument(operation: operation(), detail: "window \(window) must be ≥ 1") }
        let group = queries.columns / d / c.keyValueHeads
        let threads = context.threadCount
        // Validates every item and sizes the scratch: the block tables the items read and the
        // split-K partials. (Comparisons are written so that no sum can overflow.)
        var tableEntries = 0, partialFloats = 0
        for (index, item) in batch.enumerated() {
            let n = item.rows
            guard n >= 0, item.firstRow >= 0, item.firstRow <= min(queries.rows, output.rows) - n, item.firstPosition >= 0 else {
                throw TensorError.shapeMismatch(operation: operation(), detail: "\(n) rows from row \(item.firstRow), queries \(queries.rows)×\(queries.columns), output \(output.rows)×\(output.columns)")
            }
            for other in batch[..<index] where other.rows > 0 && n > 0
                && other.firstRow < item.firstRow + n && item.firstRow < other.firstRow + other.rows {
                throw TensorError.invalidArgument(operation: operation(), detail: "the rows of \(item.sequence) and \(other.sequence) overlap")
            }
            let length = try cache.blockTable(of: item.sequence).count * c.blockSize
            guard item.firstPosition <= length - n else {
                throw KVCacheError.positionOutOfRange(sequence: item.sequence.rawValue,
                                                      position: item.firstPosition.addingReportingOverflow(n - 1).partialValue, length: length)
            }
            guard n > 0 else { continue }
            tableEntries += (item.firstPosition + n - 1) / c.blockSize + 1
            let plan = Plan(item, blockSize: c.blockSize, window: window, keyValueHeads: c.keyValueHeads, threads: threads)
            if plan.segments > 1 { partialFloats += c.keyValueHeads * plan.segments * n * group * (d + 2) }
        }

        // Per-item plans, then the tables and partials, in one scratch.
        let plans = batch.count, planBytes = (plans * MemoryLayout<Plan>.stride + 63) / 64 * 64
        let scratchBytes = planBytes + tableEntries * 8 + partialFloats * MemoryLayout<Float>.stride
        let shared = try context.sharedScratch(bytes: scratchBytes)
        let plan = shared.bindMemory(to: Plan.self, capacity: plans)
        let tables = (shared + planBytes).bindMemory(to: Int64.self, capacity: tableEntries)
        let partials = (shared + planBytes + tableEntries * 8).bindMemory(to: Float.self, capacity: partialFloats)
        var tasks = 0, tableOffset = 0, partialOffset = 0
        for (index, item) in batch.enumerated() {
            var p = Plan(item, blockSize: c.blockSize, window: window, keyValueHeads: c.keyValueHeads, threads: threads)
            p.firstTask = tasks
            p.table = tables + tableOffset
            p.partials = partials + partialOffset
            if item.rows > 0 {
                // Int is Int64 on every platform Quill builds for: the table's first entries as they are.
                let used = (item.firstPosition + item.rows - 1) / c.blockSize + 1
                try cache.blockTable(of: item.sequence).withUnsafeBufferPointer { table in
                    table.withMemoryRebound(to: Int64.self) { (p.table!).update(from: $0.baseAddress!, count: used) }
                }
                tableOffset += used
                tasks += c.keyValueHeads * (p.segments > 1 ? p.segments : p.tiles)
                if p.segments > 1 { partialOffset += c.keyValueHeads * p.segments * item.rows * group * (d + 2) }
            }
            (plan + index).initialize(to: p)
        }
        guard tasks > 0 else { return }

        let scratchCount = queryTile * group * (d + 2) + c.blockSize * (group + 2 * d)
        let job = AttentionJob(queries: queries.pointer, output: output.pointer, rowStride: Int64(queries.columns), group: group,
                               headDimension: d, keys: cache.run(block: 0, layer: layer, head: 0, values: false),
                               values: cache.run(block: 0, layer: layer, head: 0, values: true),
                               headBytes: cache.run(block: 0, layer: 0, head: 1, values: false) - cache.run(block: 0, layer: 0, head: 0, values: false),
                               runBytes: Int64(c.runBytes), blockSize: Int64(c.blockSize), window: Int64(window ?? 0),
                               scale: scale ?? 1 / Float(d).squareRoot(), kvType: c.elementType == .q8_0 ? 2 : c.elementType == .f16 ? 1 : 0,
                               scratch: try context.perThreadScratch(bytes: scratchCount * MemoryLayout<Float>.stride),
                               plans: UnsafePointer(plan), planCount: plans)
        context.pool.parallelFor(tasks, job: job) { job, task in
            PagedAttention.run(job!.assumingMemoryBound(to: AttentionJob.self).pointee, task: Int(task))
        }
        for index in 0..<plans where plan[index].segments > 1 {
            let p = plan[index], segments = p.segments, floats = p.rows * group * (d + 2)
            for head in 0..<c.keyValueHeads {
                let offset = p.firstRow * queries.columns + head * group * d
                quill_attention_combine(p.partials! + head * segments * floats, Int64(segments), Int64(p.rows * group),
                                        Int64(group), Int64(d), output.pointer + offset, Int64(queries.columns))
            }
        }
    }

    /// Blocks per split-K segment at least: shorter ones cost more to merge than they save.
    static let minimumSegmentBlocks = 16

    /// How one item of a batch is divided into tasks. Split-K: when an item's (KV head ×
    /// query tile) tasks cannot keep every thread busy twice over (MQA, few KV heads, many
    /// cores) and a decode's context is long, each head's blocks are split into segments
    /// computed in parallel and merged afterwards; only the blocks a sliding window leaves
    /// visible are divided. The decision depends on the item and the thread count alone, never
    /// on the rest of the batch, so a sequence's result does not depend on its batch.
    struct Plan {
        var firstRow: Int, rows: Int, firstPosition: Int
        /// Query tiles of `queryTile` rows.
        var tiles: Int
        /// Split-K segments per head (1: off), and the blocks they divide (from `firstBlock`).
        var segments = 1, firstBlock: Int, visibleBlocks: Int
        /// The item's tasks are firstTask ..< firstTask + keyValueHeads × (segments or tiles).
        var firstTask = 0
        /// Its block table (the blocks up to its last position) and split-K partials,
        /// [head][segment][rows × group][d + 2].
        var table: UnsafeMutablePointer<Int64>?, partials: UnsafeMutablePointer<Float>?

        init(_ item: AttentionRows, blockSize: Int, window: Int?, keyValueHeads: Int, threads: Int) {
            firstRow = item.firstRow
            rows = item.rows
            firstPosition = item.firstPosition
            tiles = (item.rows + PagedAttention.queryTile - 1) / PagedAttention.queryTile
            firstBlock = window.map { max(0, item.firstPosition - $0 + 1) / blockSize } ?? 0
            visibleBlocks = item.rows > 0 ? (item.firstPosition + item.rows - 1) / blockSize + 1 - firstBlock : 0
            if tiles == 1 && keyValueHeads < 2 * threads && visibleBlocks >= 2 * PagedAttention.minimumSegmentBlocks {
                segments = min((2 * threads + keyValueHeads - 1) / keyValueHeads, visibleBlocks / PagedAttention.minimumSegmentBlocks)
            }
        }
    }

    /// One task: the plan whose range holds `task`, then one (head, query tile) of it, or
    /// one (head, segment) of a split item into its slot of the partials.
    private static func run(_ job: AttentionJob, task: Int) {
        // The last plan starting at or before `task`. A plan with no rows owns no tasks and
        // starts where the next one does, so the last such plan always has rows.
        var low = 0, high = job.planCount - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if job.plans[middle].firstTask <= task { low = middle } else { high = middle - 1 }
        }
        let p = job.plans[low], local = task - p.firstTask
        let scratch = job.scratch[ThreadPool.currentThreadIndex]!.assumingMemoryBound(to: Float.self)
        if p.segments > 1 {
            let head = local / p.segments, segment = local % p.segments
            let begin = p.firstBlock + segment * p.visibleBlocks / p.segments
            let end = p.firstBlock + (segment + 1) * p.visibleBlocks / p.segments
            let offset = p.firstRow * Int(job.rowStride) + head * job.group * job.headDimension
            quill_attention_paged_partial(job.queries + offset, job.rowStride, Int64(p.rows), Int64(job.group), Int64(job.headDimension),
                                          job.keys + head * job.headBytes, job.values + head * job.headBytes, job.runBytes,
                                          p.table, job.blockSize, Int64(p.firstPosition), job.window, job.scale, job.kvType, scratch,
                                          Int64(begin), Int64(end), p.partials! + local * p.rows * job.group * (job.headDimension + 2))
            return
        }
        let head = local / p.tiles, tile = local % p.tiles
        let first = tile * queryTile, count = min(queryTile, p.rows - first)
        let offset = (p.firstRow + first) * Int(job.rowStride) + head * job.group * job.headDimension
        quill_attention_paged(job.queries + offset, job.output + offset, job.rowStride, Int64(count), Int64(job.group),
                              Int64(job.headDimension), job.keys + head * job.headBytes, job.values + head * job.headBytes,
                              job.runBytes, p.table, job.blockSize, Int64(p.firstPosition + first), job.window, job.scale, job.kvType,
                              scratch)
    }

    /// What an attention task reads: everything by value, so the task captures nothing.
    private struct AttentionJob {
        var queries: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>, rowStride: Int64
        var group: Int, headDimension: Int
        /// Layer `layer`'s key and value runs of head 0 in block 0; head h is h × headBytes on.
        var keys: UnsafeMutableRawPointer, values: UnsafeMutableRawPointer, headBytes: Int
        var runBytes: Int64, blockSize: Int64, window: Int64
        var scale: Float, kvType: Int32
        var scratch: UnsafePointer<UnsafeMutableRawPointer?>
        var plans: UnsafePointer<Plan>, planCount: Int
    }
}
