import Foundation
import Testing
@testable import Tokenization
import TensorCore

let sharedFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

struct TokenizerCase: Sendable, CustomTestStringConvertible {
    let kind: String
    let text: String
    let ids: [Int]
    let idsWithSpecial: [Int]
    let decoded: String
    var testDescription: String { "\(kind): \(text.debugDescription.prefix(40))" }
}

/// The strings and Hugging Face's encodings of them (Scripts/make_model_fixtures.py).
let tokenizerCases: [TokenizerCase] = {
    let url = sharedFixtures.appendingPathComponent("tokenizers/cases.json")
    guard let data = try? Data(contentsOf: url),
          let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [] }
    return ["byte-level", "sentencepiece"].flatMap { kind in
        (root[kind] as? [[String: Any]] ?? []).map {
            TokenizerCase(kind: kind, text: $0["text"] as! String, ids: $0["ids"] as! [Int],
                          idsWithSpecial: $0["ids_with_special"] as! [Int], decoded: $0["decoded"] as! String)
        }
    }
}()

let tokenizers: [String: Tokenizer] = {
    var result: [String: Tokenizer] = [:]
    for kind in ["byte-level", "sentencepiece"] {
        result[kind] = try? Tokenizer(directory: sharedFixtures.appendingPathComponent("tokenizers/\(kind)"))
    }
    return result
}()

@Suite struct TokenizerParityTests {
    @Test func fixturesLoad() throws {
        #expect(tokenizerCases.count >= 80)
        for kind in ["byte-level", "sentencepiece"] {
            _ = try Tokenizer(directory: sharedFixtures.appendingPathComponent("tokenizers/\(kind)"))
        }
    }

    @Test(arguments: tokenizerCases)
    func encodeMatchesHuggingFace(_ c: TokenizerCase) throws {
        let tokenizer = try #require(tokenizers[c.kind])
        #expect(tokenizer.encode(c.text, addSpecialTokens: false) == c.ids)
        #expect(tokenizer.encode(c.text, addSpecialTokens: true) == c.idsWithSpecial)
    }

    @Test(arguments: tokenizerCases)
    func decodeMatchesHuggingFace(_ c: TokenizerCase) throws {
        let tokenizer = try #require(tokenizers[c.kind])
        #expect(try tokenizer.decode(c.ids) == c.decoded)
    }

    /// Token by token, the pieces concatenate to the full decode and never end inside a
    /// UTF-8 sequence (no replacement characters appear that the full text lacks).
    @Test(arguments: tokenizerCases)
    func streamingDecodeEmitsCompleteText(_ c: TokenizerCase) throws {
        let tokenizer = try #require(tokenizers[c.kind])
        var stream = tokenizer.makeStreamingDetokenizer()
        var pieces: [String] = []
        for id in c.ids { pieces.append(try stream.append(id)) }
        pieces.append(stream.finish())
        #expect(pieces.joined() == c.decoded)
        if !c.decoded.contains("\u{FFFD}") { #expect(!pieces.contains { $0.contains("\u{FFFD}") }) }
    }

    @Test func outOfRangeIdsThrow() throws {
        let tokenizer = try #require(tokenizers["byte-level"])
        #expect(throws: TokenizerError.tokenOutOfRange(id: tokenizer.vocabularySize, vocabularySize: tokenizer.vocabularySize)) {
            try tokenizer.decode([1, tokenizer.vocabularySize])
        }
        #expect(throws: TokenizerError.self) { try tokenizer.decode([-1]) }
    }
}

let ggufTokenizers: [String: Tokenizer] = {
    var result: [String: Tokenizer] = [:]
    for kind in ["byte-level", "sentencepiece"] {
        guard let file = try? GGUFFile(path: sharedFixtures.appendingPathComponent("tokenizers/\(kind).gguf").path) else { continue }
        result[kind] = try? Tokenizer(gguf: file)
    }
    return result
}()

/// The same vocabularies exported to GGUF by the `gguf` package must encode like Hugging Face.
@Suite struct GGUFTokenizerTests {
    @Test func load() throws {
        for kind in ["byte-level", "sentencepiece"] {
            _ = try Tokenizer(gguf: GGUFFile(path: sharedFixtures.appendingPathComponent("tokenizers/\(kind).gguf").path))
        }
    }

    @Test(arguments: tokenizerCases)
    func encodeAndDecodeMatchHuggingFace(_ c: TokenizerCase) throws {
        let tokenizer = try #require(ggufTokenizers[c.kind])
        #expect(tokenizer.encode(c.text, addSpecialTokens: false) == c.ids)
        #expect(tokenizer.encode(c.text, addSpecialTokens: true) == c.idsWithSpecial)
        #expect(try tokenizer.decode(c.ids) == c.decoded)
    }
}

@Suite struct BytePairEncoderTests {
    /// The heap used for long words merges exactly like the plain scan.
    @Test(arguments: ["byte-level", "sentencepiece"])
    func heapMergeEqualsScanMerge(kind: String) throws {
        let model = try #require(tokenizers[kind]).model
        let alphabet = Array(model.scalarIDs.values).sorted()
        var generator = SystemRandomNumberGenerator()
        for length in [17, 40, 200, 1000] {
            for _ in 0..<20 {
                // Words built from a few frequent symbols merge a lot.
                let pool = (0..<4).map { _ in alphabet.randomElement(using: &generator)! }
                let word = (0..<length).map { _ in pool.randomElement(using: &generator)! }
                var scanned = word, heaped = word
                model.encoder.scanMerge(&scanned)
                model.encoder.heapMerge(&heaped)
                #expect(scanned == heaped, "length \(length)")
            }
        }
    }
}
