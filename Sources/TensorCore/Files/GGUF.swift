import CQuillKernels

/// A GGUF file (llama.cpp's format, versions 2 and 3), memory-mapped.
///
/// Metadata is parsed completely; tensor infos are validated (dimensions, block multiples,
/// alignment, bounds, overlaps, duplicate names) before any tensor is exposed. Tensors of
/// the types Quill computes with (F32, F16, BF16, Q8_0, Q4_0) are zero-copy views of the
/// mapping; K-quant tensors (Q4_K, Q6_K) are dequantized on request.
public struct GGUFFile: Sendable {
    /// A metadata value.
    public enum Value: Sendable, Equatable {
        case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
        case float32(Float), bool(Bool), string(String), array([Value]), uint64(UInt64), int64(Int64), float64(Double)

        /// The value as an integer, when it is one that fits.
        public var integer: Int? {
            switch self {
            case let .uint8(v): return Int(v)
            case let .int8(v): return Int(v)
            case let .uint16(v): return Int(v)
            case let .int16(v): return Int(v)
            case let .uint32(v): return Int(v)
            case let .int32(v): return Int(v)
            case let .uint64(v): return Int(exactly: v)
            case let .int64(v): return Int(v)
            case let .bool(v): return v ? 1 : 0
            default: return nil
            }
        }

        /// The value as a floating-point number, when it is numeric.
        public var number: Double? {
            switch self {
            case let .float32(v): return Double(v)
            case let .float64(v): return v
            default: return integer.map(Double.init)
            }
        }

        /// The value as a string, when it is one.
        public var string: String? { if case let .string(v) = self { return v } else { return nil } }
        /// The elements, when the value is an array.
        public var array: [Value]? { if case let .array(v) = self { return v } else { return nil } }
        /// The value as a Boolean, when it is one.
        public var bool: Bool? { if case let .bool(v) = self { return v } else { return nil } }
    }

    /// The ggml element types a tensor info may name (those with known block sizes).
    public enum TensorType: UInt32, Sendable, CaseIterable {
        case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
        case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15, bf16 = 30

        /// (elements, bytes) per block, as ggml defines them.
        public var block: (elements: Int, bytes: Int) {
            switch self {
            case .f32: return (1, 4)
            case .f16, .bf16: return (1, 2)
            case .q4_0: return (32, 18)
            case .q4_1: return (32, 20)
            case .q5_0: return (32, 22)
            case .q5_1: return (32, 24)
            case .q8_0: return (32, 34)
            case .q8_1: return (32, 36)
            case .q2_K: return (256, 84)
            case .q3_K: return (256, 110)
            case .q4_K: return (256, 144)
            case .q5_K: return (256, 176)
            case .q6_K: return (256, 210)
            case .q8_K: return (256, 292)
            }
        }

        /// The matching Quill element type, for types used in place.
        public var elementType: ElementType? {
            switch self {
            case .f32: return .f32
            case .f16: return .f16
            case .bf16: return .bf16
            case .q8_0: return .q8_0
            case .q4_0: return .q4_0
            default: return nil
            }
        }
    }

    /// One tensor info.
    public struct TensorInfo: Sendable, Equatable {
        /// The tensor's name as stored in the file (e.g. `blk.0.attn_q.weight`).
        public let name: String
        /// Outermost first (the reverse of GGUF's innermost-first order), like PyTorch.
        public let shape: [Int]
        /// The ggml element type of its data.
        public let type: TensorType
        /// Offset of the data in the file.
        public let fileOffset: Int
        /// Bytes of data it spans.
        public let byteCount: Int
    }

    /// The file's path, for error messages.
    public let path: String
    /// The GGUF format version (2 or 3).
    public let version: Int
    /// Metadata in file order.
    public let metadata: [(key: String, value: Value)]
    /// Tensor infos by name.
    public let tensors: [String: TensorInfo]
    /// Tensor names in file order.
    public let tensorNames: [String]
    /// Alignment of tensor data in bytes (`general.alignment`, default 32).
    public let alignment: Int
    /// The mapping the tensors view.
    public let file: MappedFile

    /// The metadata value of `key`.
    public subscript(key: String) -> Value? { metadata.first { $0.key == key }?.value }

