#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory mapping of a whole file. Tensors view its bytes without copying; the
/// mapping lives as long as any tensor that uses it.
public final class MappedFile: Sendable {
    /// The path the file was opened from (used in error messages).
    public let path: String
    /// The size of the file in bytes.
    public let byteCount: Int
    // The mapping is read-only and never remapped, so sharing the address across threads is
    // safe; a raw pointer is not Sendable by itself, hence the Int.
    private let address: Int
    /// Bytes copied into memory (not mapped): freed instead of unmapped.
    private let isCopy: Bool

    /// Maps `path` read-only. Throws `TensorError.file` when it cannot be opened or mapped.
    public init(path: String) throws {
        self.path = path
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else {
            throw TensorError.file(path: path, reason: "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw TensorError.file(path: path, reason: "cannot stat: \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw TensorError.file(path: path, reason: "not a regular file")
        }
        byteCount = Int(info.st_size)
        isCopy = false
        if byteCount == 0 {
            address = 0  // mmap rejects empty files; an empty file has nothing to view
            return
        }
        guard let mapped = mmap(nil, byteCount, PROT_READ, MAP_PRIVATE, descriptor, 0),
              mapped != MAP_FAILED else {
            throw TensorError.file(path: path, reason: "cannot map: \(String(cString: strerror(errno)))")
        }
        // Ask for readahead now: weights are read in full by the first forward pass, and page
        // faults one 4 KiB page at a time would add up to most of a second for a large model.
        _ = madvise(mapped, byteCount, MADV_WILLNEED)
        address = Int(bitPattern: mapped)
    }

    /// A copy of `bytes` in memory, read like a mapped file named `name` (for data that did
    /// not come from disk, and for fuzzing the parsers without a file per input).
    public init(copying bytes: UnsafeRawBufferPointer, name: String) {
        path = name
        byteCount = bytes.count
        isCopy = true
        guard bytes.count > 0, let memory = malloc(bytes.count) else {
            address = 0
            return
        }
        memory.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        address = Int(bitPattern: memory)
    }

    deinit {
        guard address != 0 else { return }
        if isCopy { free(UnsafeMutableRawPointer(bitPattern: address)) }
        else { munmap(UnsafeMutableRawPointer(bitPattern: address), byteCount) }
    }

    /// The first byte of the mapping (nil for an empty file).
    public var baseAddress: UnsafeRawPointer? { UnsafeRawPointer(bitPattern: address) }

    /// The mapped bytes.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: baseAddress, count: byteCount) }
}
