/// A safetensors file, memory-mapped: every tensor is a zero-copy view of the mapping.
///
/// The header is validated completely before any tensor is exposed: its length lies inside
/// the file, it is strict JSON with unique names, every dtype is known, shapes are
/// non-negative and do not overflow, dtype × shape equals the byte length, every byte range
/// lies inside the data section, ranges do not overlap, and data is aligned for its type.
public struct SafetensorsFile: Sendable {
    /// One tensor's entry in the header.
    public struct Entry: Sendable, Equatable {
        /// The tensor's name.
        public let name: String
        /// The dtype as written (F32, F16, BF16, I8, U8, I32, I64, F64, BOOL, ...).
        public let dtype: String
        /// Dimensions, outermost first.
        public let shape: [Int]
        /// Byte range inside the data section.
        public let dataRange: Range<Int>
    }

    /// The file's path, for error messages.
    public let path: String
    /// Header entries by name.
    public let entries: [String: Entry]
    /// `__metadata__` string pairs.
    public let metadata: [String: String]
    /// The mapping the tensors view.
    public let file: MappedFile
    /// Where the data section starts in the file.
    public let dataOffset: Int

    /// Bytes per element of every safetensors dtype.
    static let dtypeSizes: [String: Int] = [
        "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
        "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    ]
    /// The dtypes Quill computes with.
    static let elementTypes: [String: ElementType] = ["F32": .f32, "F16": .f16, "BF16": .bf16]

    /// Maps and validates `path`.
    public init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    /// Validates an already mapped (or copied) file.
    public init(file: MappedFile) throws {
        let path = file.path
        guard file.byteCount >= 8, let base = file.baseAddress else {
            throw ModelFileError.truncated(path: path, detail: "\(file.byteCount) bytes, no room for the 8-byte header length")
        }
        let headerLength = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(file.byteCount - 8) else {
            throw ModelFileError.truncated(path: path, detail: "header of \(headerLength) bytes announced, file has \(file.byteCount - 8) after the length")
        }
        let dataOffset = 8 + Int(headerLength)
        let json: StrictJSON
        do {
            json = try StrictJSON.parse(UnsafeRawBufferPointer(start: base + 8, count: Int(headerLength)))
        } catch let error as StrictJSON.ParseError {
            throw ModelFileError.invalidHeader(path: path, detail: "JSON: \(error)")
        }
        guard case let .object(members) = json else {
            throw ModelFileError.invalidHeader(path: path, detail: "the header is not a JSON object")
        }
        let dataSize = file.byteCount - dataOffset
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in members {
            if name == "__metadata__" {
                guard case let .object(pairs) = value else {
                    throw ModelFileError.invalidHeader(path: path, detail: "__metadata__ is not an object")
                }
                for (key, item) in pairs {
                    guard case let .string(text) = item else {
                        throw ModelFileError.invalidHeader(path: path, detail: "__metadata__ value '\(key)' is not a string")
                    }
                    metadata[key] = text
                }
                continue
            }
            entries[name] = try Self.entry(name: name, value: value, dataSize: dataSize, dataOffset: dataOffset, path: path)
        }
        // No two tensors may share bytes (empty tensors take no bytes and cannot overlap).
        let ranges = entries.values.filter { !$0.dataRange.isEmpty }.sorted { $0.dataRange.lowerBound < $1.dataRange.lowerBound }
        for (previous, next) in zip(ranges, ranges.dropFirst()) where next.dataRange.lowerBound < previous.dataRange.upperBound {
            throw ModelFileError.invalidTensor(path: path, tensor: next.name,
                                               detail: "bytes \(next.dataRange) overlap tensor '\(previous.name)' at \(previous.dataRange)")
        }
        self.path = path
        self.file = file
        self.entries = entries
        self.metadata = metadata
        self.dataOffset = dataOffset
    }

    private static func entry(name: String, value: StrictJSON, dataSize: Int, dataOffset: Int, path: String) throws -> Entry {
        func invalid(_ detail: String) -> ModelFileError { .invalidTensor(path: path, tensor: name, detail: detail) }
        guard case .object = value else { throw invalid("entry is not an object") }
        guard case let .string(dtype)? = value["dtype"] else { throw invalid("missing dtype") }
        guard let elementSize = dtypeSizes[dtype] else { throw ModelFileError.unsupportedType(path: path, tensor: name, type: dtype) }
        guard case let .array(dimensions)? = value["shape"] else { throw invalid("missing shape") }
        var shape: [Int] = []
        var count = 1
        for dimension in dimensions {
            guard case let .integer(size) = dimension, size >= 0 else { throw invalid("shape \(dimensions) has a dimension that is not a non-negative integer") }
            let (product, overflow) = count.multipliedReportingOverflow(by: size)
            guard !overflow else { throw invalid("shape \(shape + [size]) overflows") }
            shape.append(size)
            count = product
        }
        guard case let .array(offsets)? = value["data_offsets"], offsets.count == 2,
              case let .integer(begin) = offsets[0], case let .integer(end) = offsets[1] else {
            throw invalid("data_offsets must be two integers")
        }
        guard begin >= 0, begin <= end, end <= dataSize else {
            throw invalid("data_offsets [\(begin), \(end)] outside the data section of \(dataSize) bytes")
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: elementSize)
        guard !overflow, bytes == end - begin else {
            throw invalid("\(dtype) shape \(shape) needs \(overflow ? "more than Int.max" : String(bytes)) bytes, data_offsets span \(end - begin)")
        }
        guard (dataOffset + begin) % elementSize == 0 else {
            throw invalid("data at file offset \(dataOffset + begin) is not aligned to its \(elementSize)-byte elements")
        }
        return Entry(name: name, dtype: dtype, shape: shape, dataRange: begin..<end)
    }

    /// The tensor `name` as a zero-copy view. Throws when it is absent or of a dtype Quill
    /// does not compute with.
    public func tensor(_ name: String) throws -> Tensor {
        guard let entry = entries[name] else { throw ModelFileError.missingTensor(path: path, tensor: name) }
        guard let type = Self.elementTypes[entry.dtype] else {
            throw ModelFileError.unsupportedType(path: path, tensor: name, type: entry.dtype)
        }
        return try Tensor(name: name, elementType: type, shape: entry.shape, storage: TensorStorage(file: file),
                          byteOffset: dataOffset + entry.dataRange.lowerBound)
    }
}

/// The tensors of a checkpoint: one `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json`, each memory-mapped.
public struct SafetensorsCheckpoint: Sendable {
    /// Which file holds each tensor.
    public let files: [String: SafetensorsFile]
    private let owner: [String: String]

