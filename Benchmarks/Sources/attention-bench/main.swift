// Attention benchmark (issue: paged KV cache and tiled attention):
//  1. decode attention per token vs context length, as GB/s of KV read against the DRAM
//     bandwidth measured in the same run (22 layers of KV, so long contexts come from DRAM);
//  2. prefill attention vs a naive implementation that materializes the score matrix;
//  3. KV memory held by the paged cache vs contiguous max-length allocation.
//
//   swift run -c release attention-bench [--threads 2] [--only decode|prefill|memory] [--contexts 256,1024] [--kv-heads 4]
//                                       [--kv f16|q8_0|f32]   (decode's KV storage)
import BenchKit
import Foundation
import Quill


let threads = Int(option("--threads", "2"))!
let context = try ComputeContext(threads: threads)
let only = option("--only", "all")
let contexts = option("--contexts", "256,1024,2048,4096,8192").split(separator: ",").compactMap { Int($0) }

// MARK: 1. Decode

let layers = 22, kvHeads = Int(option("--kv-heads", "4"))!, heads = 32, d = 64
let kvType: ElementType = ["f32": .f32, "f16": .f16, "q8_0": .q8_0][option("--kv", "f16")] ?? .f16
if only == "all" || only == "decode" {
let measured = measureBandwidth(pool: context.pool)
print(String(format: "DRAM read bandwidth, %d threads: %.1f GB/s", threads, measured))
print("decode attention, \(layers) layers, \(heads) heads / \(kvHeads) KV heads of \(d), \(kvType) KV, \(threads) threads:")
for length in contexts {
    let shape = KVCacheConfiguration(layers: layers, keyValueHeads: kvHeads, headDimension: d, elementType: kvType, memoryBudget: 0)
    let cache = try PagedKVCache(configuration: KVCacheConfiguration(layers: layers, keyValueHeads: kvHeads, headDimension: d, elementType: kvType,
                                                                     memoryBudget: ((length + 15) / 16 + 1) * shape.blockBytes))
    let sequence = cache.makeSequence()
    try cache.reserve(sequence, tokens: length)
    let row = (0..<kvHeads * d).map { Float($0 % 17) / 17 }
    for layer in 0..<layers { for p in 0..<length { try cache.write(sequence, layer: layer, position: p, keys: row, values: row) } }
    try cache.append(sequence, tokens: Array(repeating: 0, count: length))
    let query = try FloatBuffer(rows: 1, columns: heads * d, values: (0..<heads * d).map { Float($0 % 13) / 13 })
    let output = try FloatBuffer(rows: 1, columns: heads * d)
    var samples: [Double] = []
    for _ in 0..<7 {
        let start = seconds()
        for layer in 0..<layers {
            try PagedAttention.attend(queries: query, rows: 1, firstPosition: length - 1, cache: cache, sequence: sequence,
                                      layer: layer, output: output, context: context)
        }
        samples.append(seconds() - start)
    }
    let time = median(samples)
    let bytes = Double(layers * 2 * kvHeads * length * shape.runBytes / shape.blockSize)
    print(String(format: "  context %5d: %7.3f ms per token, %6.1f GB/s of KV = %.2f of bandwidth", length, time * 1000, bytes / time / 1e9, bytes / time / 1e9 / measured))
}
}

// MARK: 2. Prefill vs naive

/// The textbook way: the whole causal score matrix per head, softmax, then times V.
func naiveAttention(q: [Float], k: [Float], v: [Float], n: Int, heads: Int, kvHeads: Int, d: Int) -> [Float] {
    var out = [Float](repeating: 0, count: n * heads * d)
    var scores = [Float](repeating: 0, count: n * n)
    let scale = 1 / Float(d).squareRoot(), group = heads / kvHeads
    for h in 0..<heads {
        let kv = h / group
        for i in 0..<n {
            var maximum = -Float.infinity
            for j in 0...i {
                var s: Float = 0
                for e in 0..<d { s += q[(i * heads + h) * d + e] * k[(j * kvHeads + kv) * d + e] }
                scores[i * n + j] = s * scale
                maximum = max(maximum, s * scale)
            }
            var total: Float = 0
            for j in 0...i { scores[i * n + j] = Foundation.exp(scores[i * n + j] - maximum); total += scores[i * n + j] }
            for j in 0...i {
                let w = scores[i * n + j] / total
                for e in 0..<d { out[(i * heads + h) * d + e] += w * v[(j * kvHeads + kv) * d + e] }
            }
        }
    }
    return out
}

