import Foundation
import Testing
@testable import Decoding

/// Inputs the chat-template and encode fuzzers crashed on (Tests/FuzzRegressions/<target>/,
/// written by Scripts/fuzz.sh), through the same code as their fuzz targets.
@Suite struct DecodingFuzzRegressionTests {
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
}
