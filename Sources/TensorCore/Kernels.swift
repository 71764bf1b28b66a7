import CQuillKernels

/// The compute kernels over tensors and activation buffers. Every entry point validates
/// shapes and throws `TensorError` naming the operands; the C kernels behind them trust
/// their arguments.
public enum Kernels {
    /// From this many activation rows on, `matmul` runs a GEMM: sgemm over F32 weights or
    /// dequantized tiles, `quill_gemm_half` for F16/BF16 (see `usesHalfGemm`); below it, the
    /// GEMV kernels once per row (kernels.md: sgemm with one row is 3.5× slower than GEMV,
    /// with 8 rows already 2× faster). Interleaved weights are the exception (see `usesSgemm`).
    public static let gemmThreshold = 8
    /// Weight rows dequantized per sgemm call on the GEMM path.
    public static let gemmTileRows = 128

    /// `output[i, :] = weight · input[i, :]` for the first `rows` rows: a PyTorch `Linear`
    /// without bias. `weight` is [n, k] of any element type, `input` has k columns and
    /// `output` n columns.
    public static func matmul(weight: Tensor, input: FloatBuffer, rows m: Int, output: FloatBuffer,
                              context: ComputeContext) throws {
        try matmul(weight: weight, input: input, rows: 0..<m, output: output, path: .automatic, context: context)
    }

    /// How `matmul` computes a group of rows.
    public enum MatmulPath: Sendable {
        /// GEMV below `gemmThreshold` rows, sgemm from there on (fastest); interleaved
        /// Q4_0 always through its integer kernel, which is faster at every row count.
        case automatic
        /// Always the GEMV kernels, whose result for a row does not depend on the other rows
        /// in the call: batched decode rows then equal solo decode bit for bit (the
        /// scheduler's batch invariance), while each group of weight rows is still read
        /// from memory once for all activation rows.
        case rowwise
    }

    /// Whether `path` computes `rows` activation rows against `type` weights with sgemm.
    /// The interleaved types never do: their integer kernels keep a group of eight weight
    /// rows in L1 for every four activation rows and multiply int8 pairs (maddubs) where
    /// sgemm does one float FMA per product after dequantizing. A 1.1B Q4_0 prompt runs
    /// 1.6-2× faster (model-bench --prompt 128 and 512: 65-73 -> 107-134 tok/s), Q8_0x8
    /// products 1.2-1.7× sgemm's rate (tensorcore-bench, 128 and 512 rows). Row-major Q8_0's
    /// one-row-at-a-time kernel was slower than sgemm (39 vs 65-70 tok/s), so it keeps sgemm.
    static func usesSgemm(rows: Int, type: ElementType, path: MatmulPath) -> Bool {
        rows >= gemmThreshold && path == .automatic && !type.isInterleaved
    }

    /// Validates one product's operands (the error names the weight and what was expected).
    static func check(weight: Tensor, input: FloatBuffer, rows range: Range<Int>, output: FloatBuffer) throws {
        let n = weight.rows, k = weight.columns
        // Built only when an error is thrown: the token loop calls matmul a hundred times a token.
        func operation() -> String { "matmul with '\(weight.name)' \(weight.elementType) \(weight.shape)" }
        guard weight.shape.count == 2 else {
            throw TensorError.shapeMismatch(operation: operation(), detail: "weight must be 2-D")
        }
        guard input.columns == k else {
            throw TensorError.shapeMismatch(operation: operation(), detail: "input has \(input.columns) columns, expected \(k)")
        }
        guard output.columns == n else {
            throw TensorError.shapeMismatch(operation: operation(), detail: "output has \(output.columns) columns, expected \(n)")
        }
        guard range.lowerBound >= 0, range.upperBound <= input.rows, range.upperBound <= output.rows else {
            throw TensorError.shapeMismatch(operation: operation(),
                                            detail: "rows \(range) requested, input has \(input.rows), output \(output.rows)")
        }
    }