    /// Opens the single file, or the index and every shard it names. Every tensor in the
    /// index must be in its shard, and no tensor may appear in two shards.
    public init(directory: String) throws {
        let single = directory + "/model.safetensors"
        let index = directory + "/model.safetensors.index.json"
        var files: [String: SafetensorsFile] = [:]
        var owner: [String: String] = [:]
        if let mapped = try? MappedFile(path: index) {
            let json: StrictJSON
            do {
                json = try StrictJSON.parse(mapped.bytes)
            } catch {
                throw ModelFileError.invalidHeader(path: index, detail: "JSON: \(error)")
            }
            guard case let .object(weights)? = json["weight_map"] else {
                throw ModelFileError.invalidHeader(path: index, detail: "no weight_map object")
            }
            for (name, value) in weights {
                guard case let .string(shard) = value, !shard.contains("/"), !shard.isEmpty else {
                    throw ModelFileError.invalidHeader(path: index, detail: "weight_map entry '\(name)' is not a file name in the folder")
                }
                if files[shard] == nil { files[shard] = try SafetensorsFile(path: directory + "/" + shard) }
                guard files[shard]!.entries[name] != nil else {
                    throw ModelFileError.missingTensor(path: directory + "/" + shard, tensor: name)
                }
            }
            // Each name must live in exactly one shard (the index then agrees, as every
            // indexed name was found in its shard above).
            for (shard, file) in files.sorted(by: { $0.key < $1.key }) {
                for name in file.entries.keys {
                    if let other = owner[name] {
                        throw ModelFileError.invalidTensor(path: directory + "/" + shard, tensor: name,
                                                           detail: "also stored in \(other): ambiguous checkpoint")
                    }
                    owner[name] = shard
                }
            }
        } else {
            let file = try SafetensorsFile(path: single)
            files["model.safetensors"] = file
            for name in file.entries.keys { owner[name] = "model.safetensors" }
        }
        self.files = files
        self.owner = owner
    }

    /// Every tensor name.
    public var names: [String] { owner.keys.sorted() }

    /// The header entry of `name`, if present.
    public func entry(_ name: String) -> SafetensorsFile.Entry? {
        owner[name].flatMap { files[$0]?.entries[name] }
    }

    /// The tensor `name` as a zero-copy view.
    public func tensor(_ name: String) throws -> Tensor {
        guard let shard = owner[name], let file = files[shard] else {
            throw ModelFileError.missingTensor(path: files.keys.sorted().first ?? "checkpoint", tensor: name)
        }
        return try file.tensor(name)
    }
}
