import Foundation
import CQuillKernels
import Testing
@testable import TensorCore

@Suite struct QuantizationTests {
    let fixture: [String: Any]
    let input: [Float]

    init() throws {
        fixture = try loadFixture("quantization.json")
        input = doubles(fixture["input"]).map(Float.init)
    }

    @Test(arguments: [ElementType.q8_0, .q4_0])
    func bytesEqualGGMLReference(type: ElementType) throws {
        let expected = hexBytes(fixture[type.rawValue] as! String)
        let bytes = try Quantization.encode(input, as: type)
        #expect(bytes.count == expected.count)
        let firstDifference = zip(bytes, expected).enumerated().first { $0.element.0 != $0.element.1 }
        #expect(firstDifference == nil, "first differing byte at \(firstDifference?.offset ?? -1) (block \((firstDifference?.offset ?? 0) / type.blockBytes))")
    }

    @Test(arguments: [ElementType.q8_0, .q4_0], [KernelLevel.scalar, .avx2])
    func dequantizeEqualsGGMLReference(type: ElementType, level: KernelLevel) throws {
        let expected = doubles(fixture[type.rawValue + "_dequantized"])
        let values = try KernelLevel.withThreadLevel(level) {
            try Quantization.decode(hexBytes(fixture[type.rawValue] as! String), as: type, count: input.count)
        }
        // ggml multiplies in float32; the gguf package in float64: compare after rounding.
        for i in values.indices { #expect(values[i] == Float(expected[i]), "element \(i)") }
    }

    @Test(arguments: [KernelLevel.scalar, .avx2])
    func halfPrecisionRoundsToNearestEven(level: KernelLevel) throws {
        try KernelLevel.withThreadLevel(level) {
            let expected = (fixture["f16_bits"] as! [Int]).map(UInt16.init)
            let bytes = try Quantization.encode(input, as: .f16)
            let bits = bytes.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
            #expect(bits == expected)
            let specials: [Float] = (fixture["f16_special_input"] as! [Any]).map {
                if let text = $0 as? String { return text.hasPrefix("-") ? -Float.infinity : Float.infinity }
                return ($0 as! NSNumber).floatValue
            }
            let specialBits = try Quantization.encode(specials, as: .f16).withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
            #expect(specialBits == (fixture["f16_special_bits"] as! [Int]).map(UInt16.init))
            // Every NaN, payload or sign, becomes the canonical quiet NaN with its sign, in
            // the eight-wide path and the tail alike.
            let nans: [Float] = (0..<11).map { (i: Int) -> Float in
                let sign: UInt32 = i % 2 == 0 ? 0x7F80_0000 : 0xFF80_0000
                return Float(bitPattern: sign | UInt32(1 + i * 0x1F_0F01) & 0x7F_FFFF)
            }
            let nanBits = try Quantization.encode(nans + [1, 2, 3, 4, 5], as: .f16).withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
            let canonical: [UInt16] = (0..<11).map { $0 % 2 == 0 ? 0x7E00 : 0xFE00 }
            #expect(Array(nanBits.prefix(11)) == canonical)
            #expect(Array(nanBits.suffix(5)) == [0x3C00, 0x4000, 0x4200, 0x4400, 0x4500])
            // Decoding is exact: every half is a float.
            let decoded = try Quantization.decode(bytes, as: .f16, count: input.count)
            for i in input.indices { #expect(decoded[i] == Float(Float16(bitPattern: expected[i])), "element \(i)") }
        }
    }

    @Test func bfloat16RoundsToNearestEven() throws {
        let expected = (fixture["bf16_bits"] as! [Int]).map(UInt16.init)
        let bits = try Quantization.encode(input, as: .bf16).withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        #expect(bits == expected)
    }

    /// Q8_0 error is at most half a step; Q4_0 at most one step (the positive side clamps at
    /// +7 while the largest magnitude maps to -8).
    @Test(arguments: [ElementType.q8_0, .q4_0])
    func roundTripErrorIsBounded(type: ElementType) throws {
        let values = randomFloats(32 * 257, seed: 7, scale: 3)
        let decoded = try Quantization.decode(try Quantization.encode(values, as: type), as: type, count: values.count)
        for block in 0..<values.count / 32 {
            let slice = values[block * 32..<(block + 1) * 32]
            let amax = slice.map(abs).max()!
            let step = type == .q8_0 ? amax / 127 : amax / 8
            // Rounding error plus the fp16 rounding of the scale (≤ 2^-11 relative) times
            // the largest quantized magnitude.
            let largest: Float = type == .q8_0 ? 127 : 8
            let bound = (type == .q8_0 ? 0.5 : 1.0) * step + largest * step * 0x1p-11 + 1e-7
            for i in slice.indices { #expect(abs(decoded[i] - values[i]) <= bound, "block \(block) element \(i)") }
        }
    }

    @Test(arguments: [KernelLevel.scalar, .avx2])
    func activationQuantizationIsWithinHalfAStep(level: KernelLevel) {
        let x = randomFloats(32 * 33, seed: 11, scale: 5)
        KernelLevel.withThreadLevel(level) {
            let back = quantizedActivation(x)
            for b in 0..<x.count / 32 {
                let amax = x[b * 32..<(b + 1) * 32].map(abs).max()!
                for i in b * 32..<(b + 1) * 32 { #expect(abs(back[i] - x[i]) <= amax / 127 * 0.5001) }
            }
        }
    }

    /// The Q4_0 pair layout holds the same values as the block layout, rearranged.
    @Test(arguments: [31, 32, 33])
    func activationPairsRearrangeBlocks(blockCount: Int) {
        let x = randomFloats(32 * blockCount, seed: UInt64(blockCount), scale: 3)
        var blocks = [quill_activation_block](repeating: quill_activation_block(), count: blockCount)
        var pairs = [quill_activation_pair](repeating: quill_activation_pair(), count: (blockCount + 1) / 2)
        quill_quantize_activation(x, Int64(x.count), &blocks)
        quill_quantize_activation_pairs(x, Int64(x.count), &pairs)
        for b in 0..<blockCount {
            let pair = pairs[b / 2], half = b % 2
            let q = withUnsafeBytes(of: blocks[b].q) { Array($0.bindMemory(to: Int8.self)) }
            let low = withUnsafeBytes(of: pair.low) { Array($0.bindMemory(to: Int8.self)) }
            let high = withUnsafeBytes(of: pair.high) { Array($0.bindMemory(to: Int8.self)) }
            #expect(Array(low[16 * half..<16 * half + 16]) + Array(high[16 * half..<16 * half + 16]) == q, "block \(b)")
            let scales = withUnsafeBytes(of: pair.d) { Array($0.bindMemory(to: Float.self)) }
            let offsets = withUnsafeBytes(of: pair.offset) { Array($0.bindMemory(to: Int32.self)) }
            #expect(scales[4 * half] == blocks[b].d.0 && offsets[4 * half] == blocks[b].offset.0)
            #expect(offsets[4 * half] == -8 * Int32(q.reduce(0) { $0 + Int($1) }))
        }
        if blockCount % 2 == 1 {  // the padding block is zero
            let last = pairs[blockCount / 2]
            #expect(withUnsafeBytes(of: last.d) { Array($0.bindMemory(to: Float.self))[4] } == 0)
        }
    }

    @Test func activationQuantizationPathsAgreeExactly() {
        let x = randomFloats(32 * 65, seed: 12, scale: 2)
        let scalar = KernelLevel.withThreadLevel(.scalar) { quantizedActivation(x) }
        let vector = KernelLevel.withThreadLevel(.avx2) { quantizedActivation(x) }
        #expect(scalar == vector)
    }

    @Test func encodeRejectsPartialBlocks() {
        #expect(throws: TensorError.self) { try Quantization.encode([1, 2, 3], as: .q8_0) }
        #expect(throws: TensorError.self) { try Quantization.decode([0, 0], as: .q4_0, count: 32) }
    }
}