    /// `matmul` over the rows `rows` of `input` into the same rows of `output`, by `path`.
    public static func matmul(weight: Tensor, input: FloatBuffer, rows range: Range<Int>, output: FloatBuffer,
                              path: MatmulPath, context: ComputeContext) throws {
        let m = range.count
        let n = weight.rows, k = weight.columns
        try check(weight: weight, input: input, rows: range, output: output)
        guard m > 0, n > 0 else { return }
        guard k > 0 else {
            for i in range { output.row(i).update(repeating: 0, count: n) }
            return
        }
        let x = input.pointer + range.lowerBound * k, y = output.pointer + range.lowerBound * n
        if usesSgemm(rows: m, type: weight.elementType, path: path) {
            try gemm(weight: weight, input: x, rows: m, output: y, context: context)
        } else {
            try gemv(weight: weight, input: x, rows: m, output: y, context: context)
        }
    }

    /// `outputs[j] = weights[j] · input` over `rows` for several weights that share their
    /// input (a layer's q, k and v; an MLP's gate and up). On the GEMV path (few rows, or
    /// `.rowwise`) the matrices run as one parallel pass over all their rows: the threads
    /// meet once instead of once per matrix, and the input is quantized once. Each output
    /// is identical to a separate `matmul`.
    public static func matmul(weights: [Tensor], input: FloatBuffer, rows range: Range<Int>, outputs: [FloatBuffer],
                              path: MatmulPath, context: ComputeContext) throws {
        guard weights.count == outputs.count else {
            throw TensorError.shapeMismatch(operation: "matmul of \(weights.count) weights", detail: "\(outputs.count) outputs")
        }
        guard let first = weights.first else { return }
        let m = range.count, k = first.columns
        let fused = weights.count <= GemvParts.capacity && !usesSgemm(rows: m, type: first.elementType, path: path) && m > 0 && k > 0
            && weights.allSatisfy { $0.elementType == first.elementType && $0.columns == k && $0.rows > 0 }
        guard fused else {
            for (weight, output) in zip(weights, outputs) {
                try matmul(weight: weight, input: input, rows: range, output: output, path: path, context: context)
            }
            return
        }
        var parts = GemvParts()
        for (weight, output) in zip(weights, outputs) {
            try check(weight: weight, input: input, rows: range, output: output)
            parts.append(weight, output.pointer + range.lowerBound * weight.rows, activationRows: 0..<m)
        }
        try gemv(parts, type: first.elementType, k: k, input: input.pointer + range.lowerBound * k, rows: m, context: context)
    }

    /// One matrix of a grouped product (`matmul(grouped:...)`): `weight` times the rows
    /// `rows` of the shared input, written to the same rows of `output`.
    public struct GroupedProduct {
        /// The matrix, [n, k].
        public var weight: Tensor
        /// The rows of the input (and of `output`) it multiplies.
        public var rows: Range<Int>
        /// The output, n columns.
        public var output: FloatBuffer

        /// Products one grouped pass runs together (more run as several passes).
        public static var groupCapacity: Int { GemvParts.capacity }

        /// `weight` times `rows` of the input into `output`.
        public init(weight: Tensor, rows: Range<Int>, output: FloatBuffer) {
            (self.weight, self.rows, self.output) = (weight, rows, output)
        }
    }

    /// Several matrices, each against its own rows of one input: a mixture-of-experts
    /// layer's experts, each over the tokens routed to it. On the GEMV path (few rows, or
    /// `.rowwise`) up to `GemvParts.capacity` of them run as one parallel pass, so the
    /// threads meet once for all the experts instead of once per matrix, and the input
    /// rows are quantized once. Each output equals a separate `matmul` of its product.
    public static func matmul(grouped products: [GroupedProduct], input: FloatBuffer, path: MatmulPath,
                              context: ComputeContext) throws {
        guard let first = products.first else { return }
        let k = first.weight.columns
        let fused = products.count <= GemvParts.capacity && k > 0
            && products.allSatisfy {
                $0.weight.elementType == first.weight.elementType && $0.weight.columns == k && $0.weight.rows > 0
                    && !$0.rows.isEmpty && !usesSgemm(rows: $0.rows.count, type: $0.weight.elementType, path: path)
            }
        guard fused else {
            for product in products {
                try matmul(weight: product.weight, input: input, rows: product.rows, output: product.output, path: path, context: context)
            }
            return
        }
        // The activations quantized (or read) are the rows from the lowest product's first to
        // the highest one's last; each part addresses its rows relative to that base.
        var base = Int.max, top = 0
        for product in products {
            try check(weight: product.weight, input: input, rows: product.rows, output: product.output)
            base = min(base, product.rows.lowerBound)
            top = max(top, product.rows.upperBound)
        }
        var parts = GemvParts()
        for product in products {
            let rows = product.rows.lowerBound - base..<product.rows.upperBound - base
            parts.append(product.weight, product.output.pointer + product.rows.lowerBound * product.weight.rows, activationRows: rows)
        }
        try gemv(parts, type: first.weight.elementType, k: k, input: input.pointer + base * k, rows: top - base, context: context)
    }

