// Model-file and tokenizer benchmark:
//  1. load time of a 1 GB model (F16, a 1.1B-shaped checkpoint cut to 1 GB) from the page
//     cache, as a safetensors folder and as a GGUF file, through ModelFiles.load plus a
//     view of every tensor;
//  2. tokenizer encode throughput against Hugging Face `tokenizers` on the same text and
//     vocabularies (Benchmarks/tokenizer_speed.py makes them), with the ids compared.
//
//   swift run -c release files-bench [--work /tmp/quill-files-bench] [--tokenizers /tmp/quill-tokenizer-bench]
import BenchKit
import Foundation
import Quill


let work = URL(fileURLWithPath: option("--work", "/tmp/quill-files-bench"))
let tokenizerWork = URL(fileURLWithPath: option("--tokenizers", "/tmp/quill-tokenizer-bench"))
let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

// MARK: - 1 GB model files

/// The tensors of a Llama-shaped model (hidden 2048, MLP 5632, 4 KV heads of 64) with as
/// many layers as fit in about 1 GB of F16.
let hidden = 2048, mlp = 5632, kvDimension = 256, vocabulary = 32000, layers = 9
let shapes = llamaTensors(hidden: hidden, mlp: mlp, kvDimension: kvDimension, vocabulary: vocabulary, layers: layers)
let totalBytes = shapes.reduce(0) { $0 + $1.1.reduce(2, *) }

func makeSafetensorsFolder(_ folder: URL) throws {
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    try writeSafetensors(folder.appendingPathComponent("model.safetensors"), tensors: shapes)
    let config = """
    {"model_type":"llama","hidden_size":\(hidden),"intermediate_size":\(mlp),"num_hidden_layers":\(layers),
     "num_attention_heads":32,"num_key_value_heads":4,"vocab_size":\(vocabulary),"rms_norm_eps":1e-5,"rope_theta":10000.0}
    """
    try config.write(to: folder.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        let source = repository.appendingPathComponent("Tests/Fixtures/tokenizers/sentencepiece/\(file)")
        try? FileManager.default.removeItem(at: folder.appendingPathComponent(file))
        try FileManager.default.copyItem(at: source, to: folder.appendingPathComponent(file))
    }
}

func writeFile(_ url: URL, header: [UInt8], payload: Int) throws {
    _ = FileManager.default.createFile(atPath: url.path, contents: nil)
    let handle = try FileHandle(forWritingTo: url)
    defer { try? handle.close() }
    try handle.write(contentsOf: header)
    let chunk = Data(repeating: 0x3C, count: 1 << 24)  // fp16 1.0-ish values
    var left = payload
    while left > 0 { let n = min(left, chunk.count); try handle.write(contentsOf: chunk.prefix(n)); left -= n }
}

/// A GGUF with the same tensors (llama.cpp names) and the fixture SentencePiece vocabulary.
func makeGGUF(_ url: URL) throws {
    var bytes: [UInt8] = []
    func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    func string(_ s: String) { u64(UInt64(s.utf8.count)); bytes += Array(s.utf8) }
    let vocabulary = try GGUFFile(path: repository.appendingPathComponent("Tests/Fixtures/tokenizers/sentencepiece.gguf").path)
    let tokenizerKeys = vocabulary.metadata.filter { $0.key.hasPrefix("tokenizer.") }
    let integers: [(String, UInt32)] = [("llama.embedding_length", UInt32(hidden)), ("llama.feed_forward_length", UInt32(mlp)),
        ("llama.block_count", UInt32(layers)), ("llama.attention.head_count", 32), ("llama.attention.head_count_kv", 4),
        ("llama.context_length", 2048), ("llama.vocab_size", UInt32(32000))]
    func ggufName(_ name: String) -> String {
        var n = name.replacingOccurrences(of: "model.layers.", with: "blk.")
        for (a, b) in [("model.embed_tokens", "token_embd"), ("model.norm", "output_norm"), ("lm_head", "output"),
                       ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                       ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                       ("mlp.down_proj", "ffn_down"), ("post_attention_layernorm", "ffn_norm"), ("input_layernorm", "attn_norm")] {
            n = n.replacingOccurrences(of: a, with: b)
        }
        return n
    }
    u32(0x4655_4747); u32(3); u64(UInt64(shapes.count)); u64(UInt64(1 + integers.count + tokenizerKeys.count))
    string("general.architecture"); u32(8); string("llama")
    for (key, value) in integers { string(key); u32(4); u32(value) }
    func write(_ value: GGUFFile.Value) {
        switch value {
        case let .string(s): string(s)
        case let .uint32(v): u32(v)
        case let .int32(v): u32(UInt32(bitPattern: v))
        case let .float32(v): u32(v.bitPattern)
        case let .bool(v): bytes.append(v ? 1 : 0)
        case let .array(items):
            let type: UInt32 = items.first.map { if case .string = $0 { 8 } else if case .float32 = $0 { 6 } else { 5 } } ?? 8
            u32(type); u64(UInt64(items.count)); items.forEach(write)
        default: u32(0)
        }
    }
    func typeCode(_ value: GGUFFile.Value) -> UInt32 {
        switch value { case .string: 8; case .uint32: 4; case .int32: 5; case .float32: 6; case .bool: 7; case .array: 9; default: 4 }
    }
    for (key, value) in tokenizerKeys { string(key); u32(typeCode(value)); write(value) }
    var offset = 0
    for (name, shape) in shapes {
        string(ggufName(name)); u32(UInt32(shape.count)); shape.reversed().forEach { u64(UInt64($0)) }; u32(1); u64(UInt64(offset))
        offset += (shape.reduce(2, *) + 31) / 32 * 32
    }
    while bytes.count % 32 != 0 { bytes.append(0) }
    try writeFile(url, header: bytes, payload: offset)
}

