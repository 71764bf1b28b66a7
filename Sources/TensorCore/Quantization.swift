import CQuillKernels

/// Conversions between float32 and the stored element types, with GGML's reference
/// rounding for Q8_0 and Q4_0 (so the bytes equal what llama.cpp's quantizer writes).
public enum Quantization {
    /// Encodes `values` as `type`. The count must be a whole number of blocks.
    public static func encode(_ values: [Float], as type: ElementType) throws -> [UInt8] {
        try requireRowMajor(type, "encode")
        let bytes = try type.byteCount(elements: values.count, operation: "encode as \(type)")
        var output = [UInt8](repeating: 0, count: bytes)
        values.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBytes { out in
                guard let source = input.baseAddress, let destination = out.baseAddress else { return }
                encode(source, count: values.count, as: type, into: destination)
            }
        }
        return output
    }

    /// Decodes `bytes` holding `count` elements of `type` to float32.
    public static func decode(_ bytes: [UInt8], as type: ElementType, count: Int) throws -> [Float] {
        try requireRowMajor(type, "decode")
        let needed = try type.byteCount(elements: count, operation: "decode \(type)")
        guard bytes.count >= needed else {
            throw TensorError.bufferTooSmall(operation: "decode \(type)", needed: needed, available: bytes.count)
        }
        var output = [Float](repeating: 0, count: count)
        guard count > 0 else { return output }
        bytes.withUnsafeBytes { input in
            output.withUnsafeMutableBufferPointer { out in
                quill_dequantize_rows(type.kernelCode, input.baseAddress!, Int64(needed), Int64(count), 0, 1, out.baseAddress!)
            }
        }
        return output
    }

    /// Q4_0x8 and Q8_0x8 interleave groups of eight rows: no meaning for a lone run of values.
    private static func requireRowMajor(_ type: ElementType, _ operation: String) throws {
        guard !type.isInterleaved else {
            throw TensorError.invalidArgument(operation: "\(operation) \(type)",
                                              detail: "\(type) interleaves rows: convert a tensor with Tensor.converted(to:) instead")
        }
    }

    /// Encodes `count` floats (a whole number of blocks; callers validate) into `destination`.
    /// For an interleaved type this writes one plain row: `Tensor.converted(to:)` interleaves the rows.
    static func encode(_ source: UnsafePointer<Float>, count: Int, as type: ElementType, into destination: UnsafeMutableRawPointer) {
        let n = Int64(count)
        switch type {
        case .f32: destination.copyMemory(from: source, byteCount: count * 4)
        case .f16: quill_f32_to_f16(source, destination.assumingMemoryBound(to: UInt16.self), n)
        case .bf16: quill_f32_to_bf16(source, destination.assumingMemoryBound(to: UInt16.self), n)
        case .q8_0, .q8_0x8: quill_quantize_q8_0(source, destination, n)
        case .q4_0, .q4_0x8: quill_quantize_q4_0(source, destination, n)
        }
    }
}