    /// One or a few activation rows: the multi-row GEMV micro-kernels, parallel over weight
    /// rows. With several activation rows, each group of 16 weight rows is reused from
    /// cache for every activation row, so weights come from memory once.
    static func gemv(weight: Tensor, input: UnsafeMutablePointer<Float>, rows m: Int,
                     output: UnsafeMutablePointer<Float>, context: ComputeContext) throws {
        var parts = GemvParts()
        parts.append(weight, output, activationRows: 0..<m)
        try gemv(parts, type: weight.elementType, k: weight.columns, input: input, rows: m, context: context)
    }

    /// Up to `GemvParts.capacity` matrices of one element type and width, each against its
    /// own range of the `m` activation rows at `input`, as one parallel pass over all their
    /// weight rows (see `matmul(weights:...)` and `matmul(grouped:...)`).
    static func gemv(_ parts: GemvParts, type: ElementType, k: Int, input: UnsafeMutablePointer<Float>, rows m: Int,
                     context: ComputeContext) throws {
        // Quantized weights are dotted against activations quantized to int8 blocks, laid
        // out per block for Q8_0 and per pair of blocks for Q4_0 (see QuillKernels.h).
        let blocks = k / 32, pairs = (blocks + 1) / 2
        var blockActivations: UnsafeMutablePointer<quill_activation_block>?
        var pairActivations: UnsafeMutablePointer<quill_activation_pair>?
        if type == .q8_0 || type.isInterleaved {
            let raw = try context.quantizedInput.reserve(m * blocks * MemoryLayout<quill_activation_block>.stride)
            let pointer = raw.bindMemory(to: quill_activation_block.self, capacity: m * blocks)
            for i in 0..<m { quill_quantize_activation(input + i * k, Int64(k), pointer + i * blocks) }
            blockActivations = pointer
        } else if type == .q4_0 {
            let raw = try context.quantizedInput.reserve(m * pairs * MemoryLayout<quill_activation_pair>.stride)
            let pointer = raw.bindMemory(to: quill_activation_pair.self, capacity: m * pairs)
            for i in 0..<m { quill_quantize_activation_pairs(input + i * k, Int64(k), pointer + i * pairs) }
            pairActivations = pointer
        }
        // Each matrix in its chunks per thread, as if it ran alone (a row's result depends on
        // where its chunk starts, so this keeps results identical to separate calls): the
        // threads meet after the last chunk of the last matrix, and the idle tail is at most
        // one chunk.
        var parts = parts
        parts.divide(threads: context.threadCount, type: type)
        let job = GemvJob(parts: parts, type: type, input: input, rows: m, k: k,
                          blockActivations: blockActivations, pairActivations: pairActivations)
        let tasks = parts.totalTasks
        context.pool.parallelFor(tasks, job: job) { job, task in
            Kernels.gemvTask(job!.assumingMemoryBound(to: GemvJob.self).pointee, Int(task))
        }
    }

    /// One task: a chunk of one of the matrices.
    private static func gemvTask(_ job: GemvJob, _ task: Int) {
        var task = task
        for index in 0..<job.parts.count {
            let part = job.parts[index]
            if task < part.tasks {
                let begin = task * part.chunk
                gemvRows(job, part, begin, min(part.rows, begin + part.chunk))
                return
            }
            task -= part.tasks
        }
    }