func timeLoad(_ path: String) throws -> (seconds: Double, tensors: Int) {
    var samples: [Double] = []
    var count = 0
    for _ in 0..<7 {
        let start = seconds()
        let files = try ModelFiles.load(path)
        count = 0
        for name in files.weights.names { _ = try files.weights.tensor(name); count += 1 }
        samples.append(seconds() - start)
    }
    return (median(samples), count)
}

let folder = work.appendingPathComponent("llama-1gb")
let ggufPath = work.appendingPathComponent("llama-1gb.gguf")
if !FileManager.default.fileExists(atPath: folder.appendingPathComponent("model.safetensors").path) { try makeSafetensorsFolder(folder) }
if !FileManager.default.fileExists(atPath: ggufPath.path) { try makeGGUF(ggufPath) }
for path in [folder.appendingPathComponent("model.safetensors").path, ggufPath.path] {  // into the page cache
    let file = try MappedFile(path: path)
    var sum: UInt64 = 0
    for page in stride(from: 0, to: file.byteCount, by: 4096) { sum &+= UInt64(file.bytes[page]) }
    if sum == 1 { print("") }
}
let gigabytes = Double(totalBytes) / 1e9
for (label, path) in [("safetensors folder", folder.path), ("GGUF file", ggufPath.path)] {
    let (time, tensors) = try timeLoad(path)
    print(String(format: "load %@: %.2f GB, %d tensors, %.2f ms (median of 7, page cache warm)", label, gigabytes, tensors, time * 1000))
}

// MARK: - Tokenizer throughput

let hfPath = tokenizerWork.appendingPathComponent("hf.json")
if let data = try? Data(contentsOf: hfPath),
   let reference = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
   let corpus = try? String(contentsOf: tokenizerWork.appendingPathComponent("corpus.txt"), encoding: .utf8),
   let kinds = reference["tokenizers"] as? [String: [String: Any]] {
    let megabytes = Double(corpus.utf8.count) / 1e6
    for kind in ["byte-level", "sentencepiece"] {
        guard let hf = kinds[kind], let hfRate = hf["mb_per_s"] as? Double, let hfIDs = hf["ids"] as? [Int] else { continue }
        let tokenizer = try Tokenizer(directory: tokenizerWork.appendingPathComponent(kind))
        var samples: [Double] = []
        var ids: [Int] = []
        for _ in 0..<3 {
            let start = seconds()
            ids = tokenizer.encode(corpus, addSpecialTokens: false)
            samples.append(seconds() - start)
        }
        let rate = megabytes / median(samples)
        let lines = corpus.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var lineSamples: [Double] = []
        for _ in 0..<3 {
            let start = seconds()
            for line in lines { _ = tokenizer.encode(line, addSpecialTokens: false) }
            lineSamples.append(seconds() - start)
        }
        let lineRate = megabytes / median(lineSamples)
        if let hfLines = hf["lines_mb_per_s"] as? Double {
            print(String(format: "encode %@ line by line: Quill %.2f MB/s, Hugging Face tokenizers %.2f MB/s, ratio %.2f", kind, lineRate, hfLines, lineRate / hfLines))
        }
        let firstDifference = zip(ids, hfIDs).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        print(String(format: "encode %@ whole text: Quill %.2f MB/s, Hugging Face tokenizers %.2f MB/s, ratio %.2f; ids %@", kind, rate, hfRate,
                     rate / hfRate, ids == hfIDs ? "identical (\(ids.count) tokens)" : "DIFFER at \(firstDifference ?? min(ids.count, hfIDs.count)) (\(ids.count) vs \(hfIDs.count))"))
    }
} else {
    print("tokenizer throughput skipped: run `python3 Benchmarks/tokenizer_speed.py \(tokenizerWork.path)` first")
}
