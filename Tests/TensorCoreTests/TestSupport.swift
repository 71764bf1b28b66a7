import CQuillKernels
import Foundation
import TensorCore

/// A small deterministic generator (SplitMix64) so every test run sees the same data.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func randomFloats(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var generator = SeededGenerator(seed: seed)
    return (0..<count).map { _ in Float.random(in: -scale...scale, using: &generator) }
}

let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

func loadFixture(_ name: String) throws -> [String: Any] {
    let data = try Data(contentsOf: fixturesDirectory.appendingPathComponent(name))
    return try JSONSerialization.jsonObject(with: data) as! [String: Any]
}

func hexBytes(_ hex: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        bytes.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return bytes
}

func doubles(_ any: Any?) -> [Double] { (any as! [Any]).map { ($0 as! NSNumber).doubleValue } }

/// The activation exactly as the quantized GEMV kernels see it: quantized to int8 blocks
/// and scaled back, so a float64 dot with it is the kernels' exact reference.
func quantizedActivation(_ x: [Float]) -> [Float] {
    var blocks = [quill_activation_block](repeating: quill_activation_block(), count: x.count / 32)
    quill_quantize_activation(x, Int64(x.count), &blocks)
    return (0..<x.count).map { i in
        withUnsafeBytes(of: blocks[i / 32]) { raw in
            Float(raw.load(fromByteOffset: i % 32, as: Int8.self)) * raw.load(fromByteOffset: 32, as: Float.self)
        }
    }
}

/// Double-precision y = W x over dequantized rows.
func referenceMatVec(_ weights: [Float], rows: Int, columns: Int, _ x: [Float]) -> (values: [Double], magnitudes: [Double]) {
    var values = [Double](repeating: 0, count: rows), magnitudes = values
    for r in 0..<rows {
        var sum = 0.0, magnitude = 0.0
        for c in 0..<columns {
            let product = Double(weights[r * columns + c]) * Double(x[c])
            sum += product
            magnitude += abs(product)
        }
        values[r] = sum
        magnitudes[r] = magnitude
    }
    return (values, magnitudes)
}