    /// Rows `begin..<end` of one matrix of a GEMV job, for every activation row.
    private static func gemvRows(_ job: GemvJob, _ part: GemvParts.Part, _ begin: Int, _ end: Int) {
        let m = part.activationRows.count, k = job.k, n = part.rows, first = part.activationRows.lowerBound
        let input = job.input + first * k
        let blockActivations = job.blockActivations.map { $0 + first * (k / 32) }
        let pairActivations = job.pairActivations.map { $0 + first * ((k / 32 + 1) / 2) }
        // Interleaved Q4_0 or Q8_0: eight weight rows per block and up to four activation rows at once.
        if job.type == .q4_0x8 {
            quill_gemv_q4_0x8_rows(part.weights, Int64(k), blockActivations!, part.output, Int64(n), Int64(begin), Int64(end), Int64(m))
            return
        }
        if job.type == .q8_0x8 {
            quill_gemv_q8_0x8_rows(part.weights, Int64(k), blockActivations!, part.output, Int64(n), Int64(begin), Int64(end), Int64(m))
            return
        }
        // Quantized weights and several rows: each weight block unpacked once for all rows.
        if job.type == .q4_0 && m > 1 {
            quill_gemv_q4_0_rows(part.weights, part.stride, pairActivations!, Int64(k), part.output, Int64(n),
                                 Int64(begin), Int64(end), Int64(m))
            return
        }
        if job.type == .q8_0 && m > 1 {
            quill_gemv_q8_0_rows(part.weights, part.stride, blockActivations!, Int64(k), part.output, Int64(n),
                                 Int64(begin), Int64(end), Int64(m))
            return
        }
        let w = part.weights, stride = part.stride, r0 = Int64(begin), r1 = Int64(end)
        // Float weights and several rows: each weight row is read once for all of them (once
        // per 16 on the three-row path), in groups of four that start at `begin` as with one
        // row, so the results are the same.
        if m > 1 && (job.type == .f32 || job.type == .f16 || job.type == .bf16) {
            let y = part.output
            switch job.type {
            case .f32: quill_gemv_f32_rows(w, stride, input, Int64(k), y, Int64(n), r0, r1, Int64(m))
            case .f16: quill_gemv_f16_rows(w, stride, input, Int64(k), y, Int64(n), r0, r1, Int64(m))
            default: quill_gemv_bf16_rows(w, stride, input, Int64(k), y, Int64(n), r0, r1, Int64(m))
            }
            return
        }
        for i in 0..<m {
            let x = input + i * k, y = part.output + i * n
            switch job.type {
            case .f32: quill_gemv_f32(w, stride, x, Int64(k), y, r0, r1)
            case .f16: quill_gemv_f16(w, stride, x, Int64(k), y, r0, r1)
            case .bf16: quill_gemv_bf16(w, stride, x, Int64(k), y, r0, r1)
            case .q8_0: quill_gemv_q8_0(w, stride, blockActivations! + i * (k / 32), Int64(k), y, r0, r1)
            case .q4_0: quill_gemv_q4_0(w, stride, pairActivations! + i * ((k / 32 + 1) / 2), Int64(k), y, r0, r1)
            case .q4_0x8, .q8_0x8: break  // handled above
            }
        }
    }

    /// Many activation rows: each thread takes a contiguous slice of weight rows and calls
    /// single-threaded sgemm on it, dequantizing non-F32 weights tile by tile into its own
    /// scratch first.
    static func gemm(weight: Tensor, input: UnsafeMutablePointer<Float>, rows m: Int,
                     output: UnsafeMutablePointer<Float>, context: ComputeContext) throws {
        let n = weight.rows, k = weight.columns
        let threads = context.threadCount
        let part = ((n + threads - 1) / threads + 15) / 16 * 16
        if usesHalfGemm(weight.elementType) {
            try halfGemm(weight: weight, input: input, rows: m, output: output, part: part, context: context)
            return
        }
        let tileRows = gemmTileRows
        // Each thread's tile is reserved here, so an allocation failure throws on the caller
        // (and, once grown, nothing is allocated: batched decode runs through this path).
        let tiles = weight.elementType == .f32 ? nil : try context.perThreadScratch(bytes: tileRows * k * 4)
        let job = GemmJob(weights: weight.rawPointer, rowStride: weight.rowStride, type: weight.elementType, input: input,
                          output: output, rows: m, k: k, n: n, part: part, tileRows: tileRows, tiles: tiles)
        context.pool.parallelFor(threads, job: job) { job, task in
            let job = job!.assumingMemoryBound(to: GemmJob.self).pointee
            let m = job.rows, k = job.k, n = job.n
            let begin = Int(task) * job.part, end = min(n, begin + job.part)
            guard begin < end else { return }
            guard let tiles = job.tiles else {  // F32: straight from the weights
                let w = (job.weights + begin * job.rowStride).assumingMemoryBound(to: Float.self)
                sgemmTransposedB(m: m, n: end - begin, k: k, a: job.input, lda: k, b: w, ldb: k, c: job.output + begin, ldc: n)
                return
            }
            // One task per thread, so the task index picks a tile no other task uses.
            let tile = tiles[Int(task)]!.bindMemory(to: Float.self, capacity: job.tileRows * k)
            var start = begin
            while start < end {
                let stop = min(end, start + job.tileRows)
                quill_dequantize_rows(job.type.kernelCode, job.weights, Int64(job.rowStride), Int64(k), Int64(start), Int64(stop), tile)
                sgemmTransposedB(m: m, n: stop - start, k: k, a: job.input, lda: k, b: tile, ldb: k, c: job.output + start, ldc: n)
                start = stop
            }
        }
    }

