import Foundation
import Testing
@testable import TensorCore

/// The selective-scan kernel on both paths against a float64 evaluation of Mamba's
/// recurrence (transformers' `slow_forward`), over several tokens, odd channel counts and
/// state sizes that are and are not multiples of the vector width.
@Suite struct SelectiveScanTests {
    @Test(arguments: [KernelLevel.scalar, .avx2], [(inner: 70, states: 16), (inner: 9, states: 8), (inner: 33, states: 5)])
    func scanMatchesAFloat64Reference(level: KernelLevel, shape: (inner: Int, states: Int)) throws {
        let (inner, n, tokens) = (shape.inner, shape.states, 5)
        var random = SeededGenerator(seed: UInt64(inner * 100 + n))
        func values(_ count: Int, _ range: ClosedRange<Float>) -> [Float] {
            (0..<count).map { _ in range.lowerBound + (range.upperBound - range.lowerBound) * Float(random.next() >> 40) / Float(1 << 24) }
        }
        let a = values(inner * n, -2 ... -0.05), dtBias = values(inner, -1...1), d = values(inner, -1...1)
        let delta = try FloatBuffer(rows: tokens, columns: inner), u = try FloatBuffer(rows: tokens, columns: inner)
        let bc = try FloatBuffer(rows: tokens, columns: 3 + 2 * n), z = try FloatBuffer(rows: tokens, columns: 2 * inner)
        let y = try FloatBuffer(rows: tokens, columns: inner)
        for t in 0..<tokens {
            // Softplus's extremes: its linear branch (> 20), just under it, and inputs whose
            // exp is tiny or underflows (log1p must keep them, not round 1 + w to 1).
            let extremes: [Int: Float] = [0: 25, 1: 19.9, 2: -17, 3: -40, 4: -100]
            for (i, v) in values(inner, -3...3).enumerated() { delta.row(t)[i] = t == 1 ? extremes[i] ?? v : v }
            for (i, v) in values(inner, -2...2).enumerated() { u.row(t)[i] = v }
            for (i, v) in values(3 + 2 * n, -1...1).enumerated() { bc.row(t)[i] = v }
            for (i, v) in values(2 * inner, -3...3).enumerated() { z.row(t)[i] = v }
        }
        let initial = values(inner * n, -1...1)
        var h = initial
        try KernelLevel.withThreadLevel(level) {
            try Kernels.selectiveScan(state: &h, a: a, dtBias: dtBias, d: d, delta: delta, bc: bc, bcColumn: 3, u: u, z: z, zColumn: inner,
                                      output: y, rows: 0..<tokens, states: n, context: try ComputeContext(threads: 1))
        }
        var reference = initial.map(Double.init)
        for t in 0..<tokens {
            for ch in 0..<inner {
                let raw = Double(delta.row(t)[ch] + dtBias[ch])
                let step = raw > 20 ? raw : log1p(exp(raw))
                var accumulated = 0.0
                for s in 0..<n {
                    let index = ch * n + s
                    reference[index] = exp(Double(a[index]) * step) * reference[index] + step * Double(bc.row(t)[3 + s]) * Double(u.row(t)[ch])
                    accumulated += reference[index] * Double(bc.row(t)[3 + n + s])
                }
                let gate = Double(z.row(t)[inner + ch]), silu = gate / (1 + exp(-gate))
                let expected = (accumulated + Double(u.row(t)[ch]) * Double(d[ch])) * silu
                #expect(abs(Double(y.row(t)[ch]) - expected) <= 1e-5 * max(1, abs(expected)), "\(level) t \(t) channel \(ch)")
            }
        }
        for (value, expected) in zip(h, reference) { #expect(abs(Double(value) - expected) <= 1e-5 * max(1, abs(expected))) }
        // A state of the wrong size is refused, not read past.
        var short = [Float](repeating: 0, count: 3)
        #expect(throws: TensorError.self) {
            try Kernels.selectiveScan(state: &short, a: a, dtBias: dtBias, d: d, delta: delta, bc: bc, bcColumn: 3, u: u, z: z, zColumn: inner,
                                      output: y, rows: 0..<tokens, states: n, context: try ComputeContext(threads: 1))
        }
    }

