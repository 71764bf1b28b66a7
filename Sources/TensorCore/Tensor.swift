import CQuillKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Bytes a tensor views: a memory-mapped file or an owned, 64-byte aligned allocation.
/// Immutable once created, so tensors sharing it may cross threads.
public final class TensorStorage: Sendable {
    private let address: Int  // Int, not a pointer, so the class can be Sendable
    /// Size in bytes.
    public let byteCount: Int
    private let file: MappedFile?

    /// Views a mapped file's bytes (no copy).
    public init(file: MappedFile) {
        self.file = file
        self.byteCount = file.byteCount
        self.address = Int(bitPattern: file.baseAddress)
    }

    /// Allocates `byteCount` zeroed bytes and lets `initialize` fill them.
    public init(byteCount: Int, initialize: (UnsafeMutableRawBufferPointer) throws -> Void) throws {
        guard byteCount >= 0 else {
            throw TensorError.invalidShape(operation: "TensorStorage", detail: "negative size \(byteCount)")
        }
        var pointer: UnsafeMutableRawPointer?
        guard posix_memalign(&pointer, 64, max(byteCount, 64)) == 0, let pointer else {
            throw TensorError.invalidArgument(operation: "TensorStorage", detail: "cannot allocate \(byteCount) bytes")
        }
        memset(pointer, 0, max(byteCount, 64))
        do {
            try initialize(UnsafeMutableRawBufferPointer(start: pointer, count: byteCount))
        } catch {
            free(pointer)
            throw error
        }
        self.file = nil
        self.byteCount = byteCount
        self.address = Int(bitPattern: pointer)
    }

    deinit {
        if file == nil { free(UnsafeMutableRawPointer(bitPattern: address)) }
    }

    /// The first byte (nil only for an empty mapped file).
    public var baseAddress: UnsafeRawPointer? { UnsafeRawPointer(bitPattern: address) }

    /// Lets the system drop the resident pages that lie wholly inside bytes
    /// [offset, offset + count) of a mapped file: for weights that were copied into another
    /// layout, so the process does not hold both. Reading them again faults them back in
    /// from the file; owned storage is left as it is.
    public func releaseMappedPages(offset: Int, count: Int) {
        guard file != nil, count > 0, offset >= 0, offset <= byteCount - count, let base = baseAddress else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (offset + page - 1) / page * page, end = (offset + count) / page * page
        guard end > start else { return }
        // The mapping is private and read-only, so its pages are never dirty: dropping them loses nothing.
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED)
    }
}

/// An immutable n-dimensional array of any `ElementType`, viewing bytes of a
/// `TensorStorage` without copying. Shapes are outermost first (PyTorch order); rows of the
/// innermost dimension are contiguous, which is how safetensors and GGUF store weights.
/// A 2-D weight of shape [n, k] is read as n rows of k elements.
public struct Tensor: Sendable, CustomStringConvertible {
    /// The checkpoint name (e.g. `model.layers.0.self_attn.q_proj.weight`), used in errors.
    public let name: String
    /// How the elements are stored.
    public let elementType: ElementType
    /// Dimensions, outermost first.
    public let shape: [Int]
    /// The bytes the tensor views (shared, not copied).
    public let storage: TensorStorage
    /// Where the tensor starts inside `storage`.
    public let byteOffset: Int
    /// Bytes the tensor spans.
    public let byteCount: Int