    /// Whether `gemm` multiplies `type` weights with `quill_gemm_half` (F16 and BF16 with
    /// AVX2): it converts each weight panel once, into the layout its micro-kernel reads,
    /// where the sgemm path converted 128-row tiles and OpenBLAS then repacked them and all
    /// the activations again for every tile (15% of a 1.1B F16 prompt in perf).
    static func usesHalfGemm(_ type: ElementType) -> Bool {
        (type == .f16 || type == .bf16) && KernelLevel.current == .avx2
    }

    /// `gemm` for F16/BF16 weights: each thread takes `part` weight rows (a multiple of 16,
    /// the kernel's panel) and packs its panels into its own scratch.
    private static func halfGemm(weight: Tensor, input: UnsafeMutablePointer<Float>, rows m: Int,
                                 output: UnsafeMutablePointer<Float>, part: Int, context: ComputeContext) throws {
        let packs = try context.perThreadScratch(bytes: Int(quill_gemm_half_pack_floats()) * 4)
        let job = GemmJob(weights: weight.rawPointer, rowStride: weight.rowStride, type: weight.elementType, input: input,
                          output: output, rows: m, k: weight.columns, n: weight.rows, part: part, tileRows: 0, tiles: packs)
        context.pool.parallelFor(context.threadCount, job: job) { job, task in
            let job = job!.assumingMemoryBound(to: GemmJob.self).pointee
            let begin = Int(task) * job.part, end = min(job.n, begin + job.part)
            guard begin < end, let packs = job.tiles else { return }
            // One task per thread, so the task index picks scratch no other task uses.
            let pack = packs[Int(task)]!.assumingMemoryBound(to: Float.self)
            quill_gemm_half(job.type == .bf16 ? 1 : 0, job.weights, Int64(job.rowStride), job.input, Int64(job.k),
                            job.output, Int64(job.n), Int64(begin), Int64(end), Int64(job.rows), pack)
        }
    }

    /// What a GEMM task reads (the task captures nothing, so nothing is allocated).
    private struct GemmJob {
        var weights: UnsafeRawPointer, rowStride: Int, type: ElementType
        var input: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>
        var rows: Int, k: Int, n: Int, part: Int, tileRows: Int
        /// Per-thread dequantization tiles or panel packs (nil for F32 weights).
        var tiles: UnsafePointer<UnsafeMutableRawPointer?>?
    }

    // MARK: - Row-wise operations on activation buffers

    private static func check(_ operation: String, _ buffers: [FloatBuffer], rows: Int, columns: Int) throws {
        for buffer in buffers {
            guard buffer.columns == columns, rows >= 0, rows <= buffer.rows else {
                throw TensorError.shapeMismatch(operation: operation,
                                                detail: "buffer \(buffer.rows)×\(buffer.columns) cannot hold \(rows)×\(columns)")
            }
        }
    }

