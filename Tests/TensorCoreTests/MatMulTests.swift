import CQuillKernels
import Testing
@testable import TensorCore

/// Every matmul path (GEMV micro-kernels, the sgemm path over dequantized tiles) against a
/// float64 reference computed from the dequantized weights, over shapes that exercise the
/// 4-row and 8/16-lane remainders.
@Suite struct MatMulTests {
    static let floatShapes: [(n: Int, k: Int)] = [(1, 1), (3, 7), (4, 8), (5, 15), (9, 16), (17, 17), (6, 33), (13, 100), (8, 256), (9, 1100), (6, 2100), (5, 4200)]  // 5 rows: a group of four and one row alone
    static let quantizedShapes: [(n: Int, k: Int)] = [(1, 32), (3, 64), (4, 96), (5, 160), (17, 512), (9, 32)]

    /// Q4_0x8 and Q8_0x8 interleave groups of eight rows: their tests round row counts up to a multiple of 8.
    static func rows(_ n: Int, _ type: ElementType) -> Int { type.isInterleaved ? (n + 7) / 8 * 8 : n }

    func weight(_ type: ElementType, n: Int, k: Int, seed: UInt64) throws -> Tensor {
        try Tensor(name: "w", shape: [n, k], values: randomFloats(n * k, seed: seed)).converted(to: type)
    }

