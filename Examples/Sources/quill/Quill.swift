// `quill`: Quill's command-line tool. Every subcommand defaults to the bundled model
// (Examples/Models/quill-license, trained on Debian's license texts).
//
//   swift run --package-path Examples -c release quill generate "The GNU General Public License"
//   swift run --package-path Examples -c release quill chat
//   swift run --package-path Examples -c release quill --help
import ArgumentParser
import Foundation
import Quill

@main
struct QuillCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quill",
        abstract: "Run language models on the CPU with Quill.",
        subcommands: [Generate.self, Chat.self, Logits.self, Tokenize.self, Detokenize.self, Perplexity.self, Bench.self],
        defaultSubcommand: Generate.self)
}

/// The repository's bundled models.
enum Bundled {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let model = repository.appendingPathComponent("Examples/Models/quill-license").path
    static let draft = repository.appendingPathComponent("Examples/Models/quill-license-draft").path
}

/// Options every model-running subcommand takes.
struct ModelOptions: ParsableArguments {
    @Option(help: "A Hugging Face model folder or a .gguf file (default: the bundled model).")
    var model: String = Bundled.model

    @Option(help: "Compute threads (default: every core).")
    var threads: Int?

    @Option(help: "Quantize the weights while loading: q8_0 or q4_0.")
    var quantize: String?

    @Option(help: "KV cache storage: f16 (default), q8_0 (about half the memory) or f32.")
    var kv: String = "f16"

    @Option(help: "Speculative decoding with a draft model (a folder or .gguf with the same tokenizer).")
    var draft: String?

    @Option(help: "Speculative decoding without a draft model: ngram, or self-q4 (a Q4_0 copy of the model).")
    var speculate: String?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if let quantize, ElementType(rawValue: quantize.lowercased()).map({ $0 == .q8_0 || $0 == .q4_0 }) != true {
            throw ValidationError("--quantize takes q8_0 or q4_0, not '\(quantize)'")
        }
        if ![.f16, .q8_0, .f32].contains(ElementType(rawValue: kv.lowercased())) {
            throw ValidationError("--kv takes f16, q8_0 or f32, not '\(kv)'")
        }
        if let speculate, !["ngram", "self-q4"].contains(speculate) { throw ValidationError("--speculate takes ngram or self-q4") }
        if draft != nil && speculate != nil { throw ValidationError("--draft and --speculate exclude each other") }
    }

    /// Loads the generator, showing a progress bar for the long stages.
    func makeGenerator(maximumBatch: Int = 16) throws -> Generator {
        var configuration = GeneratorConfiguration()
        configuration.threads = threads
        configuration.maximumBatch = maximumBatch
        configuration.quantization = quantize.flatMap { ElementType(rawValue: $0.lowercased()) }
        configuration.kvElementType = ElementType(rawValue: kv.lowercased()) ?? .f16
        if let draft { configuration.draft = .model(path: draft) }
        if speculate == "ngram" { configuration.draft = .ngram(maximumN: 3) }
        if speculate == "self-q4" { configuration.draft = .quantizedSelf(.q4_0) }
        let bar = ProgressBar()
        configuration.progress = { bar.show($0.stage, $0.fraction) }
        defer { bar.done() }
        return try Generator(modelPath: model, configuration: configuration)
    }
}

/// Parses "1,2,3" into token ids.
func tokenList(_ text: String) throws -> [Int] {
    let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    let ids = parts.compactMap { Int($0) }
    guard !ids.isEmpty, ids.count == parts.count else { throw ValidationError("expected comma-separated token ids, got '\(text)'") }
    return ids
}

/// Writes to standard output at once (print buffers until a newline).
func write(_ text: String) { FileHandle.standardOutput.write(Data(text.utf8)) }

/// Runs `body`, turning any error into one line on standard error and a non-zero exit.
func reportingErrors<T>(_ body: () async throws -> T) async throws -> T {
    do { return try await body() } catch let error as ValidationError { throw error } catch let error as ExitCode { throw error } catch {
        FileHandle.standardError.write(Data("quill: error: \(error)\n".utf8))
        throw ExitCode.failure
    }
}

/// A one-line progress bar on standard error (only when it is a terminal).
final class ProgressBar: @unchecked Sendable {  // `lock` guards `shown`
    private let lock = NSLock()
    private var shown = false
    private let enabled = isatty(STDERR_FILENO) == 1

    func show(_ label: String, _ fraction: Double) {
        guard enabled else { return }
        lock.withLock {
            let width = 30, filled = Int((fraction * Double(width)).rounded(.down))
            let bar = String(repeating: "#", count: max(0, min(width, filled))) + String(repeating: ".", count: max(0, width - filled))
            FileHandle.standardError.write(Data(String(format: "\r%@ [%@] %3.0f%%", label, bar, fraction * 100).utf8))
            shown = true
        }
    }

    func done() {
        lock.withLock {
            if shown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
            shown = false
        }
    }
}

extension GenerationStatistics {
    /// The stats line printed after a generation.
    func line(_ reason: StopReason) -> String {
        var text = String(format: "[%@] prompt %d tokens (%d reused), %d generated; first token %.0f ms; prefill %.1f tok/s, decode %.1f tok/s",
                          "\(reason)", promptTokens, reusedPromptTokens, generatedTokens, timeToFirstToken * 1000,
                          prefillTokensPerSecond, decodeTokensPerSecond)
        if draftTokens > 0 { text += String(format: "; drafts accepted %d/%d (%.0f%%)", acceptedDraftTokens, draftTokens,
                                            100 * Double(acceptedDraftTokens) / Double(draftTokens)) }
        return text
    }

    var json: [String: Any] {
        ["prompt_tokens": promptTokens, "reused_prompt_tokens": reusedPromptTokens, "generated_tokens": generatedTokens,
         "time_to_first_token": timeToFirstToken, "prefill_tokens_per_second": prefillTokensPerSecond,
         "decode_tokens_per_second": decodeTokensPerSecond, "draft_tokens": draftTokens, "accepted_draft_tokens": acceptedDraftTokens]
    }
}

/// One JSON value as text.
func jsonText(_ value: Any) throws -> String {
    String(decoding: try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]), as: UTF8.self)
}