    /// Maps and validates `path`.
    public init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    /// Validates an already mapped (or copied) file.
    public init(file: MappedFile) throws {
        let path = file.path
        var reader = Reader(bytes: file.bytes, path: path)
        guard try reader.u32() == 0x4655_4747 else {  // "GGUF" little-endian
            throw ModelFileError.invalidHeader(path: path, detail: "not a GGUF file (bad magic)")
        }
        let version = Int(try reader.u32())
        guard version == 2 || version == 3 else {
            throw ModelFileError.invalidHeader(path: path, detail: "GGUF version \(version) (Quill reads 2 and 3)")
        }
        let tensorCount = try reader.count("tensor count", minimumBytesEach: 24)
        let metadataCount = try reader.count("metadata count", minimumBytesEach: 12)
        var metadata: [(key: String, value: Value)] = []
        var keys = Set<String>()
        for _ in 0..<metadataCount {
            let key = try reader.string()
            guard keys.insert(key).inserted else { throw ModelFileError.invalidHeader(path: path, detail: "metadata key '\(key)' appears twice") }
            let type = try reader.u32()
            metadata.append((key, try reader.value(type: type, depth: 0)))
        }
        var alignment = 32
        if let value = metadata.first(where: { $0.key == "general.alignment" })?.value {
            guard let a = value.integer, a > 0, a <= 1 << 20, a & (a - 1) == 0 else {
                throw ModelFileError.invalidHeader(path: path, detail: "general.alignment \(value) is not a power of two")
            }
            alignment = a
        }
        var infos: [(name: String, dims: [Int], type: TensorType, offset: Int)] = []
        for _ in 0..<tensorCount {
            let name = try reader.string()
            let dimensionCount = Int(try reader.u32())
            guard (1...4).contains(dimensionCount) else {
                throw ModelFileError.invalidTensor(path: path, tensor: name, detail: "\(dimensionCount) dimensions (1 to 4 allowed)")
            }
            var dims: [Int] = []
            for _ in 0..<dimensionCount {
                let d = try reader.u64()
                guard d <= UInt64(Int.max) else { throw ModelFileError.invalidTensor(path: path, tensor: name, detail: "dimension \(d) too large") }
                dims.append(Int(d))
            }
            let rawType = try reader.u32()
            guard let type = TensorType(rawValue: rawType) else {
                throw ModelFileError.unsupportedType(path: path, tensor: name, type: "ggml type \(rawType)")
            }
            let offset = try reader.u64()
            guard offset <= UInt64(Int.max) else { throw ModelFileError.invalidTensor(path: path, tensor: name, detail: "offset \(offset) too large") }
            infos.append((name, dims, type, Int(offset)))
        }
        let dataStart = (reader.position + alignment - 1) / alignment * alignment
        guard dataStart <= file.byteCount else {
            throw ModelFileError.truncated(path: path, detail: "tensor data would start at \(dataStart), file has \(file.byteCount) bytes")
        }
        var tensors: [String: TensorInfo] = [:]
        for info in infos {
            func invalid(_ detail: String) -> ModelFileError { .invalidTensor(path: path, tensor: info.name, detail: detail) }
            guard tensors[info.name] == nil else { throw ModelFileError.duplicateTensor(path: path, tensor: info.name) }
            var count = 1
            for d in info.dims {
                let (product, overflow) = count.multipliedReportingOverflow(by: d)
                guard !overflow else { throw invalid("dimensions \(info.dims) overflow") }
                count = product
            }
            let block = info.type.block
            guard info.dims[0] % block.elements == 0 else {
                throw invalid("innermost dimension \(info.dims[0]) is not a multiple of the \(info.type) block of \(block.elements)")
            }
            let (bytes, overflow) = (count / block.elements).multipliedReportingOverflow(by: block.bytes)
            guard !overflow else { throw invalid("size overflows") }
            guard info.offset % alignment == 0 else { throw invalid("offset \(info.offset) is not aligned to \(alignment)") }
            guard info.offset <= file.byteCount - dataStart, bytes <= file.byteCount - dataStart - info.offset else {
                throw ModelFileError.truncated(path: path, detail: "tensor '\(info.name)' needs bytes \(info.offset)..<\(info.offset &+ bytes) of a data section of \(file.byteCount - dataStart)")
            }
            tensors[info.name] = TensorInfo(name: info.name, shape: info.dims.reversed(), type: info.type,
                                            fileOffset: dataStart + info.offset, byteCount: bytes)
        }
        let ordered = tensors.values.filter { $0.byteCount > 0 }.sorted { $0.fileOffset < $1.fileOffset }
        for (a, b) in zip(ordered, ordered.dropFirst()) where b.fileOffset < a.fileOffset + a.byteCount {
            throw ModelFileError.invalidTensor(path: path, tensor: b.name, detail: "data overlaps tensor '\(a.name)'")
        }
        self.path = path
        self.version = version
        self.metadata = metadata
        self.tensors = tensors
        self.tensorNames = infos.map(\.name)
        self.alignment = alignment
        self.file = file
    }

