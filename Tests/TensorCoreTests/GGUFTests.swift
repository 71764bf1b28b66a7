import Foundation
import Testing
@testable import TensorCore

/// GGUF files written by the `gguf` package (Fixtures/gguf, made by
/// Scripts/make_tensorcore_fixtures.py), plus hand-made broken files.
@Suite struct GGUFTests {
    static let directory = fixturesDirectory.appendingPathComponent("gguf")

    @Test(arguments: ["all-types", "aligned-64"])
    func readsTensorsAsTheGGUFPackageDequantizesThem(name: String) throws {
        let file = try GGUFFile(path: Self.directory.appendingPathComponent(name + ".gguf").path)
        #expect(file.version == 3)
        #expect(file.alignment == (name == "aligned-64" ? 64 : 32))
        let expected = try loadFixture("gguf/\(name).json")
        #expect(Set(file.tensors.keys) == Set(expected.keys))
        for (tensorName, any) in expected {
            let reference = any as! [String: Any]
            let tensor = try file.tensor(tensorName)
            #expect(tensor.shape == (reference["shape"] as! [Int]), "\(tensorName)")
            let values = tensor.floats(), want = doubles(reference["values"])
            let kQuant = (reference["type"] as! String).hasSuffix("_K")
            for i in values.indices {
                // Exact for types used in place; K-quants within float rounding of numpy's.
                let tolerance = kQuant ? 1e-6 * max(1, abs(want[i])) : 0
                #expect(abs(Double(values[i]) - Double(Float(want[i]))) <= tolerance, "\(tensorName)[\(i)]")
            }
            if !kQuant { #expect(tensor.rawPointer == file.file.baseAddress! + file.tensors[tensorName]!.fileOffset, "in place") }
        }
    }

    @Test func readsEveryMetadataType() throws {
        let file = try GGUFFile(path: Self.directory.appendingPathComponent("all-types.gguf").path)
        #expect(file["general.architecture"] == .string("llama"))
        #expect(file["test.u8"] == .uint8(200))
        #expect(file["test.i8"] == .int8(-100))
        #expect(file["test.u16"] == .uint16(60000))
        #expect(file["test.i16"] == .int16(-30000))
        #expect(file["test.u32"] == .uint32(4_000_000_000))
        #expect(file["test.i32"] == .int32(-2_000_000_000))
        #expect(file["test.f32"] == .float32(0.15625))
        #expect(file["test.u64"] == .uint64(1 << 62))
        #expect(file["test.i64"] == .int64(-(1 << 61)))
        #expect(file["test.f64"] == .float64(3.141592653589793))
        #expect(file["test.bool"] == .bool(true))
        #expect(file["test.string"] == .string("héllo ▁wörld 🙂"))
        #expect(file["test.ints"]?.array?.compactMap(\.integer) == [1, 2, 3])
        #expect(file["test.strings"]?.array?.compactMap(\.string) == ["a", "", "ü"])
        #expect(file["test.nested"] == .array([.array([.int32(1), .int32(2)]), .array([.int32(3)])])
            || file["test.nested"]?.array?.map { $0.array?.compactMap(\.integer) ?? [] } == [[1, 2], [3]])
    }

    // MARK: - Broken files

    /// A minimal GGUF writer for hand-made files.
    struct Builder {
        var bytes: [UInt8] = []
        mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        mutating func string(_ s: String) { u64(UInt64(s.utf8.count)); bytes += Array(s.utf8) }
        mutating func header(version: UInt32 = 3, tensors: UInt64, metadata: UInt64) {
            u32(0x4655_4747); u32(version); u64(tensors); u64(metadata)
        }
        mutating func tensorInfo(_ name: String, dims: [UInt64], type: UInt32, offset: UInt64) {
            string(name); u32(UInt32(dims.count)); dims.forEach { u64($0) }; u32(type); u64(offset)
        }
        mutating func padData(alignment: Int = 32) { while bytes.count % alignment != 0 { bytes.append(0) } }
    }

