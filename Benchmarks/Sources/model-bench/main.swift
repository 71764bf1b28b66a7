// Model benchmark: a random-weight Llama of realistic shape (default the 1.1B: hidden 2048,
// 22 layers, 32 heads, 4 KV heads, MLP 5632, vocabulary 32000), written once as F16
// safetensors under --work and loaded as F16, or quantized at load to Q8_0 and Q4_0.
// Prints prompt processing and decode tokens/s, and decode bytes-per-token ÷ the DRAM
// bandwidth measured in the same run. Speed does not depend on the weights' values.
//
//   swift run -c release model-bench [--threads 2] [--types f16,q8_0,q4_0] [--prompt 128] [--decode 32]
//                                    [--layers 22] [--work /tmp/quill-model-bench]
import CBenchSupport
import Foundation
import Quill

func seconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}
let arguments = CommandLine.arguments
func option(_ name: String, _ fallback: String) -> String {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return fallback }
    return arguments[index + 1]
}
let threads = Int(option("--threads", "2"))!
let promptLength = Int(option("--prompt", "128"))!
let decodeLength = Int(option("--decode", "32"))!
let layers = Int(option("--layers", "22"))!
let types = option("--types", "f16,q8_0,q4_0").split(separator: ",").compactMap { ElementType(rawValue: String($0)) }
let work = URL(fileURLWithPath: option("--work", "/tmp/quill-model-bench"))
let hidden = 2048, mlp = 5632, heads = 32, kvHeads = 4, vocabulary = 32000, d = 64
let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

func writeModel(_ folder: URL) throws {
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    var shapes: [(String, [Int])] = [("model.embed_tokens.weight", [vocabulary, hidden]), ("model.norm.weight", [hidden]),
                                     ("lm_head.weight", [vocabulary, hidden])]
    for l in 0..<layers {
        let p = "model.layers.\(l)."
        shapes += [(p + "input_layernorm.weight", [hidden]), (p + "post_attention_layernorm.weight", [hidden]),
                   (p + "self_attn.q_proj.weight", [hidden, hidden]), (p + "self_attn.k_proj.weight", [kvHeads * d, hidden]),
                   (p + "self_attn.v_proj.weight", [kvHeads * d, hidden]), (p + "self_attn.o_proj.weight", [hidden, hidden]),
                   (p + "mlp.gate_proj.weight", [mlp, hidden]), (p + "mlp.up_proj.weight", [mlp, hidden]), (p + "mlp.down_proj.weight", [hidden, mlp])]
    }
    var offset = 0
    var entries: [String] = []
    for (name, shape) in shapes {
        let bytes = shape.reduce(2, *)
        entries.append("\"\(name)\":{\"dtype\":\"F16\",\"shape\":\(shape),\"data_offsets\":[\(offset),\(offset + bytes)]}")
        offset += bytes
    }
    var json = Array(("{" + entries.joined(separator: ",") + "}").utf8)
    while json.count % 8 != 0 { json.append(0x20) }
    var header = [UInt8](repeating: 0, count: 8)
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { header.replaceSubrange(0..<8, with: $0) }
    let path = folder.appendingPathComponent("model.safetensors")
    _ = FileManager.default.createFile(atPath: path.path, contents: nil)
    let handle = try FileHandle(forWritingTo: path)
    try handle.write(contentsOf: header + json)
    // Small random values (|x| < 0.05), a 16 MiB random chunk repeated.
    var generator = SystemRandomNumberGenerator()
    let values = (0..<(8 << 20)).map { _ in Float.random(in: -0.05...0.05, using: &generator) }
    let chunk = try Quantization.encode(values, as: .f16)
    var left = offset
    while left > 0 { let n = min(left, chunk.count); try handle.write(contentsOf: Data(chunk[0..<n])); left -= n }
    try handle.close()
    let config = """
    {"model_type":"llama","hidden_size":\(hidden),"intermediate_size":\(mlp),"num_hidden_layers":\(layers),"num_attention_heads":\(heads),
     "num_key_value_heads":\(kvHeads),"vocab_size":\(vocabulary),"rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":8192}
    """
    try config.write(to: folder.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        try? FileManager.default.removeItem(at: folder.appendingPathComponent(file))
        try FileManager.default.copyItem(at: repository.appendingPathComponent("Tests/Fixtures/tokenizers/sentencepiece/\(file)"),
                                         to: folder.appendingPathComponent(file))
    }
}

@MainActor func bandwidth(_ pool: ThreadPool) -> Double {
    let count = 256 << 20
    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
    defer { buffer.deallocate() }
    buffer.initialize(repeating: 1, count: count)
    let sink = UnsafeMutablePointer<Float>.allocate(capacity: pool.threadCount)
    defer { sink.deallocate() }
    var best = 0.0
    for streams in [1, 4] {
        for _ in 0..<3 {
            let start = seconds()
            pool.parallelFor(pool.threadCount) { t in
                let part = count / pool.threadCount
                sink[t] = bench_stream_sum_interleaved(buffer + t * part, Int64(part), Int32(streams))
            }
            best = max(best, Double(count * 4) / (seconds() - start) / 1e9)
        }
    }
    return best
}

let folder = work.appendingPathComponent("llama-\(layers)l")
if !FileManager.default.fileExists(atPath: folder.appendingPathComponent("model.safetensors").path) {
    print("writing the model to \(folder.path) ...")
    try writeModel(folder)
}
let context = try ComputeContext(threads: threads)
let measured = bandwidth(context.pool)
print(String(format: "Llama %d layers (hidden %d, MLP %d, %d/%d heads, vocabulary %d), %d threads, DRAM bandwidth %.1f GB/s",
             layers, hidden, mlp, heads, kvHeads, vocabulary, threads, measured))
var generator = SystemRandomNumberGenerator()
let prompt = (0..<promptLength).map { _ in Int.random(in: 3..<vocabulary, using: &generator) }
for type in types {
    let files = try ModelFiles.load(folder.path, options: LoadOptions(quantization: type == .f16 ? nil : type))
    let model = try TransformerModel(files: files, context: context, maximumTokens: max(promptLength, 8))
    let cache = try model.makeCache(memoryBudget: 1 << 30)
    // Bytes a decode step reads: every layer matrix plus the output head (not the embedding).
    let names = files.weights.names.filter { $0 != "model.embed_tokens.weight" }
    let bytes = try names.reduce(0) { $0 + (try files.weights.tensor($1)).byteCount }
    let sequence = cache.makeSequence()
    let start = seconds()
    var logits = try model.forward(prompt, sequence: sequence, cache: cache)
    let prefill = seconds() - start
    var steps: [Double] = []
    for _ in 0..<decodeLength {
        let next = logits.withUnsafeBufferPointer { Kernels.argmax($0)! }
        let t0 = seconds()
        logits = try model.forward([next], sequence: sequence, cache: cache)
        steps.append(seconds() - t0)
    }
    let decode = steps.sorted()[steps.count / 2]
    print(String(format: "  %@: prompt %d tokens %.1f tok/s; decode %.2f tok/s (median of %d), %.2f GB read per token = %.2f of bandwidth",
                 type.description, promptLength, Double(promptLength) / prefill, 1 / decode, decodeLength,
                 Double(bytes) / 1e9, Double(bytes) / decode / 1e9 / measured))
}
