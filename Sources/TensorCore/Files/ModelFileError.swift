/// Why a model file (safetensors, GGUF, index or config) was rejected. Every case names the
/// file, and the tensor or key where there is one, so a user can find the problem.
public enum ModelFileError: Error, Equatable, CustomStringConvertible {
    /// The file ends before a structure it announces.
    case truncated(path: String, detail: String)
    /// A header, JSON document or metadata value is malformed or out of range.
    case invalidHeader(path: String, detail: String)
    /// A tensor's entry is inconsistent (shape vs bytes, offsets outside the data, overlap).
    case invalidTensor(path: String, tensor: String, detail: String)
    /// A tensor's element type is not one Quill reads.
    case unsupportedType(path: String, tensor: String, type: String)
    /// The same tensor name appears twice.
    case duplicateTensor(path: String, tensor: String)
    /// A tensor that was expected is absent.
    case missingTensor(path: String, tensor: String)

    /// A one-line description for logs and error messages.
    public var description: String {
        switch self {
        case let .truncated(path, detail): return "\(path): truncated: \(detail)"
        case let .invalidHeader(path, detail): return "\(path): invalid header: \(detail)"
        case let .invalidTensor(path, tensor, detail): return "\(path): tensor '\(tensor)': \(detail)"
        case let .unsupportedType(path, tensor, type): return "\(path): tensor '\(tensor)': unsupported element type \(type)"
        case let .duplicateTensor(path, tensor): return "\(path): tensor '\(tensor)' appears more than once"
        case let .missingTensor(path, tensor): return "\(path): tensor '\(tensor)' is missing"
        }
    }
}
