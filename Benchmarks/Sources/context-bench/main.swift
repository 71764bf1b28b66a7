// Decode speed against context length for the three families: a dense Llama (the 1.1B
// shape), an 8-expert top-2 mixture of experts, and a ~130M Mamba, all random-weight and
// written once under --work. One sequence per model grows to each depth (prefilled in
// chunks), then decodes --decode tokens there; the median step is reported. A bandwidth
// probe runs before each model, for the record.
//
//   swift run -c release context-bench [--threads 2] [--depths 0,512,1024,2048,4096]
//       [--decode 16] [--dense-type q4_0] [--moe-type q4_0] [--mamba-type f16] [--json out.json]
// Plot: python3 Scripts/plot_context.py out.json Documentation/decode-vs-context.png
import BenchKit
import Foundation
import Quill

let threads = Int(option("--threads", "2"))!
let depths = option("--depths", "0,512,1024,2048,4096").split(separator: ",").compactMap { Int($0) }.sorted()
let decodeLength = Int(option("--decode", "16"))!
let only = option("--only", "dense,moe,mamba").split(separator: ",").map(String.init)
let work = URL(fileURLWithPath: option("--work", "/tmp/quill-model-bench"))
let jsonPath = option("--json", "")
func type(_ name: String, _ fallback: String) -> ElementType? {
    let t = ElementType(rawValue: option(name, fallback))
    return t == .f16 ? nil : t
}

/// Writes a config and random F16 weights once.
func folder(_ name: String, config: String, tensors: [(name: String, shape: [Int])]) throws -> URL {
    let url = work.appendingPathComponent(name)
    if FileManager.default.fileExists(atPath: url.appendingPathComponent("model.safetensors").path) { return url }
    print("writing \(url.path) ...")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    try writeSafetensors(url.appendingPathComponent("model.safetensors"), tensors: tensors)
    try config.write(to: url.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
    let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        try? FileManager.default.copyItem(at: repository.appendingPathComponent("Tests/Fixtures/tokenizers/sentencepiece/\(file)"),
                                          to: url.appendingPathComponent(file))
    }
    return url
}

func moeFolder() throws -> URL {
    let h = 1024, layers = 8, experts = 8, inter = 2816, kv = 8 * 64
    var tensors: [(name: String, shape: [Int])] = [("model.embed_tokens.weight", [32000, h]), ("model.norm.weight", [h]), ("lm_head.weight", [32000, h])]
    for l in 0..<layers {
        let p = "model.layers.\(l)."
        tensors += [(p + "input_layernorm.weight", [h]), (p + "post_attention_layernorm.weight", [h]),
                    (p + "self_attn.q_proj.weight", [h, h]), (p + "self_attn.k_proj.weight", [kv, h]),
                    (p + "self_attn.v_proj.weight", [kv, h]), (p + "self_attn.o_proj.weight", [h, h]),
                    (p + "block_sparse_moe.gate.weight", [experts, h])]
        for e in 0..<experts {
            let q = p + "block_sparse_moe.experts.\(e)."
            tensors += [(q + "w1.weight", [inter, h]), (q + "w3.weight", [inter, h]), (q + "w2.weight", [h, inter])]
        }
    }
    let config = """
    {"model_type":"mixtral","hidden_size":\(h),"intermediate_size":\(inter),"num_hidden_layers":\(layers),"num_attention_heads":16,
     "num_key_value_heads":8,"vocab_size":32000,"rms_norm_eps":1e-5,"rope_theta":1000000.0,"max_position_embeddings":8192,
     "num_local_experts":\(experts),"num_experts_per_tok":2}
    """
    return try folder("mixtral-8x-h1024-8l", config: config, tensors: tensors)
}

