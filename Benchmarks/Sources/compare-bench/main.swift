// Quill against llama.cpp on the very same GGUF files, run alternately in one session.
// Skipped unless a llama-bench binary is given (the repository never builds llama.cpp):
//
//   python3 Scripts/make_benchmark_ggufs.py /tmp/quill-gguf --llama-quantize /path/to/llama-quantize
//   swift run --package-path Benchmarks -c release compare-bench --llama-bench /path/to/llama-bench \
//       --gguf /tmp/quill-gguf [--models llama-1.1b-q4_0,...] [--threads 1,2] [--rounds 3] [--json out.json]
//       [--depths 1024,4096] [--kinds pp,tg]
//
// Tests (tokens/s, median of --rounds): pp128 and pp512 (a prompt into an empty context),
// tg64 (64 tokens decoded after one), and tg64 at depth 1024 and 4096 (decode after that many
// tokens; llama.cpp's figure from llama-batched-bench beside llama-bench, when present).
// Ratios are Quill ÷ llama.cpp.
import BenchKit
import Foundation
import Quill

let llamaBench = option("--llama-bench", "")
guard !llamaBench.isEmpty else {
    print("compare-bench: skipped (no --llama-bench PATH given)")
    exit(0)
}
let batchedBench = URL(fileURLWithPath: llamaBench).deletingLastPathComponent().appendingPathComponent("llama-batched-bench").path
let ggufFolder = URL(fileURLWithPath: option("--gguf", "/tmp/quill-gguf"))
let threadCounts = option("--threads", "1,2").split(separator: ",").compactMap { Int($0) }
let rounds = Int(option("--rounds", "3"))!
let depths = option("--depths", "1024,4096").split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 }
let models = option("--models", "llama-110m-f16,llama-110m-q8_0,llama-110m-q4_0,llama-1.1b-f16,llama-1.1b-q8_0,llama-1.1b-q4_0,"
                    + "moe-8x-q8_0,moe-8x-q4_0,mamba-130m-f16,mamba-130m-q8_0,mamba-130m-q4_0").split(separator: ",").map(String.init)
let jsonPath = option("--json", "")
/// "pp", "tg" or both (the default): which kinds of test to run.
let kinds = option("--kinds", "pp,tg").split(separator: ",").map(String.init)

/// Runs a program and returns its standard output.
func execute(_ path: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw CocoaError(.executableLoad, userInfo: [NSLocalizedDescriptionKey: "\(path) exited \(process.terminationStatus)"]) }
    return String(decoding: data, as: UTF8.self)
}

/// llama.cpp's figures for one file and thread count: "pp128", "pp512", "tg64", "d1024", ...
func llamaCpp(_ file: String, threads: Int) throws -> [String: Double] {
    var result: [String: Double] = [:]
    let text = try execute(llamaBench, ["-m", file, "-t", "\(threads)", "-p", "128,512", "-n", "64", "-r", "1", "-o", "json"])
    if let rows = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] {
        for row in rows {
            let prompt = row["n_prompt"] as? Int ?? 0, generated = row["n_gen"] as? Int ?? 0
            let rate = row["avg_ts"] as? Double ?? 0
            result[prompt > 0 ? "pp\(prompt)" : "tg\(generated)"] = rate
        }
    }
    if kinds.contains("tg"), FileManager.default.isExecutableFile(atPath: batchedBench), let deepest = depths.max() {
        let text = try execute(batchedBench, ["-m", file, "-t", "\(threads)", "-c", "\(deepest + 128)", "-b", "512", "-ub", "512",
                                              "-npp", depths.map(String.init).joined(separator: ","), "-ntg", "64", "-npl", "1",
                                              "--output-format", "jsonl"])
        for line in text.split(separator: "\n") where line.hasPrefix("{") {
            if let row = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
               let depth = row["pp"] as? Int, let rate = row["speed_tg"] as? Double {
                result["d\(depth)"] = rate
            }
        }
    }
    return result
}