    /// A NaN step input stays NaN on both paths (the vector softplus clamps its argument
    /// and would otherwise turn it into a finite step), and leaves the other channels alone.
    @Test(arguments: [KernelLevel.scalar, .avx2])
    func nanStepPropagates(level: KernelLevel) throws {
        let (inner, n) = (8, 16)
        let delta = try FloatBuffer(rows: 1, columns: inner, values: (0..<inner).map { $0 == 3 ? .nan : 0.5 })
        let u = try FloatBuffer(rows: 1, columns: inner, values: [Float](repeating: 1, count: inner))
        let bc = try FloatBuffer(rows: 1, columns: 2 * n, values: [Float](repeating: 0.5, count: 2 * n))
        let z = try FloatBuffer(rows: 1, columns: inner, values: [Float](repeating: 1, count: inner))
        let y = try FloatBuffer(rows: 1, columns: inner)
        var h = [Float](repeating: 0, count: inner * n)
        try KernelLevel.withThreadLevel(level) {
            try Kernels.selectiveScan(state: &h, a: [Float](repeating: -1, count: inner * n), dtBias: [Float](repeating: 0, count: inner),
                                      d: [Float](repeating: 1, count: inner), delta: delta, bc: bc, bcColumn: 0, u: u, z: z, zColumn: 0,
                                      output: y, rows: 0..<1, states: n, context: try ComputeContext(threads: 1))
        }
        let values = y.values(ofRow: 0)
        #expect(values[3].isNaN, "\(level)")
        #expect(values.enumerated().allSatisfy { $0.offset == 3 || $0.element.isFinite }, "\(level)")
    }

    /// The causal depthwise convolution against its definition (taps over the previous
    /// kernel−1 inputs, zeros before the first), in one call or split across calls.
    @Test func causalConvolutionMatchesItsDefinition() throws {
        let (channels, kernel, tokens) = (5, 4, 6)
        var random = SeededGenerator(seed: 11)
        func value() -> Float { Float(random.next() >> 40) / Float(1 << 24) * 2 - 1 }
        let weights = (0..<channels * kernel).map { _ in value() }, bias = (0..<channels).map { _ in value() }
        let input = try FloatBuffer(rows: tokens, columns: 2 * channels)  // x is the first half, as in in_proj's output
        for t in 0..<tokens { for i in 0..<2 * channels { input.row(t)[i] = value() } }
        var expected = [[Double]](repeating: [Double](repeating: 0, count: channels), count: tokens)
        for t in 0..<tokens {
            for ch in 0..<channels {
                var sum = Double(bias[ch])
                for j in 0..<kernel where t - (kernel - 1) + j >= 0 {
                    sum += Double(weights[ch * kernel + j]) * Double(input.row(t - (kernel - 1) + j)[ch])
                }
                expected[t][ch] = sum
            }
        }
        for split in [tokens, 2] {
            let output = try FloatBuffer(rows: tokens, columns: channels)
            var window = [Float](repeating: 0, count: channels * (kernel - 1))
            try Kernels.causalConvolution(input: input, output: output, rows: 0..<split, window: &window, weights: weights, bias: bias, channels: channels)
            try Kernels.causalConvolution(input: input, output: output, rows: split..<tokens, window: &window, weights: weights, bias: bias, channels: channels)
            for t in 0..<tokens {
                for ch in 0..<channels { #expect(abs(Double(output.row(t)[ch]) - expected[t][ch]) <= 1e-6, "split \(split) t \(t) channel \(ch)") }
            }
            // The window holds the last kernel−1 inputs, oldest first.
            #expect(window[0..<(kernel - 1)] == (tokens - kernel + 1..<tokens).map { input.row($0)[0] }[...])
        }
        var window = [Float](repeating: 0, count: 2)  // wrong size
        #expect(throws: TensorError.self) {
            try Kernels.causalConvolution(input: input, output: input, rows: 0..<2, window: &window, weights: weights, bias: bias, channels: channels)
        }
        var good = [Float](repeating: 0, count: channels * (kernel - 1))
        #expect(throws: TensorError.self) {
            try Kernels.causalConvolution(input: input, output: input, rows: 0..<(tokens + 1), window: &good, weights: weights, bias: bias, channels: channels)
        }
    }
}