    /// RMSNorm of each of the first `rows` rows: (x · rsqrt(mean(x²) + eps)) · weight.
    public static func rmsNorm(_ input: FloatBuffer, weight: [Float], epsilon: Float, rows: Int, output: FloatBuffer) throws {
        try check("rmsNorm", [input, output], rows: rows, columns: weight.count)
        guard !weight.isEmpty else { return }
        weight.withUnsafeBufferPointer { w in
            for i in 0..<rows {
                quill_rmsnorm(input.row(i), w.baseAddress!, output.row(i), Int64(weight.count), epsilon)
            }
        }
    }

    /// output = silu(gate) · up, elementwise over the first `rows` rows.
    public static func swiglu(gate: FloatBuffer, up: FloatBuffer, rows: Int, output: FloatBuffer) throws {
        try check("swiglu", [gate, up, output], rows: rows, columns: gate.columns)
        quill_swiglu(gate.pointer, up.pointer, output.pointer, Int64(rows * gate.columns))
    }

    /// output = x / (1 + e^-x) over the first `rows` rows.
    public static func silu(_ input: FloatBuffer, rows: Int, output: FloatBuffer) throws {
        try check("silu", [input, output], rows: rows, columns: input.columns)
        quill_silu(input.pointer, output.pointer, Int64(rows * input.columns))
    }

    /// GELU over the first `rows` rows: exact (erf) or PyTorch's tanh approximation.
    public static func gelu(_ input: FloatBuffer, rows: Int, approximateTanh: Bool = false, output: FloatBuffer) throws {
        try check("gelu", [input, output], rows: rows, columns: input.columns)
        let count = Int64(rows * input.columns)
        if approximateTanh { quill_gelu_tanh(input.pointer, output.pointer, count) }
        else { quill_gelu(input.pointer, output.pointer, count) }
    }

    /// output = a + b over the first `rows` rows (output may alias a or b).
    public static func add(_ a: FloatBuffer, _ b: FloatBuffer, rows: Int, output: FloatBuffer) throws {
        try check("add", [a, b, output], rows: rows, columns: a.columns)
        quill_add(a.pointer, b.pointer, output.pointer, Int64(rows * a.columns))
    }

    /// output = a · b elementwise over the first `rows` rows (output may alias a or b).
    public static func multiply(_ a: FloatBuffer, _ b: FloatBuffer, rows: Int, output: FloatBuffer) throws {
        try check("multiply", [a, b, output], rows: rows, columns: a.columns)
        quill_mul(a.pointer, b.pointer, output.pointer, Int64(rows * a.columns))
    }

    /// Adds `bias` to each of the first `rows` rows of `buffer`, in place.
    public static func addBias(_ buffer: FloatBuffer, bias: [Float], rows: Int) throws {
        guard !bias.isEmpty else { return }  // a layer without bias
        try check("addBias", [buffer], rows: rows, columns: bias.count)
        bias.withUnsafeBufferPointer { b in
            for i in 0..<rows { quill_add(buffer.row(i), b.baseAddress!, buffer.row(i), Int64(bias.count)) }
        }
    }

    /// Softmax of each of the first `rows` rows, in place.
    public static func softmax(_ buffer: FloatBuffer, rows: Int) throws {
        try check("softmax", [buffer], rows: rows, columns: buffer.columns)
        guard buffer.columns > 0 else { return }
        for i in 0..<rows { quill_softmax(buffer.row(i), Int64(buffer.columns)) }
    }

    /// Index of the largest value (the first one on ties); nil for an empty array.
    public static func argmax(_ values: UnsafeBufferPointer<Float>) -> Int? {
        guard let base = values.baseAddress, values.count > 0 else { return nil }
        return Int(quill_argmax(base, Int64(values.count)))
    }

    /// The `k` largest values with their indices, largest first (ties: lower index first).
    public static func topK(_ values: UnsafeBufferPointer<Float>, k: Int) -> [(index: Int, value: Float)] {
        guard let base = values.baseAddress, k > 0, values.count > 0 else { return [] }
        let wanted = min(k, values.count)
        var indices = [Int64](repeating: 0, count: wanted)
        var top = [Float](repeating: 0, count: wanted)
        let written = Int(quill_top_k(base, Int64(values.count), Int64(wanted), &indices, &top))
        return (0..<written).map { (Int(indices[$0]), top[$0]) }
    }
}
