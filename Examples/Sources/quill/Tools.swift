import ArgumentParser
import Foundation
import Quill

struct Logits: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the logits of every position of a token sequence as one JSON array of arrays.")

    @OptionGroup var model: ModelOptions
    @Option(help: "Token ids, comma-separated.") var tokens: String

    func run() async throws {
        try await reportingErrors {
            let ids = try tokenList(tokens)
            let generator = try model.makeGenerator()
            let rows = try await generator.logits(for: ids)
            // Float's description is the shortest text that reads back to the same value.
            write("[" + rows.map { "[" + $0.map { $0.description }.joined(separator: ",") + "]" }.joined(separator: ",") + "]\n")
        }
    }
}

/// The tokenizer of a model folder, a folder holding only tokenizer.json, or a .gguf file.
func loadTokenizer(_ path: String) throws -> Tokenizer {
    if path.hasSuffix(".gguf") { return try Tokenizer(gguf: try GGUFFile(path: path)) }
    return try Tokenizer(directory: URL(fileURLWithPath: path))
}

struct Tokenize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the token ids of a text as a JSON array.")

    @Option(help: "A model folder, a folder with tokenizer.json, or a .gguf file.") var model: String = Bundled.model
    @Flag(name: .customLong("add-special-tokens"), help: "Add the tokenizer's special tokens (BOS, …).") var addSpecialTokens = false
    @Argument(help: "The text.") var text: String

    func run() async throws {
        try await reportingErrors {
            print(try jsonText(try loadTokenizer(model).encode(text, addSpecialTokens: addSpecialTokens)))
        }
    }
}

struct Detokenize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the text of comma-separated token ids.")

    @Option(help: "A model folder, a folder with tokenizer.json, or a .gguf file.") var model: String = Bundled.model
    @Argument(help: "Token ids, comma-separated.") var tokens: String

    func run() async throws {
        try await reportingErrors {
            print(try loadTokenizer(model).decode(try tokenList(tokens)))
        }
    }
}

struct Perplexity: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Perplexity of the model on a text file.")

    @OptionGroup var model: ModelOptions
    @Argument(help: "A UTF-8 text file.") var file: String
    @Option(help: "Score the text in windows of this many tokens (default: the context length, when the text is longer).")
    var window: Int?

    func run() async throws {
        try await reportingErrors {
            guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
            guard let text = String(data: data, encoding: .utf8) else { throw ValidationError("\(file) is not UTF-8 text") }
            let generator = try model.makeGenerator()
            let ids = generator.files.tokenizer.encode(text)
            let bar = ProgressBar()
            let start = Date()
            let window = self.window ?? generator.contextLength.flatMap { ids.count > $0 ? $0 : nil }
            let perplexity = try await generator.perplexity(of: ids, window: window) { bar.show("perplexity", $0) }
            bar.done()
            print(String(format: "perplexity %.4f over %d tokens (%.0f tok/s)", perplexity, ids.count,
                         Double(ids.count) / Date().timeIntervalSince(start)))
        }
    }
}
