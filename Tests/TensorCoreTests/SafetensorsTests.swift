import Foundation
import Testing
@testable import TensorCore

/// Files written by the `safetensors` library (Fixtures/safetensors, made by
/// Scripts/make_tensorcore_fixtures.py), plus hand-made broken files.
@Suite struct SafetensorsTests {
    static let directory = fixturesDirectory.appendingPathComponent("safetensors")

    @Test func readsEveryDtypeTheLibraryWrote() throws {
        let file = try SafetensorsFile(path: Self.directory.appendingPathComponent("mixed.safetensors").path)
        let expected = try loadFixture("safetensors/mixed.json")
        #expect(file.metadata == ["format": "pt", "note": "fixture"])
        #expect(Set(file.entries.keys) == Set(expected.keys))
        for (name, any) in expected {
            let reference = any as! [String: Any]
            let entry = try #require(file.entries[name])
            #expect(entry.shape == (reference["shape"] as! [Int]))
            let values = doubles(reference["values"]).map(Float.init)
            switch reference["dtype"] as! String {
            case "float32", "float16", "bfloat16":
                let tensor = try file.tensor(name)
                #expect(tensor.floats() == values, "\(name)")
                #expect(tensor.rawPointer >= file.file.baseAddress! && tensor.rawPointer < file.file.baseAddress! + file.file.byteCount,
                        "a view into the mapping, not a copy")
            default:  // int8 / uint8: listed, but not a type Quill computes with
                #expect(throws: ModelFileError.unsupportedType(path: file.path, tensor: name, type: entry.dtype)) { try file.tensor(name) }
            }
        }
        #expect(throws: ModelFileError.self) { try file.tensor("absent") }
    }

    @Test func readsAShardedCheckpoint() throws {
        let checkpoint = try SafetensorsCheckpoint(directory: Self.directory.appendingPathComponent("sharded").path)
        let expected = try loadFixture("safetensors/sharded.json")
        #expect(checkpoint.names == expected.keys.sorted())
        for (name, values) in expected { #expect(try checkpoint.tensor(name).floats() == doubles(values).map(Float.init)) }
        #expect(checkpoint.files.count == 2)
    }

    // MARK: - Broken files

    static func temporaryFile(_ bytes: [UInt8]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("quill-\(UUID()).safetensors").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func file(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) throws -> String {
        var bytes = [UInt8](repeating: 0, count: 8)
        var json = Array(header.utf8)
        while json.count % 8 != 0 { json.append(0x20) }  // writers pad so data starts aligned
        withUnsafeBytes(of: (declaredLength ?? UInt64(json.count)).littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
        return try temporaryFile(bytes + json + data)
    }

    /// Opening must throw a ModelFileError naming the file whose description contains `text`.
    func expectRejected(_ path: String, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("accepted a broken file (\(text))", sourceLocation: sourceLocation)
        } catch let error as ModelFileError {
            #expect("\(error)".contains(path) && "\(error)".contains(text), "\(error)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func everyTruncationIsRejected() throws {
        let whole = try Array(Data(contentsOf: Self.directory.appendingPathComponent("mixed.safetensors")))
        for length in 0..<whole.count {
            let path = try Self.temporaryFile(Array(whole[0..<length]))
            defer { try? FileManager.default.removeItem(atPath: path) }
            #expect(throws: ModelFileError.self, "truncated to \(length) bytes") { try SafetensorsFile(path: path) }
        }
    }

    @Test func malformedHeadersAreRejected() throws {
        let four = [UInt8](repeating: 0, count: 16)
        expectRejected(try Self.file(header: "{}", declaredLength: UInt64.max), "header of")
        expectRejected(try Self.file(header: #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: [0, 0]), "outside the data section")
        expectRejected(try Self.file(header: #"{"w":{"dtype":"Q9","shape":[4],"data_offsets":[0,16]}}"#, data: four), "unsupported element type Q9")
        expectRejected(try Self.file(header: #"{"w":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}"#, data: four), "needs 20 bytes")
        expectRejected(try Self.file(header: #"{"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}"#, data: four), "non-negative")
        expectRejected(try Self.file(header: #"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#, data: four), "overflows")
        expectRejected(try Self.file(header: #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}}"#, data: four), "outside the data section")
        expectRejected(try Self.file(header: #"{"w":{"dtype":"F32","shape":[4]}}"#, data: four), "data_offsets")
        expectRejected(try Self.file(header: #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"v":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, data: four), "overlap")
        expectRejected(try Self.file(header: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, data: four), "duplicate key")
        expectRejected(try Self.file(header: #"{"w":{"dtype":"F16","shape":[2],"data_offsets":[1,5]}}"#, data: four), "not aligned")
        expectRejected(try Self.file(header: "[1,2]"), "not a JSON object")
        expectRejected(try Self.file(header: "{\"w\":"), "JSON")
        expectRejected(try Self.file(header: String(repeating: "[", count: 100_000)), "nesting")
        expectRejected(try Self.file(header: #"{"__metadata__":{"a":1}}"#), "not a string")
        // Invalid UTF-8 inside a name.
        var bytes = [UInt8](repeating: 0, count: 8)
        let header: [UInt8] = Array(#"{"w"#.utf8) + [0xFF, 0xFE] + Array(#"":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#.utf8)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
        expectRejected(try Self.temporaryFile(bytes + header), "invalid UTF-8")
    }

    @Test func shardedCheckpointErrors() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("quill-shards-\(UUID())")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        let shard = Self.directory.appendingPathComponent("sharded/model-00001-of-00002.safetensors")
        try FileManager.default.copyItem(at: shard, to: root.appendingPathComponent("one.safetensors"))
        try FileManager.default.copyItem(at: shard, to: root.appendingPathComponent("two.safetensors"))
        let index = root.appendingPathComponent("model.safetensors.index.json")
        func check(_ json: String, _ text: String) {
            try? json.write(to: index, atomically: true, encoding: .utf8)
            #expect { try SafetensorsCheckpoint(directory: root.path) } throws: { "\($0)".contains(text) }
        }
        check(#"{"weight_map":{"a.weight":"missing.safetensors"}}"#, "missing.safetensors")
        check(#"{"weight_map":{"nope":"one.safetensors"}}"#, "'nope' is missing")
        check(#"{"weight_map":{"a.weight":"../one.safetensors"}}"#, "not a file name")
        check(#"{"weight_map":{"a.weight":"one.safetensors","a.bias":"two.safetensors"}}"#, "ambiguous")
        check(#"{"weights":{}}"#, "weight_map")
        #expect(throws: TensorError.self) { try SafetensorsCheckpoint(directory: root.path + "/absent") }
    }
}

@Suite struct StrictJSONTests {
    @Test func parsesWhatJSONAllows() throws {
        let json = try StrictJSON.parse(#" {"a": [1, -2, 3.5e2, true, false, null], "b": "x\"\\\/\n\u00e9\ud83d\ude00", "c": {}} "#)
        #expect(json["a"] == .array([.integer(1), .integer(-2), .number(350), .bool(true), .bool(false), .null]))
        #expect(json["b"] == .string("x\"\\/\né😀"))
        #expect(json["c"] == .object([]))
    }

    @Test(arguments: ["", "{", "{\"a\" 1}", "[1,]", "{\"a\":1,}", "\"\\ud800\"", "\"\\x\"", "01a", "-", "1 2", "{\"a\":1,\"a\":2}", "\"\u{01}\"", "1e999"])
    func rejectsMalformedDocuments(text: String) {
        #expect(throws: StrictJSON.ParseError.self) { try StrictJSON.parse(text) }
    }
}
