// Model benchmark: a random-weight Llama of realistic shape (default the 1.1B: hidden 2048,
// 22 layers, 32 heads, 4 KV heads, MLP 5632, vocabulary 32000), written once as F16
// safetensors under --work and loaded as F16, or quantized at load to Q8_0 and Q4_0.
// Prints prompt processing and decode tokens/s, and decode bytes-per-token ÷ the DRAM
// bandwidth measured in the same run. Speed does not depend on the weights' values.
//
//   swift run -c release model-bench [--threads 2] [--types f16,q8_0,q4_0] [--prompt 128] [--decode 32]
//                                    [--layers 22] [--work /tmp/quill-model-bench]
import BenchKit
import Foundation
import Quill

let threads = Int(option("--threads", "2"))!
let promptLength = Int(option("--prompt", "128"))!
let decodeLength = Int(option("--decode", "32"))!
let layers = Int(option("--layers", "22"))!
let types = option("--types", "f16,q8_0,q4_0").split(separator: ",").compactMap { ElementType(rawValue: String($0)) }
let work = URL(fileURLWithPath: option("--work", "/tmp/quill-model-bench"))
let hidden = 2048, mlp = 5632, heads = 32, kvHeads = 4, vocabulary = 32000
let folder = try llamaFolder(.billion(layers: layers), work: work)
let context = try ComputeContext(threads: threads)
let measured = measureBandwidth(pool: context.pool)
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
    // A warm-up step brings every weight page into the process first.
    let warmup = cache.makeSequence()
    _ = try model.forward(Array(prompt.prefix(8)), sequence: warmup, cache: cache)
    try cache.release(warmup)
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
