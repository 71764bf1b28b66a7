/// An error from TensorCore: bad shapes, short buffers, unsupported element types, or a
/// file that cannot be mapped. Every case names the operation or file and what was wrong.
public enum TensorError: Error, Equatable, CustomStringConvertible {
    /// Operand shapes do not fit together.
    case shapeMismatch(operation: String, detail: String)
    /// A buffer or byte range is smaller than the shape it is meant to hold.
    case bufferTooSmall(operation: String, needed: Int, available: Int)
    /// A shape or size that cannot be represented (negative, overflowing, not a whole
    /// number of quantization blocks).
    case invalidShape(operation: String, detail: String)
    /// The operation does not support this element type.
    case unsupportedElementType(operation: String, elementType: ElementType)
    /// An argument outside its valid range (thread counts, positions, indices).
    case invalidArgument(operation: String, detail: String)
    /// A file could not be opened or mapped.
    case file(path: String, reason: String)

    /// A one-line description for logs and error messages.
    public var description: String {
        switch self {
        case let .shapeMismatch(operation, detail):
            return "\(operation): shape mismatch: \(detail)"
        case let .bufferTooSmall(operation, needed, available):
            return "\(operation): buffer too small: needs \(needed) bytes, has \(available)"
        case let .invalidShape(operation, detail):
            return "\(operation): invalid shape: \(detail)"
        case let .unsupportedElementType(operation, elementType):
            return "\(operation): element type \(elementType) is not supported"
        case let .invalidArgument(operation, detail):
            return "\(operation): \(detail)"
        case let .file(path, reason):
            return "\(path): \(reason)"
        }
    }
}
