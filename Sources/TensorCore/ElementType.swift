/// The element types a tensor can hold. Quantized types use ggml's block layouts byte for
/// byte, so tensors from a GGUF file are used in place.
public enum ElementType: String, Sendable, CaseIterable, CustomStringConvertible {
    /// IEEE 754 single precision.
    case f32
    /// IEEE 754 half precision.
    case f16
    /// bfloat16: the top 16 bits of a float32.
    case bf16
    /// ggml Q8_0: blocks of 32 weights, an fp16 scale then 32 int8 (34 bytes).
    case q8_0
    /// ggml Q4_0: blocks of 32 weights, an fp16 scale then 16 bytes of nibbles (18 bytes).
    case q4_0
    /// Q4_0 with eight rows interleaved per block: Quill's in-memory layout for the weights
    /// of matrix products (`Tensor.interleavedForMatmul()`), never a file format. The same
    /// 18 bytes per 32 weights; a tensor's row count must be a multiple of 8.
    case q4_0x8
    /// Q8_0 with eight rows interleaved per block, as `q4_0x8` interleaves Q4_0: the same
    /// 34 bytes per 32 weights; a tensor's row count must be a multiple of 8.
    case q8_0x8

    /// Elements per block (1 for the float types).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: return 1
        case .q8_0, .q4_0, .q4_0x8, .q8_0x8: return 32
        }
    }

    /// Bytes per block.
    public var blockBytes: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .q8_0, .q8_0x8: return 34
        case .q4_0, .q4_0x8: return 18
        }
    }

    /// Whether the type stores blocks of integers with a shared scale.
    public var isQuantized: Bool { blockSize > 1 }

    /// Whether the type interleaves groups of eight rows (`q4_0x8`, `q8_0x8`): a matrix
    /// layout with no meaning for a lone run of values.
    public var isInterleaved: Bool { self == .q4_0x8 || self == .q8_0x8 }

    /// The file format whose blocks the type holds: Q4_0 for `q4_0x8`, Q8_0 for `q8_0x8`,
    /// the type itself otherwise.
    public var rowMajor: ElementType {
        switch self {
        case .q4_0x8: return .q4_0
        case .q8_0x8: return .q8_0
        default: return self
        }
    }

    /// The type's name in capitals (`F32`, `Q8_0`, ...).
    public var description: String { rawValue.uppercased() }

    /// Bytes needed for a row of `count` elements; throws when `count` is negative, is not
    /// a whole number of blocks, or the size overflows.
    public func byteCount(elements count: Int, operation: String = "byteCount") throws -> Int {
        guard count >= 0 else {
            throw TensorError.invalidShape(operation: operation, detail: "negative element count \(count)")
        }
        guard count % blockSize == 0 else {
            throw TensorError.invalidShape(
                operation: operation,
                detail: "\(count) elements is not a whole number of \(self) blocks of \(blockSize)")
        }
        let (bytes, overflow) = (count / blockSize).multipliedReportingOverflow(by: blockBytes)
        guard !overflow else {
            throw TensorError.invalidShape(operation: operation, detail: "\(count) \(self) elements overflow Int")
        }
        return bytes
    }

    /// The code the C kernels use for this type.
    var kernelCode: Int32 {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .bf16: return 2
        case .q8_0: return 3
        case .q4_0: return 4
        case .q4_0x8: return 5
        case .q8_0x8: return 6
        }
    }
}