/// Quill's figures for the same tests, on the bare model (as llama-bench measures llama.cpp).
final class QuillRunner {
    let files: ModelFiles
    let context: ComputeContext
    let vocabulary: Int
    var random = SystemRandomNumberGenerator()

    init(_ path: String, threads: Int) throws {
        files = try ModelFiles.load(path)
        context = try ComputeContext(threads: threads)
        vocabulary = files.tokenizer.vocabularySize
    }

    func tokens(_ n: Int) -> [Int] { (0..<n).map { _ in Int.random(in: 3..<vocabulary, using: &random) } }

    /// A fresh sequence: `advance` feeds tokens and returns the last logits.
    func sequence() throws -> (advance: ([Int]) throws -> [Float], release: () -> Void) {
        switch files.configuration {
        case .transformer:
            let model = try TransformerModel(files: files, context: context, maximumTokens: 512)
            let cache = try model.makeCache(memoryBudget: 1 << 30)
            let id = cache.makeSequence()
            return ({ try model.forward($0, sequence: id, cache: cache) }, { try? cache.release(id) })
        case .mamba:
            let model = try MambaModel(files: files, context: context, maximumTokens: 512)
            nonisolated(unsafe) var state = model.makeState()
            return ({ try model.forward($0, state: &state) }, {})
        }
    }

    /// Pages the weights in (the first pass over a mapped file pays for page faults).
    func warmUp() throws {
        let s = try sequence()
        _ = try s.advance(tokens(64))
        s.release()
    }

    func measure() throws -> [String: Double] {
        var result: [String: Double] = [:]
        for n in [128, 512] where kinds.contains("pp") {
            let s = try sequence()
            let prompt = tokens(n)
            let start = seconds()
            _ = try s.advance(prompt)
            result["pp\(n)"] = Double(n) / (seconds() - start)
            s.release()
        }
        for depth in [0] + depths where kinds.contains("tg") {
            let s = try sequence()
            var left = depth
            while left > 0 { _ = try s.advance(tokens(min(512, left))); left -= 512 }
            var logits = try s.advance(tokens(1))
            let start = seconds()
            for _ in 0..<64 {
                let next = logits.withUnsafeBufferPointer { Kernels.argmax($0)! }
                logits = try s.advance([next])
            }
            result[depth == 0 ? "tg64" : "d\(depth)"] = 64 / (seconds() - start)
            s.release()
        }
        return result
    }
}

let tests = ["pp128", "pp512", "tg64"] + depths.map { "d\($0)" }
var report: [[String: Any]] = []
print("| model | threads | " + tests.map { "\($0) Quill / llama.cpp" }.joined(separator: " | ") + " |")
print("|---|---|" + tests.map { _ in "---|" }.joined())
for name in models {
    let file = ggufFolder.appendingPathComponent("\(name).gguf").path
    guard FileManager.default.fileExists(atPath: file) else { print("| \(name) | missing: \(file) |"); continue }
    for threads in threadCounts {
        let quill = try QuillRunner(file, threads: threads)
        var ours: [String: [Double]] = [:], theirs: [String: [Double]] = [:]
        try quill.warmUp()
        for _ in 0..<rounds {
            for (key, value) in try llamaCpp(file, threads: threads) { theirs[key, default: []].append(value) }
            for (key, value) in try quill.measure() { ours[key, default: []].append(value) }
        }
        var cells: [String] = [], row: [String: Any] = ["model": name, "threads": threads]
        for test in tests {
            guard let q = ours[test], let l = theirs[test] else { cells.append("–"); continue }
            let (a, b) = (median(q), median(l))
            cells.append(String(format: "%.1f / %.1f = **%.2f**", a, b, a / b))
            row[test] = ["quill": a, "llama_cpp": b, "ratio": a / b]
        }
        print("| \(name) | \(threads) | " + cells.joined(separator: " | ") + " |")
        report.append(row)
    }
}
if !jsonPath.isEmpty {
    try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: jsonPath))
}
