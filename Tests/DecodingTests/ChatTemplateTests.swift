import Foundation
import Testing
@testable import Decoding

/// Renderings by transformers' own Jinja (Scripts/make_chat_template_fixtures.py and the
/// fixture tokenizers' templates from Scripts/make_model_fixtures.py).
@Suite struct ChatTemplateTests {
    static func json(_ url: URL) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }

    static func messages(_ any: Any) -> [ChatMessage] {
        (any as! [[String: String]]).map { ChatMessage(role: $0["role"]!, content: $0["content"]!) }
    }

    @Test func fixtureTokenizerTemplatesMatchTransformers() throws {
        let cases = try Self.json(fixtureModels.deletingLastPathComponent().appendingPathComponent("tokenizers/cases.json"))
        let chat = cases["chat"] as! [String: [String: Any]]
        let tokens = ["byte-level": ("", "<|im_end|>"), "sentencepiece": ("<s>", "</s>")]
        var checked = 0
        for (kind, entry) in chat {
            let template = try ChatTemplate(entry["template"] as! String)
            for c in entry["cases"] as! [[String: Any]] {
                let rendered = try template.render(Self.messages(c["messages"]!), addGenerationPrompt: c["add_generation_prompt"] as! Bool,
                                                   bosToken: tokens[kind]!.0, eosToken: tokens[kind]!.1)
                #expect(rendered == c["rendered"] as! String, "\(kind)")
                checked += 1
            }
        }
        #expect(checked == 12)
    }

    @Test func publishedTemplatesMatchTransformers() throws {
        let fixture = try Self.json(URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/chat_templates.json"))
        let templates = fixture["templates"] as! [String: String]
        let conversations = (fixture["conversations"] as! [Any]).map(Self.messages)
        for c in fixture["cases"] as! [[String: Any]] {
            let name = c["template"] as! String
            let template = try ChatTemplate(templates[name]!)
            let messages = conversations[c["conversation"] as! Int]
            let generation = c["add_generation_prompt"] as! Bool
            if let expected = c["rendered"] as? String {
                #expect(try template.render(messages, addGenerationPrompt: generation, bosToken: "<s>", eosToken: "</s>") == expected,
                        "\(name) conversation \(c["conversation"]!) generation \(generation)")
            } else {
                #expect(throws: ChatTemplateError.self, "\(name) must raise") {
                    try template.render(messages, addGenerationPrompt: generation, bosToken: "<s>", eosToken: "</s>")
                }
            }
        }
    }

    @Test func unsupportedConstructsFailClearly() {
        #expect { try ChatTemplate("{% macro m() %}x{% endmacro %}") } throws: { "\($0)".contains("macro") }
        #expect { try ChatTemplate("{{ messages[0]['content'] ") } throws: { $0 is ChatTemplateError }
        #expect { try ChatTemplate("{% for m in messages %}").render([], addGenerationPrompt: false) } throws: { "\($0)".contains("endfor") }
        #expect {
            try ChatTemplate("{{ raise_exception('no system role') }}").render([], addGenerationPrompt: false)
        } throws: { ($0 as? ChatTemplateError) == .raised("no system role") }
        #expect { try ChatTemplate("{{ messages | dictsort }}").render([], addGenerationPrompt: false) } throws: { "\($0)".contains("dictsort") }
    }

    /// A template is model-file input: arithmetic overflow, runaway sizes, endless loops and
    /// unbounded nesting must throw instead of trapping, exhausting memory or hanging.
    @Test func hostileTemplatesThrowInsteadOfTrapping() {
        func render(_ source: String) throws -> String { try ChatTemplate(source).render([], addGenerationPrompt: false) }
        #expect { try render("{{ 99999999999999999999 }}") } throws: { "\($0)".contains("out of range") }
        for overflow in ["9223372036854775807 + 1", "-9223372036854775807 - 2", "4294967296 * 4294967296",
                         "-(-9223372036854775807 - 1)", "(-9223372036854775807 - 1) // -1"] {
            #expect(throws: ChatTemplateError.raised("integer overflow")) { try render("{{ \(overflow) }}") }
        }
        #expect { try render("{{ range(1000000000000) | length }}") } throws: { "\($0)".contains("range longer") }
        #expect { try render("{{ 'ab' * 4611686018427387904 }}") } throws: { "\($0)".contains("string longer") }
        #expect { try render("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}") }
            throws: { "\($0)".contains("string longer") }
        #expect { try render("{% for i in range(4000000) %}{% for j in range(4000000) %}{% endfor %}{% endfor %}") }
            throws: { "\($0)".contains("statements") }
        #expect { try render("{{ " + String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000) + " }}") }
            throws: { "\($0)".contains("levels deep") }
        #expect { try render("{{ 1" + String(repeating: " + 1", count: 100_000) + " }}") } throws: { "\($0)".contains("levels deep") }
        #expect { try render(String(repeating: "{% if true %}", count: 5000) + String(repeating: "{% endif %}", count: 5000)) }
            throws: { "\($0)".contains("levels deep") }
    }

    /// Python's floor division and modulo (the sign follows the divisor), as Jinja computes them.
    @Test func integerDivisionFollowsPython() throws {
        let template = try ChatTemplate("{{ -7 // 2 }} {{ 7 // -2 }} {{ 7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ -6 % 3 }} {{ 5 % -1 }}")
        #expect(try template.render([], addGenerationPrompt: false) == "-4 -4 3 2 -2 0 0")
    }
}

@Suite struct ChatPromptTests {
    /// A chat prompt becomes exactly the ids transformers' apply_chat_template(tokenize=True) gives.
    @Test func chatPromptTokensMatchTransformers() async throws {
        let cases = try ChatTemplateTests.json(fixtureModels.deletingLastPathComponent().appendingPathComponent("tokenizers/cases.json"))
        let chat = (cases["chat"] as! [String: [String: Any]])["byte-level"]!
        let generator = try GeneratorTests.generator()  // the fixture models carry the byte-level tokenizer
        for c in chat["cases"] as! [[String: Any]] {
            let tokens = try generator.promptTokens(for: .chat(ChatTemplateTests.messages(c["messages"]!)),
                                                    addGenerationPrompt: c["add_generation_prompt"] as! Bool)
            #expect(tokens == c["ids"] as! [Int])
        }
        var parameters = GenerationParameters()
        parameters.maxTokens = 3
        parameters.ignoreEndOfSequence = true
        let result = try await collect(generator.generate(.chat([ChatMessage(role: "user", content: "Hello")]), parameters: parameters))
        let promptLength = try generator.promptTokens(for: .chat([ChatMessage(role: "user", content: "Hello")])).count
        #expect(result.reason == .maxTokens && result.statistics?.promptTokens == promptLength)
    }
}