func mambaFolder() throws -> URL {
    let h = 768, layers = 24, inner = 1536, state = 16, rank = 48, kernel = 4, vocabulary = 32000
    var tensors: [(name: String, shape: [Int])] = [("backbone.embeddings.weight", [vocabulary, h]), ("backbone.norm_f.weight", [h])]
    for l in 0..<layers {
        let p = "backbone.layers.\(l)."
        tensors += [(p + "norm.weight", [h]), (p + "mixer.in_proj.weight", [2 * inner, h]), (p + "mixer.conv1d.weight", [inner, 1, kernel]),
                    (p + "mixer.conv1d.bias", [inner]), (p + "mixer.x_proj.weight", [rank + 2 * state, inner]),
                    (p + "mixer.dt_proj.weight", [inner, rank]), (p + "mixer.dt_proj.bias", [inner]), (p + "mixer.A_log", [inner, state]),
                    (p + "mixer.D", [inner]), (p + "mixer.out_proj.weight", [h, inner])]
    }
    let config = """
    {"model_type":"mamba","hidden_size":\(h),"state_size":\(state),"num_hidden_layers":\(layers),"expand":2,"conv_kernel":\(kernel),
     "time_step_rank":\(rank),"vocab_size":\(vocabulary),"use_conv_bias":true,"use_bias":false,"tie_word_embeddings":true,
     "layer_norm_epsilon":1e-5}
    """
    return try folder("mamba-h768-24l", config: config, tensors: tensors)
}

let context = try ComputeContext(threads: threads)
var results: [[String: Any]] = []
var random = SystemRandomNumberGenerator()
for family in only {
    let (url, quantization): (URL, ElementType?)
    switch family {
    case "dense": (url, quantization) = (try llamaFolder(.billion(), work: work), type("--dense-type", "q4_0"))
    case "moe": (url, quantization) = (try moeFolder(), type("--moe-type", "q4_0"))
    default: (url, quantization) = (try mambaFolder(), type("--mamba-type", "f16"))
    }
    let files = try ModelFiles.load(url.path, options: LoadOptions(quantization: quantization, threads: threads))
    let bandwidth = measureBandwidth(pool: context.pool)
    let label = "\(family) \(quantization?.description ?? "F16")"
    print(String(format: "%@ (%@), %d threads, DRAM bandwidth %.1f GB/s", label, url.lastPathComponent, threads, bandwidth))
    let vocabulary = 32000, chunk = 256
    func tokens(_ n: Int) -> [Int] { (0..<n).map { _ in Int.random(in: 3..<vocabulary, using: &random) } }
    var rows: [[String: Any]] = []
    // Grows one sequence through the depths: `advance` adds tokens, `step` decodes one.
    let advance: ([Int]) throws -> [Float]
    let length: () throws -> Int
    switch files.configuration {
    case .transformer:
        let model = try TransformerModel(files: files, context: context, maximumTokens: chunk)
        let cache = try model.makeCache(memoryBudget: 2 << 30)
        let sequence = cache.makeSequence()
        advance = { try model.forward($0, sequence: sequence, cache: cache) }
        length = { try cache.length(of: sequence) }
    case .mamba:
        let model = try MambaModel(files: files, context: context, maximumTokens: chunk)
        nonisolated(unsafe) var state = model.makeState()
        advance = { try model.forward($0, state: &state) }
        length = { state.length }
    }
    _ = try advance(tokens(1))
    for depth in depths {
        while try length() < depth { _ = try advance(tokens(min(chunk, depth - (try length())))) }
        var logits = try advance(tokens(1))
        var steps: [Double] = []
        for _ in 0..<decodeLength {
            let next = logits.withUnsafeBufferPointer { Kernels.argmax($0)! }
            let t0 = seconds()
            logits = try advance([next])
            steps.append(seconds() - t0)
        }
        let rate = 1 / median(steps)
        print(String(format: "  depth %5d: %.1f tok/s", depth, rate))
        rows.append(["depth": depth, "tokens_per_second": rate])
    }
    results.append(["family": family, "model": url.lastPathComponent, "type": quantization?.description ?? "F16",
                    "bandwidth_gb_s": bandwidth, "threads": threads, "points": rows])
}
if !jsonPath.isEmpty {
    try JSONSerialization.data(withJSONObject: results, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: jsonPath))
}