    func expectRejected(_ bytes: [UInt8], _ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("quill-\(UUID()).gguf").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            _ = try GGUFFile(path: path)
            Issue.record("accepted a broken file (\(text))", sourceLocation: sourceLocation)
        } catch let error as ModelFileError {
            #expect("\(error)".contains(path) && "\(error)".contains(text), "\(error)", sourceLocation: sourceLocation)
        }
    }

    /// One valid F32 tensor of 8 elements, for variations.
    func validFile(name: String = "w", dims: [UInt64] = [8], type: UInt32 = 0, offset: UInt64 = 0, dataBytes: Int = 32) -> [UInt8] {
        var b = Builder()
        b.header(tensors: 1, metadata: 0)
        b.tensorInfo(name, dims: dims, type: type, offset: offset)
        b.padData()
        b.bytes += [UInt8](repeating: 0, count: dataBytes)
        return b.bytes
    }

    @Test func handMadeValidFileOpens() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("quill-\(UUID()).gguf").path
        try Data(validFile()).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try GGUFFile(path: path).tensor("w").floats() == [Float](repeating: 0, count: 8))
    }

    @Test func everyTruncationIsRejected() throws {
        let url = Self.directory.appendingPathComponent("all-types.gguf")
        let whole = try Array(Data(contentsOf: url))
        // The writer pads the file after the last tensor; cutting only padding leaves a
        // valid file, so truncate anywhere before the end of the last tensor's data.
        let dataEnd = try GGUFFile(path: url.path).tensors.values.map { $0.fileOffset + $0.byteCount }.max()!
        #expect(dataEnd <= whole.count && whole.count - dataEnd < 32)
        for length in 0..<dataEnd {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("quill-trunc-\(length).gguf").path
            try Data(whole[0..<length]).write(to: URL(fileURLWithPath: path))
            defer { try? FileManager.default.removeItem(atPath: path) }
            #expect(throws: ModelFileError.self, "truncated to \(length) bytes") { try GGUFFile(path: path) }
        }
    }

    @Test func malformedFilesAreRejected() throws {
        var b = Builder()
        b.bytes = Array("GGML".utf8) + [3, 0, 0, 0]
        try expectRejected(b.bytes, "bad magic")
        b = Builder(); b.header(version: 1, tensors: 0, metadata: 0)
        try expectRejected(b.bytes, "version 1")
        b = Builder(); b.header(tensors: UInt64.max, metadata: 0)
        try expectRejected(b.bytes, "tensor count")
        b = Builder(); b.header(tensors: 0, metadata: 1 << 40)
        try expectRejected(b.bytes, "metadata count")
        b = Builder(); b.header(tensors: 0, metadata: 1); b.string("k"); b.u32(99)
        try expectRejected(b.bytes, "unknown metadata value type 99")
        b = Builder(); b.header(tensors: 0, metadata: 1); b.string("k"); b.u32(7); b.bytes.append(2)
        try expectRejected(b.bytes, "bool value 2")
        b = Builder(); b.header(tensors: 0, metadata: 1); b.string("k"); b.u32(8); b.u64(1 << 50)
        try expectRejected(b.bytes, "string length")
        b = Builder(); b.header(tensors: 0, metadata: 1); b.string("k"); b.u32(9); b.u32(4); b.u64(1 << 40)
        try expectRejected(b.bytes, "array length")
        b = Builder(); b.header(tensors: 0, metadata: 1); b.string("k"); b.u32(9); b.u32(77); b.u64(1)
        try expectRejected(b.bytes, "unknown array element type")
        b = Builder(); b.header(tensors: 0, metadata: 1); b.string("k"); b.u32(8); b.u64(2); b.bytes += [0xC3, 0x28]
        try expectRejected(b.bytes, "invalid UTF-8")
        b = Builder(); b.header(tensors: 0, metadata: 2); b.string("k"); b.u32(4); b.u32(1); b.string("k"); b.u32(4); b.u32(2)
        try expectRejected(b.bytes, "appears twice")
        b = Builder(); b.header(tensors: 0, metadata: 1); b.string("general.alignment"); b.u32(4); b.u32(24)
        try expectRejected(b.bytes, "power of two")
        // Deeply nested arrays.
        b = Builder(); b.header(tensors: 0, metadata: 1); b.string("k"); b.u32(9)
        for _ in 0..<20 { b.u32(9); b.u64(1) }
        try expectRejected(b.bytes, "nested deeper")

        try expectRejected(validFile(type: 99), "ggml type 99")
        try expectRejected(validFile(type: 2), "not a multiple")                        // Q4_0 needs 32 elements per row
        try expectRejected(validFile(dims: [8, 1, 1, 1, 1]), "5 dimensions")
        try expectRejected(validFile(dims: [1 << 32, 1 << 32, 1 << 32]), "overflow")
        try expectRejected(validFile(offset: 16), "not aligned")
        try expectRejected(validFile(offset: 64), "needs bytes")
        try expectRejected(validFile(dataBytes: 31), "needs bytes")
        var two = Builder()
        two.header(tensors: 2, metadata: 0)
        two.tensorInfo("w", dims: [8], type: 0, offset: 0)
        two.tensorInfo("w", dims: [8], type: 0, offset: 32)
        two.padData(); two.bytes += [UInt8](repeating: 0, count: 64)
        try expectRejected(two.bytes, "more than once")
        var overlap = Builder()
        overlap.header(tensors: 2, metadata: 0)
        overlap.tensorInfo("a", dims: [16], type: 0, offset: 0)
        overlap.tensorInfo("b", dims: [8], type: 0, offset: 32)
        overlap.padData(); overlap.bytes += [UInt8](repeating: 0, count: 64)
        try expectRejected(overlap.bytes, "overlaps")
    }
}