    /// The tensor `name`: a zero-copy view for F32/F16/BF16/Q8_0/Q4_0, a dequantized F32
    /// copy for Q4_K and Q6_K. Other types throw `unsupportedType`.
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = tensors[name] else { throw ModelFileError.missingTensor(path: path, tensor: name) }
        if let type = info.type.elementType {
            return try Tensor(name: name, elementType: type, shape: info.shape, storage: TensorStorage(file: file), byteOffset: info.fileOffset)
        }
        guard info.type == .q4_K || info.type == .q6_K else {
            throw ModelFileError.unsupportedType(path: path, tensor: name, type: "\(info.type)")
        }
        let count = info.shape.reduce(1, *)
        let source = file.baseAddress! + info.fileOffset
        let storage = try TensorStorage(byteCount: count * 4) { output in
            let floats = output.baseAddress!.assumingMemoryBound(to: Float.self)
            if info.type == .q4_K { quill_dequantize_q4_K(source, floats, Int64(count)) }
            else { quill_dequantize_q6_K(source, floats, Int64(count)) }
        }
        return try Tensor(name: name, elementType: .f32, shape: info.shape, storage: storage)
    }

    /// Bounds-checked little-endian reads over the mapping.
    struct Reader {
        let bytes: UnsafeRawBufferPointer
        let path: String
        var position = 0

        func truncated(_ what: String) -> ModelFileError {
            .truncated(path: path, detail: "\(what) at byte \(position) runs past the end (\(bytes.count) bytes)")
        }

        mutating func read<T: FixedWidthInteger>(_ type: T.Type, _ what: String) throws -> T {
            guard bytes.count - position >= MemoryLayout<T>.size else { throw truncated(what) }
            defer { position += MemoryLayout<T>.size }
            return T(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: T.self))
        }

        mutating func u32() throws -> UInt32 { try read(UInt32.self, "u32") }
        mutating func u64() throws -> UInt64 { try read(UInt64.self, "u64") }

        /// A u64 count, refused when even `minimumBytesEach` per item would not fit in what
        /// remains (a hostile count cannot make us allocate or loop).
        mutating func count(_ what: String, minimumBytesEach: Int) throws -> Int {
            let value = try u64()
            guard value <= UInt64(bytes.count - position) / UInt64(max(minimumBytesEach, 1)) else {
                throw ModelFileError.invalidHeader(path: path, detail: "\(what) \(value) cannot fit in the \(bytes.count - position) bytes left")
            }
            return Int(value)
        }

        mutating func string() throws -> String {
            let length = try count("string length", minimumBytesEach: 1)
            let slice = UnsafeRawBufferPointer(rebasing: bytes[position..<position + length])
            guard let text = String(validating: slice, as: UTF8.self) else {
                throw ModelFileError.invalidHeader(path: path, detail: "invalid UTF-8 in a string at byte \(position)")
            }
            position += length
            return text
        }

        mutating func value(type: UInt32, depth: Int) throws -> Value {
            switch type {
            case 0: return .uint8(try read(UInt8.self, "u8"))
            case 1: return .int8(try read(Int8.self, "i8"))
            case 2: return .uint16(try read(UInt16.self, "u16"))
            case 3: return .int16(try read(Int16.self, "i16"))
            case 4: return .uint32(try u32())
            case 5: return .int32(try read(Int32.self, "i32"))
            case 6: return .float32(Float(bitPattern: try u32()))
            case 7:
                let b = try read(UInt8.self, "bool")
                guard b <= 1 else { throw ModelFileError.invalidHeader(path: path, detail: "bool value \(b) at byte \(position - 1)") }
                return .bool(b == 1)
            case 8: return .string(try string())
            case 9:
                guard depth < 8 else { throw ModelFileError.invalidHeader(path: path, detail: "arrays nested deeper than 8") }
                let elementType = try u32()
                let sizes: [UInt32: Int] = [0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 8: 8, 9: 12, 10: 8, 11: 8, 12: 8]
                guard let size = sizes[elementType] else {
                    throw ModelFileError.invalidHeader(path: path, detail: "unknown array element type \(elementType)")
                }
                let n = try count("array length", minimumBytesEach: size)
                var values: [Value] = []
                values.reserveCapacity(n)
                for _ in 0..<n { values.append(try value(type: elementType, depth: depth + 1)) }
                return .array(values)
            case 10: return .uint64(try u64())
            case 11: return .int64(try read(Int64.self, "i64"))
            case 12: return .float64(Double(bitPattern: try u64()))
            default: throw ModelFileError.invalidHeader(path: path, detail: "unknown metadata value type \(type) at byte \(position - 4)")
            }
        }
    }
}