    /// Views `storage` at `byteOffset`, validating that the shape is representable, that the
    /// innermost dimension is a whole number of blocks, and that the bytes lie inside.
    public init(name: String, elementType: ElementType, shape: [Int], storage: TensorStorage, byteOffset: Int = 0) throws {
        let operation = "tensor '\(name)'"
        var elements = 1
        for dimension in shape {
            guard dimension >= 0 else {
                throw TensorError.invalidShape(operation: operation, detail: "negative dimension in \(shape)")
            }
            let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw TensorError.invalidShape(operation: operation, detail: "\(shape) overflows") }
            elements = product
        }
        let columns = shape.last ?? 1
        guard columns % elementType.blockSize == 0 else {
            throw TensorError.invalidShape(
                operation: operation,
                detail: "innermost dimension \(columns) is not a multiple of the \(elementType) block size \(elementType.blockSize)")
        }
        if elementType.isInterleaved && columns > 0 && (elements / columns) % 8 != 0 {
            throw TensorError.invalidShape(operation: operation, detail: "\(elementType) needs a multiple of 8 rows, not \(elements / columns)")
        }
        let bytes = try elementType.byteCount(elements: elements, operation: operation)
        guard byteOffset >= 0, byteOffset <= storage.byteCount, bytes <= storage.byteCount - byteOffset else {
            throw TensorError.bufferTooSmall(operation: operation, needed: byteOffset.addingReportingOverflow(bytes).partialValue,
                                             available: storage.byteCount)
        }
        self.name = name
        self.elementType = elementType
        self.shape = shape
        self.storage = storage
        self.byteOffset = byteOffset
        self.byteCount = bytes
    }

    /// An owned F32 tensor holding `values`.
    public init(name: String, shape: [Int], values: [Float]) throws {
        let expected = shape.reduce(1, { $0 &* $1 })
        guard values.count == expected, shape.allSatisfy({ $0 >= 0 }) else {
            throw TensorError.shapeMismatch(operation: "tensor '\(name)'", detail: "\(values.count) values for shape \(shape)")
        }
        let storage = try TensorStorage(byteCount: values.count * 4) { buffer in
            values.withUnsafeBytes { buffer.copyMemory(from: $0) }
        }
        try self.init(name: name, elementType: .f32, shape: shape, storage: storage)
    }

    /// An owned tensor of any type, copying raw bytes laid out as that type expects.
    public init(name: String, elementType: ElementType, shape: [Int], bytes: [UInt8]) throws {
        let storage = try TensorStorage(byteCount: bytes.count) { buffer in
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
        }
        try self.init(name: name, elementType: elementType, shape: shape, storage: storage)
        guard byteCount == bytes.count else {
            throw TensorError.shapeMismatch(operation: "tensor '\(name)'",
                                            detail: "\(bytes.count) bytes for \(elementType) shape \(shape) (needs \(byteCount))")
        }
    }

    /// Number of elements.
    public var elementCount: Int { shape.reduce(1, *) }
    /// Size of the innermost dimension.
    public var columns: Int { shape.last ?? 1 }
    /// Number of innermost rows (the product of all other dimensions).
    public var rows: Int { columns == 0 ? 0 : elementCount / columns }
    /// Bytes from one row to the next.
    public var rowStride: Int { columns / elementType.blockSize * elementType.blockBytes }

    /// The first byte of the tensor. Valid while the tensor (and so its storage) is alive.
    public var rawPointer: UnsafeRawPointer {
        // A zero-size tensor in an empty file has no address; any non-null pointer will do
        // because nothing is read through it.
        (storage.baseAddress ?? UnsafeRawPointer(bitPattern: 64)!) + byteOffset
    }

    /// The raw bytes.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: rawPointer, count: byteCount) }

    /// Name, element type and shape, for logs and error messages.
    public var description: String { "\(name): \(elementType) \(shape)" }

    /// A view of `range` along the outermost dimension (e.g. one expert of a stacked
    /// expert tensor), sharing storage.
    public func slice(_ range: Range<Int>) throws -> Tensor {
        guard let outer = shape.first, range.lowerBound >= 0, range.upperBound <= outer else {
            throw TensorError.invalidArgument(operation: "slice of '\(name)'", detail: "range \(range) outside \(shape)")
        }
        let stride = outer == 0 ? 0 : byteCount / outer
        if elementType.isInterleaved && outer > 0 && (rows / outer * range.lowerBound) % 8 != 0 {
            throw TensorError.invalidArgument(operation: "slice of '\(name)'", detail: "range \(range) splits a group of 8 interleaved rows")
        }
        return try Tensor(name: name, elementType: elementType, shape: [range.count] + shape.dropFirst(),
                          storage: storage, byteOffset: byteOffset + range.lowerBound * stride)
    }

    /// The same bytes under another shape with the same element count and innermost blocks.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        // Interleaved groups hold whole rows: a new row width would reread them wrongly.
        if elementType.isInterleaved && newShape.last != shape.last {
            throw TensorError.shapeMismatch(operation: "reshape of '\(name)'", detail: "\(elementType) keeps its row width: \(shape) to \(newShape)")
        }
        let tensor = try Tensor(name: name, elementType: elementType, shape: newShape, storage: storage, byteOffset: byteOffset)
        guard tensor.elementCount == elementCount else {
            throw TensorError.shapeMismatch(operation: "reshape of '\(name)'", detail: "\(shape) to \(newShape)")
        }
        return tensor
    }

    /// Row `row` (of `rows`, each `columns` wide) as float32 into `destination`, dequantizing
    /// if needed: an embedding lookup.
    public func dequantizeRow(_ row: Int, into destination: UnsafeMutablePointer<Float>) throws {
        guard row >= 0, row < rows else {
            throw TensorError.invalidArgument(operation: "row of '\(name)'", detail: "row \(row) outside 0..<\(rows)")
        }
        quill_dequantize_rows(elementType.kernelCode, rawPointer, Int64(rowStride), Int64(columns), Int64(row), Int64(row + 1), destination)
    }

    /// All elements as float32 (dequantizing if needed), row-major.
    public func floats() -> [Float] {
        var result = [Float](repeating: 0, count: elementCount)
        guard rows > 0 else { return result }
        result.withUnsafeMutableBufferPointer { out in
            quill_dequantize_rows(elementType.kernelCode, rawPointer, Int64(rowStride), Int64(columns),
                                  0, Int64(rows), out.baseAddress!)
        }
        return result
    }

    /// The tensor as matrix products read quantized weights fastest: a Q4_0 or Q8_0 matrix
    /// whose row count is a multiple of 8 becomes Q4_0x8 or Q8_0x8 (the same bytes, eight
    /// rows interleaved per block); anything else is returned as it is.
    public func interleavedForMatmul(pool: ThreadPool? = nil) throws -> Tensor {
        guard shape.count >= 2, rows > 0, rows % 8 == 0 else { return self }
        switch elementType {
        case .q4_0: return try converted(to: .q4_0x8, pool: pool)
        case .q8_0: return try converted(to: .q8_0x8, pool: pool)
        default: return self
        }
    }

    /// A new owned tensor with the same values in `type`: float conversion, quantization
    /// (GGML's reference rounding) or dequantization. Rows are processed on `pool`.
    public func converted(to type: ElementType, pool: ThreadPool? = nil) throws -> Tensor {
        if type == elementType { return self }
        if type.isInterleaved {
            guard rows % 8 == 0 else {
                throw TensorError.invalidShape(operation: "converting '\(name)' to \(type)", detail: "\(rows) rows is not a multiple of 8")
            }
            let plain = try converted(to: type.rowMajor, pool: pool)
            let storage = try TensorStorage(byteCount: plain.byteCount) { output in
                guard let base = output.baseAddress else { return }
                let rows = Int64(plain.rows), columns = Int64(plain.columns)
                if type == .q4_0x8 { quill_repack_q4_0x8(plain.rawPointer, rows, columns, base) }
                else { quill_repack_q8_0x8(plain.rawPointer, rows, columns, base) }
            }
            // A GGUF's pages were read once to repack them: the process need not keep them.
            plain.storage.releaseMappedPages(offset: plain.byteOffset, count: plain.byteCount)
            return try Tensor(name: name, elementType: type, shape: shape, storage: storage)
        }
        guard columns % type.blockSize == 0 else {
            throw TensorError.invalidShape(operation: "converting '\(name)' to \(type)",
                                           detail: "innermost dimension \(columns) is not a multiple of \(type.blockSize)")
        }
        let outStride = try type.byteCount(elements: columns)
        let (total, overflow) = outStride.multipliedReportingOverflow(by: rows)
        guard !overflow else { throw TensorError.invalidShape(operation: "converting '\(name)'", detail: "size overflows") }
        let source = self
        let storage = try TensorStorage(byteCount: total) { output in
            guard let outBase = output.baseAddress else { return }
            let rowCount = source.rows, columns = source.columns
            let chunk = 64
            let run = { (task: Int) in
                let begin = task * chunk, end = min(rowCount, begin + chunk)
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: columns)
                defer { scratch.deallocate() }
                for row in begin..<end {
                    quill_dequantize_rows(source.elementType.kernelCode, source.rawPointer, Int64(source.rowStride),
                                          Int64(columns), Int64(row), Int64(row + 1), scratch)
                    Quantization.encode(scratch, count: columns, as: type, into: outBase + row * outStride)
                }
            }
            let tasks = (rowCount + chunk - 1) / chunk
            if let pool { pool.parallelFor(tasks, run) } else { for task in 0..<tasks { run(task) } }
        }
        return try Tensor(name: name, elementType: type, shape: shape, storage: storage)
    }
}
