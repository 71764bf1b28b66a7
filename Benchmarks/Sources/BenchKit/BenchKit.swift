// What every benchmark here needs: a monotonic clock, medians, command-line options, the
// DRAM bandwidth probe, and a writer for large random-valued safetensors files.
import CBenchSupport
import Foundation
import Quill

/// Seconds on the monotonic clock.
public func seconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}

/// The middle value (upper middle for an even count).
public func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

/// The value after `name` on the command line, or `fallback`.
public func option(_ name: String, _ fallback: String) -> String {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return fallback }
    return arguments[index + 1]
}

/// DRAM read bandwidth (GB/s) over `megabytes` MiB split across the pool's threads: the
/// better of one sequential stream per thread and four interleaved ones.
public func measureBandwidth(pool: ThreadPool, megabytes: Int = 1024, repetitions: Int = 3) -> Double {
    let count = megabytes << 20 / 4
    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
    defer { buffer.deallocate() }
    buffer.initialize(repeating: 1, count: count)
    let threads = pool.threadCount
    let sink = UnsafeMutablePointer<Float>.allocate(capacity: threads)
    defer { sink.deallocate() }
    var best = 0.0
    for streams in [1, 4] {
        for _ in 0..<repetitions {
            let start = seconds()
            pool.parallelFor(threads) { t in
                sink[t] = bench_stream_sum_interleaved(buffer + t * (count / threads), Int64(count / threads), Int32(streams))
            }
            best = max(best, Double(count * 4) / (seconds() - start) / 1e9)
        }
    }
    return best
}

/// Writes an F16 safetensors file with these tensors, filled with small random values (a
/// 16 MiB random chunk repeated: speed does not depend on the values).
public func writeSafetensors(_ url: URL, tensors: [(name: String, shape: [Int])]) throws {
    var offset = 0
    var entries: [String] = []
    for (name, shape) in tensors {
        let bytes = shape.reduce(2, *)
        entries.append("\"\(name)\":{\"dtype\":\"F16\",\"shape\":\(shape),\"data_offsets\":[\(offset),\(offset + bytes)]}")
        offset += bytes
    }
    var json = Array(("{" + entries.joined(separator: ",") + "}").utf8)
    while json.count % 8 != 0 { json.append(0x20) }
    var header = [UInt8](repeating: 0, count: 8)
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { header.replaceSubrange(0..<8, with: $0) }
    _ = FileManager.default.createFile(atPath: url.path, contents: nil)
    let handle = try FileHandle(forWritingTo: url)
    defer { try? handle.close() }
    try handle.write(contentsOf: header + json)
    var generator = SystemRandomNumberGenerator()
    let chunk = try Quantization.encode((0..<(8 << 20)).map { _ in Float.random(in: -0.05...0.05, using: &generator) }, as: .f16)
    var left = offset
    while left > 0 { let n = min(left, chunk.count); try handle.write(contentsOf: Data(chunk[0..<n])); left -= n }
}

/// The tensors of a Llama-shaped checkpoint.
public func llamaTensors(hidden: Int, mlp: Int, kvDimension: Int, vocabulary: Int, layers: Int) -> [(name: String, shape: [Int])] {
    var tensors: [(name: String, shape: [Int])] = [("model.embed_tokens.weight", [vocabulary, hidden]), ("model.norm.weight", [hidden]),
                                                   ("lm_head.weight", [vocabulary, hidden])]
    for l in 0..<layers {
        let p = "model.layers.\(l)."
        tensors += [(p + "input_layernorm.weight", [hidden]), (p + "post_attention_layernorm.weight", [hidden]),
                    (p + "self_attn.q_proj.weight", [hidden, hidden]), (p + "self_attn.k_proj.weight", [kvDimension, hidden]),
                    (p + "self_attn.v_proj.weight", [kvDimension, hidden]), (p + "self_attn.o_proj.weight", [hidden, hidden]),
                    (p + "mlp.gate_proj.weight", [mlp, hidden]), (p + "mlp.up_proj.weight", [mlp, hidden]),
                    (p + "mlp.down_proj.weight", [hidden, mlp])]
    }
    return tensors
}

/// The shape of a random-weight Llama benchmark model.
public struct LlamaShape: Sendable {
    public var hidden, mlp, layers, heads, keyValueHeads, vocabulary: Int
    public init(hidden: Int, mlp: Int, layers: Int, heads: Int, keyValueHeads: Int, vocabulary: Int = 32000) {
        self.hidden = hidden; self.mlp = mlp; self.layers = layers; self.heads = heads
        self.keyValueHeads = keyValueHeads; self.vocabulary = vocabulary
    }
    /// The ~1.1B (TinyLlama) and ~110M shapes of the performance issue.
    public static func billion(layers: Int = 22) -> LlamaShape { LlamaShape(hidden: 2048, mlp: 5632, layers: layers, heads: 32, keyValueHeads: 4) }
    public static let small = LlamaShape(hidden: 768, mlp: 2048, layers: 12, heads: 12, keyValueHeads: 12)
    public var name: String { "llama-h\(hidden)-\(layers)l" }
}

/// Writes (once) a random-weight F16 Llama folder of `shape` under `work` with the test
/// SentencePiece tokenizer, and returns its path.
public func llamaFolder(_ shape: LlamaShape, work: URL) throws -> URL {
    let folder = work.appendingPathComponent(shape.name)
    if FileManager.default.fileExists(atPath: folder.appendingPathComponent("model.safetensors").path) { return folder }
    print("writing the model to \(folder.path) ...")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let d = shape.hidden / shape.heads
    try writeSafetensors(folder.appendingPathComponent("model.safetensors"),
                         tensors: llamaTensors(hidden: shape.hidden, mlp: shape.mlp, kvDimension: shape.keyValueHeads * d,
                                               vocabulary: shape.vocabulary, layers: shape.layers))
    let config = """
    {"model_type":"llama","hidden_size":\(shape.hidden),"intermediate_size":\(shape.mlp),"num_hidden_layers":\(shape.layers),
     "num_attention_heads":\(shape.heads),"num_key_value_heads":\(shape.keyValueHeads),"vocab_size":\(shape.vocabulary),
     "rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":8192}
    """
    try config.write(to: folder.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
    let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        try? FileManager.default.removeItem(at: folder.appendingPathComponent(file))
        try FileManager.default.copyItem(at: repository.appendingPathComponent("Tests/Fixtures/tokenizers/sentencepiece/\(file)"),
                                         to: folder.appendingPathComponent(file))
    }
    return folder
}
