import Foundation
import Testing
@testable import TensorCore

@Suite struct OpsTests {
    static let lengths = [1, 7, 8, 9, 64, 1000]

    func compare(_ actual: [Float], _ expected: [Double], relative: Double, absolute: Double, _ label: String) {
        #expect(actual.count == expected.count)
        for i in actual.indices {
            #expect(abs(Double(actual[i]) - expected[i]) <= relative * abs(expected[i]) + absolute,
                    "\(label)[\(i)]: \(actual[i]) vs \(expected[i])")
        }
    }

    @Test(arguments: [KernelLevel.scalar, .avx2])
    func rmsNorm(level: KernelLevel) throws {
        for n in Self.lengths {
            let x = randomFloats(3 * n, seed: UInt64(n), scale: 4), w = randomFloats(n, seed: UInt64(n) + 1)
            let input = try FloatBuffer(rows: 3, columns: n, values: x), output = try FloatBuffer(rows: 3, columns: n)
            try KernelLevel.withThreadLevel(level) { try Kernels.rmsNorm(input, weight: w, epsilon: 1e-5, rows: 3, output: output) }
            var expected: [Double] = []
            for r in 0..<3 {
                let row = x[r * n..<(r + 1) * n].map(Double.init)
                let inverse = 1 / (row.map { $0 * $0 }.reduce(0, +) / Double(n) + 1e-5).squareRoot()
                expected += row.indices.map { row[$0] * inverse * Double(w[$0 - row.startIndex]) }
            }
            compare(output.values(), expected, relative: 2e-6, absolute: 1e-7, "rmsNorm n=\(n)")
        }
    }

    @Test(arguments: [KernelLevel.scalar, .avx2])
    func activations(level: KernelLevel) throws {
        var values = randomFloats(997, seed: 3, scale: 20)
        values += [-100, -88.5, -87, -30, -1e-6, 0, 1e-6, 30, 87, 100]
        let n = values.count
        let input = try FloatBuffer(rows: 1, columns: n, values: values), up = try FloatBuffer(rows: 1, columns: n, values: randomFloats(n, seed: 4))
        let output = try FloatBuffer(rows: 1, columns: n)
        let x = values.map(Double.init)
        let silu = x.map { $0 / (1 + exp(-$0)) }
        try KernelLevel.withThreadLevel(level) {
            try Kernels.silu(input, rows: 1, output: output)
            compare(output.values(), silu, relative: 3e-6, absolute: 1e-30, "silu")
            try Kernels.swiglu(gate: input, up: up, rows: 1, output: output)
            compare(output.values(), silu.indices.map { silu[$0] * Double(up[0, $0]) }, relative: 4e-6, absolute: 1e-30, "swiglu")
            try Kernels.gelu(input, rows: 1, output: output)
            compare(output.values(), x.map { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) }, relative: 3e-6, absolute: 1e-7, "gelu")
            try Kernels.gelu(input, rows: 1, approximateTanh: true, output: output)
            let c = (2 / Double.pi).squareRoot()
            compare(output.values(), x.map { 0.5 * $0 * (1 + tanh(c * ($0 + 0.044715 * $0 * $0 * $0))) },
                    relative: 3e-6, absolute: 1e-7, "gelu_tanh")
        }
    }

    @Test(arguments: [KernelLevel.scalar, .avx2])
    func softmax(level: KernelLevel) throws {
        for n in Self.lengths {
            let values = randomFloats(n, seed: UInt64(n) + 9, scale: 30).map { $0 + 1000 }  // large offset: must subtract max
            let buffer = try FloatBuffer(rows: 1, columns: n, values: values)
            try KernelLevel.withThreadLevel(level) { try Kernels.softmax(buffer, rows: 1) }
            let maximum = values.map(Double.init).max()!
            let exps = values.map { exp(Double($0) - maximum) }, total = exps.reduce(0, +)
            compare(buffer.values(), exps.map { $0 / total }, relative: 5e-6, absolute: 1e-12, "softmax n=\(n)")
        }
    }

    @Test func elementwise() throws {
        let a = randomFloats(37, seed: 1), b = randomFloats(37, seed: 2)
        let x = try FloatBuffer(rows: 1, columns: 37, values: a), y = try FloatBuffer(rows: 1, columns: 37, values: b)
        let out = try FloatBuffer(rows: 1, columns: 37)
        try Kernels.add(x, y, rows: 1, output: out)
        #expect(out.values() == zip(a, b).map { $0 + $1 })
        try Kernels.multiply(x, y, rows: 1, output: out)
        #expect(out.values() == zip(a, b).map { $0 * $1 })
        #expect(throws: TensorError.self) { try Kernels.add(x, try FloatBuffer(rows: 1, columns: 36), rows: 1, output: out) }
        #expect(throws: TensorError.self) { try Kernels.add(x, y, rows: 2, output: out) }
    }

    @Test func emptyShapesDoNotTrap() throws {
        let empty = try FloatBuffer(rows: 0, columns: 4, values: [])
        let none = try FloatBuffer(rows: 2, columns: 0, values: [])
        try Kernels.rmsNorm(none, weight: [], epsilon: 1e-5, rows: 2, output: none)
        try Kernels.softmax(none, rows: 2)
        try Kernels.add(empty, empty, rows: 0, output: empty)
        #expect(empty.values().isEmpty && none.values().isEmpty)
    }

    @Test func argmaxAndTopK() {
        var values = randomFloats(5000, seed: 21)
        values[1234] = 5
        values[4000] = 5  // a tie: the lower index wins
        values.withUnsafeBufferPointer { buffer in
            #expect(Kernels.argmax(buffer) == 1234)
            for k in [1, 2, 10, 257] {
                let top = Kernels.topK(buffer, k: k)
                let expected = values.indices.sorted { values[$0] > values[$1] || (values[$0] == values[$1] && $0 < $1) }.prefix(k)
                #expect(top.map(\.index) == Array(expected), "k=\(k)")
                #expect(top.map(\.value) == expected.map { values[$0] })
            }
            #expect(Kernels.topK(buffer, k: 6000).count == 5000)
        }
        [Float]().withUnsafeBufferPointer { #expect(Kernels.argmax($0) == nil) }
    }
}
