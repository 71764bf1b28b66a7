import Foundation
import Testing
@testable import Decoding
@testable import Models

/// Every input the fuzzers ever crashed on (Tests/FuzzRegressions/<target>/, written by
/// Scripts/fuzz.sh) goes through the same code as its fuzz target: it must be rejected
/// with an error or handled, never trap.
@Suite struct FuzzRegressionTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("FuzzRegressions")

    static func inputs(_ target: String) -> [URL] {
        let folder = root.appendingPathComponent(target)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted().map { folder.appendingPathComponent($0) }
    }

    @Test(arguments: inputs("chattemplate"))
    func chatTemplate(_ url: URL) throws {
        let source = String(decoding: try Data(contentsOf: url), as: UTF8.self)
        guard let template = try? ChatTemplate(source) else { return }
        _ = try? template.render([ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi 🙂")],
                                 addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
    }

    @Test(arguments: inputs("encode"))
    func encode(_ url: URL) throws {
        let text = String(decoding: try Data(contentsOf: url), as: UTF8.self)
        let tokenizers = fixtureModels.deletingLastPathComponent().appendingPathComponent("tokenizers")
        for kind in ["byte-level", "sentencepiece"] {
            let tokenizer = try Tokenizer(directory: tokenizers.appendingPathComponent(kind))
            let ids = tokenizer.encode(text)
            var stream = tokenizer.makeStreamingDetokenizer()
            var streamed = ""
            for id in ids { streamed += try stream.append(id) }
            streamed += stream.finish()
            #expect(streamed == (try tokenizer.decode(ids)))
        }
    }

    @Test(arguments: inputs("safetensors"))
    func safetensors(_ url: URL) throws {
        let data = try Data(contentsOf: url)
        let file = data.withUnsafeBytes { MappedFile(copying: $0, name: url.lastPathComponent) }
        guard let checkpoint = try? SafetensorsFile(file: file) else { return }
        for name in checkpoint.entries.keys { _ = try? checkpoint.tensor(name).floats() }
    }

    @Test(arguments: inputs("gguf"))
    func gguf(_ url: URL) throws {
        let data = try Data(contentsOf: url)
        let file = data.withUnsafeBytes { MappedFile(copying: $0, name: url.lastPathComponent) }
        guard let gguf = try? GGUFFile(file: file) else { return }
        for name in gguf.tensorNames { _ = try? gguf.tensor(name).floats() }
        if let tokenizer = try? Tokenizer(gguf: gguf) { _ = try? tokenizer.decode(tokenizer.encode("Hello, wörld! 🙂 12345")) }
    }

    @Test(arguments: inputs("tokenizer"))
    func tokenizerJSON(_ url: URL) throws {
        let data = try Data(contentsOf: url)
        if let tokenizer = try? data.withUnsafeBytes({ try Tokenizer(tokenizerJSON: $0, name: url.lastPathComponent) }) {
            _ = try? tokenizer.decode(tokenizer.encode("Hello, wörld! 🙂 12345 <|im_end|>"))
        }
    }

    @Test(arguments: inputs("config"))
    func configuration(_ url: URL) throws {
        if case let .transformer(c)? = try? ModelConfiguration(json: Data(contentsOf: url), path: url.lastPathComponent) {
            _ = try? c.rotaryEmbedding()
        }
    }

    @Test func corpusIsPresent() {
        #expect(FileManager.default.fileExists(atPath: Self.root.path))
    }
}