    func check(type: ElementType, n: Int, k: Int, m: Int, context: ComputeContext, seed: UInt64) throws {
        let w = try weight(type, n: n, k: k, seed: seed)
        let inputValues = randomFloats(m * k, seed: seed + 1, scale: 2)
        let input = try FloatBuffer(rows: m, columns: k, values: inputValues)
        let output = try FloatBuffer(rows: m + 1, columns: n)  // one spare row must stay untouched
        output.row(m).update(repeating: 42, count: n)
        try Kernels.matmul(weight: w, input: input, rows: m, output: output, context: context)
        let dequantized = w.floats()
        let usesQuantizedActivations = type.isQuantized && !Kernels.usesSgemm(rows: m, type: type, path: .automatic)
        for i in 0..<m {
            var x = Array(inputValues[i * k..<(i + 1) * k])
            if usesQuantizedActivations { x = quantizedActivation(x) }
            let reference = referenceMatVec(dequantized, rows: n, columns: k, x)
            for r in 0..<n {
                let error = abs(Double(output[i, r]) - reference.values[r])
                #expect(error <= 1e-5 * reference.magnitudes[r] + 1e-6,
                        "\(type) n=\(n) k=\(k) m=\(m) row \(i) col \(r): \(output[i, r]) vs \(reference.values[r])")
            }
        }
        #expect(output.values(ofRow: m).allSatisfy { $0 == 42 })
    }

    @Test(arguments: [KernelLevel.scalar, .avx2], [ElementType.f32, .f16, .bf16])
    func floatGEMV(level: KernelLevel, type: ElementType) throws {
        let context = try ComputeContext(threads: 1)
        try KernelLevel.withThreadLevel(level) {
            for (index, shape) in Self.floatShapes.enumerated() {
                for m in [1, 3] { try check(type: type, n: shape.n, k: shape.k, m: m, context: context, seed: UInt64(index * 10 + m)) }
            }
        }
    }

    @Test(arguments: [KernelLevel.scalar, .avx2], [ElementType.q8_0, .q4_0, .q4_0x8, .q8_0x8])
    func quantizedGEMV(level: KernelLevel, type: ElementType) throws {
        let context = try ComputeContext(threads: 1)
        try KernelLevel.withThreadLevel(level) {
            for (index, shape) in Self.quantizedShapes.enumerated() {
                for m in [1, 2, 7] {
                    try check(type: type, n: Self.rows(shape.n, type), k: shape.k, m: m, context: context, seed: UInt64(index * 10 + m))
                }
            }
        }
    }

    /// The sgemm path for every type but the interleaved ones, whose integer kernels take any
    /// number of rows (8 and 21 here: several groups of four activation rows and a remainder).
    @Test(arguments: ElementType.allCases)
    func gemmPathOverDequantizedTiles(type: ElementType) throws {
        #expect(Kernels.usesSgemm(rows: 8, type: type, path: .automatic) == !type.isInterleaved)
        let context = try ComputeContext(threads: 1)
        let k = type.isQuantized ? 64 : 37
        // 300 rows span three 128-row tiles, the last one partial.
        try check(type: type, n: Self.rows(300, type), k: k, m: 8, context: context, seed: 99)
        try check(type: type, n: Self.rows(5, type), k: k, m: 21, context: context, seed: 98)
    }

    /// The F16/BF16 GEMM kernel called directly, on both levels: weight rows from r0 on
    /// (partial 16-row panels), k across its 256-column blocks and 8-column groups, activation
    /// rows across its groups of six and four (7 = 4 + 3, 8 = 4 + 4, 14 = 6 + 4 + 4) and past
    /// one 240-row block (245), a strided output. Each row equals the same row computed
    /// alone, and nothing outside the requested block is written.
    @Test(arguments: [KernelLevel.scalar, .avx2], [ElementType.f16, .bf16])
    func halfGemmKernel(level: KernelLevel, type: ElementType) throws {
        let pack = UnsafeMutableRawPointer.allocate(byteCount: Int(quill_gemm_half_pack_floats()) * 4, alignment: 64)
        defer { pack.deallocate() }
        let packFloats = pack.bindMemory(to: Float.self, capacity: Int(quill_gemm_half_pack_floats()))
        try KernelLevel.withThreadLevel(level) {
            for (index, (n, k)) in [(1, 1), (16, 8), (17, 9), (40, 255), (33, 257), (21, 600)].enumerated() {
                let w = try weight(type, n: n, k: k, seed: UInt64(500 + index))
                let dequantized = w.floats()
                let r0 = n > 16 ? 3 : 0, ys = n + 2
                for m in [1, 3, 5, 6, 7, 8, 11, 13, 14, 245] {
                    let x = randomFloats(m * k, seed: UInt64(600 + index * 10 + m), scale: 2)
                    var y = [Float](repeating: 7, count: m * ys)
                    x.withUnsafeBufferPointer { x in
                        y.withUnsafeMutableBufferPointer { y in
                            quill_gemm_half(type == .bf16 ? 1 : 0, w.rawPointer, Int64(w.rowStride), x.baseAddress, Int64(k),
                                            y.baseAddress, Int64(ys), Int64(r0), Int64(n), Int64(m), packFloats)
                        }
                    }
                    for i in 0..<m {
                        let reference = referenceMatVec(dequantized, rows: n, columns: k, Array(x[i * k..<(i + 1) * k]))
                        for r in 0..<ys {
                            let value = y[i * ys + r]
                            guard r >= r0, r < n else {
                                #expect(value == 7, "\(type) n=\(n) k=\(k) m=\(m): column \(r) outside the block was written")
                                continue
                            }
                            #expect(abs(Double(value) - reference.values[r]) <= 1e-5 * reference.magnitudes[r] + 1e-6,
                                    "\(type) \(level) n=\(n) k=\(k) m=\(m) row \(i) col \(r): \(value) vs \(reference.values[r])")
                        }
                        var alone = [Float](repeating: 0, count: ys)
                        x.withUnsafeBufferPointer { x in
                            alone.withUnsafeMutableBufferPointer { a in
                                quill_gemm_half(type == .bf16 ? 1 : 0, w.rawPointer, Int64(w.rowStride), x.baseAddress! + i * k,
                                                Int64(k), a.baseAddress, Int64(ys), Int64(r0), Int64(n), 1, packFloats)
                            }
                        }
                        #expect(Array(alone[r0..<n]) == Array(y[i * ys + r0..<i * ys + n]), "\(type) n=\(n) k=\(k) m=\(m) row \(i)")
                    }
                }
            }
        }
    }

    @Test(arguments: ElementType.allCases)
    func parallelPathsMatchReference(type: ElementType) throws {
        let context = try ComputeContext(threads: 2)
        for m in [1, 5, 8, 19] {
            try check(type: type, n: Self.rows(1001, type), k: 128, m: m, context: context, seed: UInt64(m))
        }
    }

    /// Several rows through the row-wise path give each row exactly what it gets alone (the
    /// scheduler's batch invariance), including Q4_0's fused multi-row kernel with its
    /// groups of four and odd block counts.
    @Test(arguments: [KernelLevel.scalar, .avx2], ElementType.allCases)
    func rowwiseRowsEqualSingleRows(level: KernelLevel, type: ElementType) throws {
        let context = try ComputeContext(threads: 1)  // the kernel level is per thread
        try KernelLevel.withThreadLevel(level) {
            // Float weight rows go in groups of four, the one or three rows past the last group
            // (37 and 43 rows) alone; 100, 4136 and 8200 columns leave the pair kernel scalar
            // and 8-column tails.
            let floatOnly = type.isQuantized ? [] : [100, 4136, 8200]
            // From 4 activation rows on, float kernels take three weight rows at a time against
            // groups of four activation rows in blocks of at most 16 (7, 9 and 10 rows leave
            // 3, 1 and 2 over; 20 rows are two blocks of 10); 43 weight rows leave 12 triples
            // and 2 pairs, 37 rows 12 triples and no pair.
            let shapes = type.isQuantized ? [(Self.rows(37, type), 9)] : [(37, 20), (43, 10)]
            let cases = ([32, 96, 160, 256, 2080, 4128] + floatOnly).flatMap { k in shapes.map { (k, $0.0, $0.1) } }
            for (index, (k, n, m)) in cases.enumerated() {
                let w = try weight(type, n: n, k: k, seed: UInt64(200 + index))
                let input = try FloatBuffer(rows: m, columns: k, values: randomFloats(m * k, seed: UInt64(300 + index), scale: 2))
                let alone = try FloatBuffer(rows: m, columns: n)
                for i in 0..<m {
                    try Kernels.matmul(weight: w, input: input, rows: i..<i + 1, output: alone, path: .rowwise, context: context)
                }
                for rows in type.isQuantized ? [m] : [4, 7, 8, 9, m] {
                    let together = try FloatBuffer(rows: m, columns: n)
                    try Kernels.matmul(weight: w, input: input, rows: 0..<rows, output: together, path: .rowwise, context: context)
                    for i in 0..<rows {
                        #expect(together.values(ofRow: i) == alone.values(ofRow: i), "\(type) k=\(k) n=\(n) m=\(rows) row \(i)")
                    }
                }
            }
        }
    }

    /// Several weights sharing an input in one call (q/k/v, gate/up) give exactly what
    /// separate calls give, on the fused GEMV path (1 and 3 rows, row-wise 9) and on the
    /// paths that fall back to one call per weight (GEMM rows, mixed types, five weights).
    @Test(arguments: ElementType.allCases)
    func fusedWeightsEqualSeparateCalls(type: ElementType) throws {
        let context = try ComputeContext(threads: 2)
        let k = 96, counts = [37, 16, 5, 21, 8].map { Self.rows($0, type) }
        let weights = try counts.enumerated().map { try weight(type, n: $1, k: k, seed: UInt64(400 + $0)) }
        let input = try FloatBuffer(rows: 9, columns: k, values: randomFloats(9 * k, seed: 410, scale: 2))
        for (m, path, used) in [(1, Kernels.MatmulPath.automatic, 3), (3, .automatic, 2), (9, .rowwise, 4), (9, .automatic, 3), (3, .automatic, 5)] {
            let fused = try counts.prefix(used).map { try FloatBuffer(rows: 9, columns: $0) }
            try Kernels.matmul(weights: Array(weights.prefix(used)), input: input, rows: 0..<m, outputs: fused, path: path, context: context)
            for j in 0..<used {
                let alone = try FloatBuffer(rows: 9, columns: counts[j])
                try Kernels.matmul(weight: weights[j], input: input, rows: 0..<m, output: alone, path: path, context: context)
                for i in 0..<m { #expect(fused[j].values(ofRow: i) == alone.values(ofRow: i), "\(type) m=\(m) weight \(j) row \(i)") }
            }
        }
        // Mixed element types run one by one, with the same results.
        let mixed = [weights[0], try weight(type == .f32 ? .q8_0 : .f32, n: 7, k: k, seed: 420)]
        let outputs = try [FloatBuffer(rows: 1, columns: counts[0]), FloatBuffer(rows: 1, columns: 7)]
        try Kernels.matmul(weights: mixed, input: input, rows: 0..<1, outputs: outputs, path: .automatic, context: context)
        let alone = try FloatBuffer(rows: 1, columns: 7)
        try Kernels.matmul(weight: mixed[1], input: input, rows: 0..<1, output: alone, path: .automatic, context: context)
        #expect(outputs[1].values(ofRow: 0) == alone.values(ofRow: 0))
        // Bad input throws, naming the weight.
        #expect(throws: TensorError.self) {
            try Kernels.matmul(weights: Array(weights.prefix(2)), input: input, rows: 0..<1, outputs: [outputs[0]], path: .automatic, context: context)
        }
        #expect(throws: TensorError.self) {
            try Kernels.matmul(weights: Array(weights.prefix(2)), input: input, rows: 0..<1, outputs: [outputs[0], outputs[0]],
                               path: .automatic, context: context)
        }
    }


    /// Experts' matrices, each over its own rows of one input, in one grouped call give
    /// exactly what separate calls give: on the GEMV path (decode rows, row-wise), with
    /// rows not starting at 0, more products than one pass holds (several passes), shared
    /// outputs, and on GEMM rows (one call per product).
    @Test(arguments: ElementType.allCases)
    func groupedProductsEqualSeparateCalls(type: ElementType) throws {
        let context = try ComputeContext(threads: 2)
        let k = 160, n = Self.rows(40, type)
        let weights = try (0..<10).map { try weight(type, n: n, k: k, seed: UInt64(500 + $0)) }
        let input = try FloatBuffer(rows: 30, columns: k, values: randomFloats(30 * k, seed: 510, scale: 2))
        let cases: [(ranges: [Range<Int>], path: Kernels.MatmulPath)] = [
            ([1..<2, 3..<4, 2..<3], .automatic),                           // three experts of one decode token each
            ([0..<3, 3..<5, 5..<6, 6..<9, 9..<10], .rowwise),              // batched decode rows
            ((0..<10).map { $0..<$0 + 1 }, .automatic),                    // past one pass's capacity
            ([0..<12, 12..<30], .automatic),                               // prompt rows
        ]
        for (ranges, path) in cases {
            let grouped = try FloatBuffer(rows: 30, columns: n)
            let products = ranges.enumerated().map { Kernels.GroupedProduct(weight: weights[$0], rows: $1, output: grouped) }
            try Kernels.matmul(grouped: products, input: input, path: path, context: context)
            for (j, range) in ranges.enumerated() {
                let alone = try FloatBuffer(rows: 30, columns: n)
                try Kernels.matmul(weight: weights[j], input: input, rows: range, output: alone, path: path, context: context)
                for i in range { #expect(grouped.values(ofRow: i) == alone.values(ofRow: i), "\(type) \(ranges) product \(j) row \(i)") }
            }
        }
        // A product whose rows the input or output lacks throws.
        let short = try FloatBuffer(rows: 2, columns: n)
        #expect(throws: TensorError.self) {
            try Kernels.matmul(grouped: [.init(weight: weights[0], rows: 1..<3, output: short)], input: input, path: .automatic,
                               context: context)
        }
    }
    @Test func quantizedActivationErrorStaysSmallAgainstFloatInput() throws {
        // The int8 activation costs accuracy; bound it against the unquantized dot product.
        let context = try ComputeContext(threads: 1)
        let (n, k) = (64, 1024)
        let floats = randomFloats(n * k, seed: 5)
        let w = try Tensor(name: "w", shape: [n, k], values: floats).converted(to: .q8_0)
        let x = randomFloats(k, seed: 6)
        let input = try FloatBuffer(rows: 1, columns: k, values: x)
        let output = try FloatBuffer(rows: 1, columns: n)
        try Kernels.matmul(weight: w, input: input, rows: 1, output: output, context: context)
        let exact = referenceMatVec(w.floats(), rows: n, columns: k, x)
        for r in 0..<n {
            #expect(abs(Double(output[0, r]) - exact.values[r]) <= 0.01 * exact.magnitudes[r] / Double(k).squareRoot() + 1e-3)
        }
    }

    @Test func shapeMismatchesThrowNamingTheWeight() throws {
        let context = try ComputeContext(threads: 1)
        let w = try Tensor(name: "model.layers.0.mlp.up_proj.weight", shape: [4, 8], values: [Float](repeating: 1, count: 32))
        let badInput = try FloatBuffer(rows: 1, columns: 7)
        let output = try FloatBuffer(rows: 1, columns: 4)
        #expect {
            try Kernels.matmul(weight: w, input: badInput, rows: 1, output: output, context: context)
        } throws: { error in
            "\(error)".contains("up_proj") && "\(error)".contains("7 columns")
        }
        let input = try FloatBuffer(rows: 1, columns: 8)
        #expect(throws: TensorError.self) { try Kernels.matmul(weight: w, input: input, rows: 2, output: output, context: context) }
        #expect(throws: TensorError.self) {
            try Kernels.matmul(weight: w, input: input, rows: 1, output: try FloatBuffer(rows: 1, columns: 5), context: context)
        }
        let threeD = try w.reshaped([2, 2, 8])
        #expect(throws: TensorError.self) { try Kernels.matmul(weight: threeD, input: input, rows: 1, output: output, context: context) }
    }
}