if only == "all" || only == "prefill" {
print("prefill attention, \(heads) heads / \(kvHeads) KV heads of \(d), one layer, F32 KV:")
for n in [512, 2048] {
    let shape = KVCacheConfiguration(layers: 1, keyValueHeads: kvHeads, headDimension: d, elementType: .f32, memoryBudget: 0)
    let cache = try PagedKVCache(configuration: KVCacheConfiguration(layers: 1, keyValueHeads: kvHeads, headDimension: d, elementType: .f32,
                                                                     memoryBudget: (n / 16 + 1) * shape.blockBytes))
    let sequence = cache.makeSequence()
    try cache.reserve(sequence, tokens: n)
    var generator = SystemRandomNumberGenerator()
    let k = (0..<n * kvHeads * d).map { _ in Float.random(in: -1...1, using: &generator) }
    let v = (0..<n * kvHeads * d).map { _ in Float.random(in: -1...1, using: &generator) }
    let q = (0..<n * heads * d).map { _ in Float.random(in: -1...1, using: &generator) }
    for p in 0..<n {
        try k.withUnsafeBufferPointer { kb in try v.withUnsafeBufferPointer { vb in
            try cache.write(sequence, layer: 0, position: p, keys: kb.baseAddress! + p * kvHeads * d, values: vb.baseAddress! + p * kvHeads * d)
        } }
    }
    try cache.append(sequence, tokens: Array(repeating: 0, count: n))
    let queries = try FloatBuffer(rows: n, columns: heads * d, values: q)
    let output = try FloatBuffer(rows: n, columns: heads * d)
    var tiled: [Double] = []
    for _ in 0..<3 {
        let start = seconds()
        try PagedAttention.attend(queries: queries, rows: n, firstPosition: 0, cache: cache, sequence: sequence, layer: 0, output: output, context: context)
        tiled.append(seconds() - start)
    }
    let start = seconds()
    let reference = naiveAttention(q: q, k: k, v: v, n: n, heads: heads, kvHeads: kvHeads, d: d)
    let naive = seconds() - start
    let error = zip(reference, output.values()).map { abs($0 - $1) }.max() ?? 0
    print(String(format: "  %4d tokens: tiled %.1f ms (%d threads), naive %.1f ms (1 thread), speed-up %.1f×; max |difference| %.1e",
                 n, median(tiled) * 1000, threads, naive * 1000, naive / median(tiled), error))
}
}

// MARK: 3. Memory

if only == "all" || only == "memory" {
let maximumContext = 4096, sequences = 64
var generator = SystemRandomNumberGenerator()
let lengths = (0..<sequences).map { _ in Int.random(in: 20...2000, using: &generator) }
let tokens = lengths.reduce(0, +)
let paged = lengths.reduce(0) { $0 + ($1 + 15) / 16 * 16 }
print(String(format: "KV memory for %d sequences of 20-2000 tokens (mean %d), context limit %d: paged holds %.1f%% more than the tokens, contiguous max-length %.0f%% more (%.0f%% of it wasted)",
             sequences, tokens / sequences, maximumContext, Double(paged - tokens) / Double(tokens) * 100,
             Double(sequences * maximumContext - tokens) / Double(tokens) * 100,
             Double(sequences * maximumContext - tokens) / Double(sequences * maximumContext) * 100))
// Bytes of keys and values per token of context, by storage type, for this benchmark's shape.
let perToken = try [ElementType.f32, .f16, .q8_0].map { type -> String in
    let shape = KVCacheConfiguration(layers: layers, keyValueHeads: kvHeads, headDimension: d, elementType: type, memoryBudget: 0)
    _ = try PagedKVCache(configuration: KVCacheConfiguration(layers: layers, keyValueHeads: kvHeads, headDimension: d, elementType: type,
                                                             memoryBudget: shape.blockBytes))  // the shape is valid for this type
    return String(format: "%@ %.1f KB", type.description, Double(shape.blockBytes / shape.blockSize) / 1024)
}
print("KV bytes per token (\(layers) layers, \(kvHeads) KV heads of \(d)): " + perToken.joined(separator: ", "))
}
