// `quill`: Quill's command-line example. Until the Generator API and the bundled trained
// model arrive, it shows the whole path from a model file to streamed text with greedy
// decoding:
//
//   swift run --package-path Examples -c release quill [MODEL] [PROMPT] [--tokens N]
//
// MODEL is a Hugging Face folder or a .gguf file; without one it uses the repository's
// random-weight test model, whose output is gibberish by construction.
import Foundation
import Quill

let arguments = Array(CommandLine.arguments.dropFirst())
let count = arguments.firstIndex(of: "--tokens").flatMap { Int(arguments[$0 + 1]) } ?? 24
let positional = arguments.enumerated().filter { i, a in !a.hasPrefix("--") && (i == 0 || arguments[i - 1] != "--tokens") }.map(\.element)
let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()
let fixture = repository.appendingPathComponent("Tests/Fixtures/models/llama-gqa").path
let path = positional.first ?? fixture
let prompt = positional.count > 1 ? positional[1] : "The license"

/// Writes text at once (print buffers until a newline).
func write(_ text: String) { FileHandle.standardOutput.write(Data(text.utf8)) }

do {
    let context = try ComputeContext()
    write("Quill: kernels \(KernelLevel.current == .avx2 ? "AVX2 + FMA + F16C" : "portable scalar"), \(context.threadCount) threads" + "\n")
    if path == fixture {
        write("No model given: using the random-weight test model (\(fixture)). Its text is gibberish;" + "\n")
        write("a trained default model arrives with the examples issue. Pass a folder or .gguf to run your own." + "\n")
    }
    let start = Date()
    let files = try ModelFiles.load(path)
    let ids = files.tokenizer.encode(prompt)
    var stream = files.tokenizer.makeStreamingDetokenizer()
    write(String(format: "loaded in %.0f ms; prompt: %d tokens", Date().timeIntervalSince(start) * 1000, ids.count) + "\n")
    write(prompt)
    var next: Int
    switch files.configuration {
    case .transformer:
        let model = try TransformerModel(files: files, context: context, maximumTokens: max(ids.count, 1))
        let cache = try model.makeCache(memoryBudget: 256 << 20)
        let sequence = cache.makeSequence()
        var logits = try model.forward(ids, sequence: sequence, cache: cache)
        next = logits.withUnsafeBufferPointer { Kernels.argmax($0)! }
        for _ in 0..<count {
            if files.eosTokenIDs.contains(next) { break }
            write(try stream.append(next))
            logits = try model.forward([next], sequence: sequence, cache: cache)
            next = logits.withUnsafeBufferPointer { Kernels.argmax($0)! }
        }
    case .mamba:
        let model = try MambaModel(files: files, context: context, maximumTokens: max(ids.count, 1))
        var state = model.makeState()
        var logits = try model.forward(ids, state: &state)
        next = logits.withUnsafeBufferPointer { Kernels.argmax($0)! }
        for _ in 0..<count {
            if files.eosTokenIDs.contains(next) { break }
            write(try stream.append(next))
            logits = try model.forward([next], state: &state)
            next = logits.withUnsafeBufferPointer { Kernels.argmax($0)! }
        }
    }
    write(stream.finish() + "\n")
} catch {
    FileHandle.standardError.write(Data("quill: \(error)\n".utf8))
    exit(1)
}
