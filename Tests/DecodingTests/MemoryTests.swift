import CAllocationCounter
import Foundation
import Testing
@testable import Decoding

/// Resident memory and the KV budget (issue 9).
@Suite struct MemoryTests {
    /// Writes a random-weight F16 Llama of about 200 MB (hidden 1024, 6 layers, MLP 4096)
    /// with the fixture tokenizer, and returns its folder and weight bytes.
    static func writeLargeModel() throws -> (folder: URL, weightBytes: Int) {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("quill-memory-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let fixture = fixtureModels.appendingPathComponent("llama-gqa")
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            try FileManager.default.copyItem(at: fixture.appendingPathComponent(file), to: folder.appendingPathComponent(file))
        }
        let hidden = 1024, mlp = 4096, layers = 6, vocabulary = 512
        let config = """
        {"model_type": "llama", "hidden_size": \(hidden), "intermediate_size": \(mlp), "num_hidden_layers": \(layers),
         "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": \(vocabulary), "rms_norm_eps": 1e-5,
         "max_position_embeddings": 256, "eos_token_id": 2}
        """
        try config.write(to: folder.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        var tensors: [(String, [Int])] = [("model.embed_tokens.weight", [vocabulary, hidden]), ("model.norm.weight", [hidden]),
                                          ("lm_head.weight", [vocabulary, hidden])]
        for l in 0..<layers {
            let p = "model.layers.\(l)."
            tensors += [(p + "input_layernorm.weight", [hidden]), (p + "post_attention_layernorm.weight", [hidden])]
            tensors += ["q_proj", "k_proj", "v_proj", "o_proj"].map { (p + "self_attn.\($0).weight", [hidden, hidden]) }
            tensors += [(p + "mlp.gate_proj.weight", [mlp, hidden]), (p + "mlp.up_proj.weight", [mlp, hidden]),
                        (p + "mlp.down_proj.weight", [hidden, mlp])]
        }
        // The safetensors layout: an 8-byte header length, the JSON header, the F16 data.
        var offset = 0, entries: [String] = []
        for (name, shape) in tensors {
            let bytes = shape.reduce(2, *)
            entries.append("\"\(name)\":{\"dtype\":\"F16\",\"shape\":\(shape),\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var file = Data()
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(contentsOf: header)
        // Small values (|x| < 0.03 as F16 bit patterns 0x2000...0x27ff, either sign), repeating.
        var random = SeededGenerator(seed: 9)
        let pattern = (0..<(1 << 20)).map { _ in UInt16(0x2000 + random.next() % 0x800) | (random.next() % 2 == 0 ? 0 : 0x8000) }
        let chunk = pattern.withUnsafeBytes { Data($0) }
        var left = offset
        while left > 0 {
            file.append(chunk.prefix(min(left, chunk.count)))
            left -= min(left, chunk.count)
        }
        try file.write(to: folder.appendingPathComponent("model.safetensors"))
        return (folder, offset)
    }

    /// Resident memory after loading the model and generating from it (so every weight page
    /// has been read) stays within 10% + 50 MB of the weights' size: they are mapped, not
    /// copied. Measured in a child process, whose resident memory is this test's alone;
    /// not under a sanitizer, whose shadow memory counts as resident.
    @Test(.enabled(if: !quill_sanitizer_build(), "sanitizer shadow memory inflates the resident size"))
    func residentMemoryStaysNearTheMappedWeightSize() async throws {
        let result = try #require(await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            let (folder, weightBytes) = try MemoryTests.writeLargeModel()
            let baseline = MemoryTests.residentBytes()
            defer { try? FileManager.default.removeItem(at: folder) }
            var configuration = GeneratorConfiguration()
            configuration.threads = 2
            configuration.kvMemoryBudget = 8 << 20
            let generator = try Generator(modelPath: folder.path, configuration: configuration)
            var parameters = GenerationParameters()
            parameters.maxTokens = 4
            parameters.ignoreEndOfSequence = true
            _ = try await generator.respond(.tokens([3, 4, 5]), parameters: parameters)
            print(weightBytes, MemoryTests.residentBytes(), baseline)
        })
        let fields = String(decoding: result.standardOutputContent, as: UTF8.self).split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        try #require(fields.count == 3)
        let (weights, resident) = (fields[0], fields[1])
        print("weights \(weights >> 20) MiB, resident before loading \(fields[2] >> 20) MiB, after load and generation \(resident >> 20) MiB, "
              + "bound \((weights + weights / 10 + (50 << 20)) >> 20) MiB")
        #expect(resident <= weights + weights / 10 + (50 << 20))
        #expect(resident >= weights)  // the weights really were read
    }

    /// A mapped Q4_0 matrix interleaved for the kernels (as a Q4_0 GGUF is at load) does not
    /// stay resident twice: the file's pages are released once copied. In a child process,
    /// for the same reasons as above.
    @Test(.enabled(if: !quill_sanitizer_build(), "sanitizer shadow memory inflates the resident size"))
    func interleavingMappedQ4ReleasesTheFilePages() async throws {
        let result = try #require(await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            let rows = 2048, columns = 8192, bytes = rows * columns / 32 * 18  // 9 MiB, four times over
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("quill-q4-\(UUID().uuidString).bin").path
            defer { try? FileManager.default.removeItem(atPath: path) }
            var data = Data(count: bytes * 4)
            data.withUnsafeMutableBytes { raw in
                for block in 0..<(bytes * 4 / 18) {  // scale 1.0, nibbles from the block index
                    raw[block * 18] = 0x00; raw[block * 18 + 1] = 0x3C
                    for j in 2..<18 { raw[block * 18 + j] = UInt8(truncatingIfNeeded: block &* 31 &+ j) }
                }
            }
            try data.write(to: URL(fileURLWithPath: path))
            let storage = TensorStorage(file: try MappedFile(path: path))
            let tensor = try Tensor(name: "w", elementType: .q4_0, shape: [rows * 4, columns], storage: storage)
            let values = tensor.floats()  // every page of the file is now resident
            let before = MemoryTests.residentBytes()
            let interleaved = try tensor.interleavedForMatmul()
            let after = MemoryTests.residentBytes()
            let same = interleaved.floats() == values && tensor.floats() == values  // the file reads back after the release
            print(bytes * 4, before, after, same ? 1 : 0)
        })
        let fields = String(decoding: result.standardOutputContent, as: UTF8.self).split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        try #require(fields.count == 4)
        let (file, before, after) = (fields[0], fields[1], fields[2])
        print("Q4_0 file \(file >> 20) MiB, resident before interleaving \(before >> 20) MiB, after \(after >> 20) MiB")
        #expect(fields[3] == 1)
        // The interleaved copy adds the file's size; the released pages take as much back.
        #expect(after < before + file / 4)
    }

    /// VmRSS of this process, in bytes.
    static func residentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
        return (line.split(whereSeparator: \.isWhitespace).dropFirst().first.flatMap { Int($0) } ?? 0) * 1024
    }

    /// The KV pool holds as many whole blocks as the budget pays for, never more.
    @Test(arguments: [4096, 4097, 8191, 100_000, 1 << 22])
    func kvBudgetIsHonouredExactly(budget: Int) throws {
        var configuration = GeneratorConfiguration()
        configuration.threads = 1
        configuration.kvMemoryBudget = budget
        configuration.kvElementType = .f32
        let generator = try Generator(modelPath: fixtureModels.appendingPathComponent("llama-gqa").path, configuration: configuration)
        let blockBytes = 2 * 2 * 2 * 8 * 16 * 4  // keys and values × 2 layers × 2 KV heads × 8 dimensions × 16 tokens × F32
        #expect(generator.availableKVBlocks == budget / blockBytes)
    }
}
