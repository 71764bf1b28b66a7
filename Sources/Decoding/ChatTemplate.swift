import Foundation

/// One message of a conversation.
public struct ChatMessage: Sendable, Equatable {
    /// The speaker, as the chat template names it (`system`, `user`, `assistant`, ...).
    public var role: String
    /// The message text.
    public var content: String
    /// A message from `role` with text `content`.
    public init(role: String, content: String) { self.role = role; self.content = content }
}

/// Why a chat template could not be rendered: a construct outside the supported Jinja
/// subset, a syntax error, or the template's own `raise_exception`.
public enum ChatTemplateError: Error, Equatable, CustomStringConvertible {
    case unsupported(String)
    case syntax(String)
    case raised(String)
    case noTemplate

    /// A one-line description for logs and error messages.
    public var description: String {
        switch self {
        case let .unsupported(what): return "chat template: unsupported Jinja construct: \(what)"
        case let .syntax(what): return "chat template: syntax error: \(what)"
        case let .raised(message): return "chat template: \(message)"
        case .noTemplate: return "the model has no chat template"
        }
    }
}

/// The Jinja subset Hugging Face chat templates use (ChatML, Llama 2 and 3, Mistral, Gemma,
/// Qwen): for loops with `loop`, if/elif/else, set (names and namespace attributes),
/// whitespace control, literals, subscripts and slices, + ~ - * / % and comparisons,
/// and/or/not, in, is defined/none, inline if, string methods (strip, upper, ...), filters
/// (trim, upper, lower, length, tojson) and raise_exception. Anything else is a clear error.
public struct ChatTemplate: Sendable {
    let nodes: [Node]

    /// Parses `source`; throws `ChatTemplateError` for syntax errors or constructs outside the subset.
    public init(_ source: String) throws {
        var parser = Parser(tokens: try Lexer.tokenize(source))
        nodes = try parser.parseBlock(until: [])
    }

    /// Renders `messages` as transformers' `apply_chat_template(tokenize=False)` does.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String = "", eosToken: String = "") throws -> String {
        let context: [String: Value] = [
            "messages": .list(messages.map { .dict(["role": .string($0.role), "content": .string($0.content)]) }),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "bos_token": .string(bosToken), "eos_token": .string(eosToken),
        ]
        var output = ""
        var scope = Scope(variables: context)
        try Interpreter.run(nodes, scope: &scope, output: &output)
        return output
    }

    // MARK: - Values

    indirect enum Value: Sendable, Equatable {
        case string(String), int(Int), bool(Bool), none, list([Value]), dict([String: Value]), namespace(Int), undefined

        var truthy: Bool {
            switch self {
            case let .string(s): return !s.isEmpty
            case let .int(i): return i != 0
            case let .bool(b): return b
            case let .list(l): return !l.isEmpty
            case let .dict(d): return !d.isEmpty
            case .namespace: return true
            case .none, .undefined: return false
            }
        }

        var text: String {
            switch self {
            case let .string(s): return s
            case let .int(i): return String(i)
            case let .bool(b): return b ? "True" : "False"
            case .none: return "None"
            case .undefined: return ""
            case let .list(l): return "[" + l.map(\.repr).joined(separator: ", ") + "]"
            case let .dict(d): return "{" + d.sorted { $0.key < $1.key }.map { "'\($0.key)': \($0.value.repr)" }.joined(separator: ", ") + "}"
            case .namespace: return "<Namespace>"
            }
        }

        var repr: String { if case let .string(s) = self { return "'\(s)'" } else { return text } }

        var json: String {
            switch self {
            case let .string(s):
                let escaped = s.unicodeScalars.map { c -> String in
                    switch c {
                    case "\"": return "\\\""
                    case "\\": return "\\\\"
                    case "\n": return "\\n"
                    case "\t": return "\\t"
                    case "\r": return "\\r"
                    default: return c.value < 0x20 ? String(format: "\\u%04x", c.value) : String(c)
                    }
                }.joined()
                return "\"\(escaped)\""
            case let .int(i): return String(i)
            case let .bool(b): return b ? "true" : "false"
            case .none, .undefined: return "null"
            case let .list(l): return "[" + l.map(\.json).joined(separator: ", ") + "]"
            case let .dict(d): return "{" + d.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \($0.value.json)" }.joined(separator: ", ") + "}"
            case .namespace: return "{}"
            }
        }
    }

    // MARK: - Syntax tree

    indirect enum Expression: Sendable {
        case literal(Value)
        case name(String)
        case attribute(Expression, String)
        case subscript_(Expression, Expression)
        case slice(Expression, Expression?, Expression?)
        case call(Expression, [Expression], [String: Expression])
        case filter(Expression, String, [Expression])
        case unary(String, Expression)
        case binary(String, Expression, Expression)
        case test(Expression, String, negated: Bool)
        case conditional(Expression, condition: Expression, otherwise: Expression?)
        case list([Expression])
        case dict([(Expression, Expression)])
    }

    indirect enum Node: Sendable {
        case text(String)
        case output(Expression)
        case forLoop(variables: [String], iterable: Expression, body: [Node], otherwise: [Node])
        case ifChain([(Expression, [Node])], otherwise: [Node])
        case set(target: Expression, value: Expression)
    }
}

// MARK: - Lexer

extension ChatTemplate {
    enum Token: Equatable {
        case text(String)
        case blockStart, blockEnd, outputStart, outputEnd
        case name(String), string(String), int(Int), symbol(String)
    }

    enum Lexer {
        static func tokenize(_ source: String) throws -> [Token] {
            var tokens: [Token] = []
            let s = Array(source.unicodeScalars)
            var i = 0, text = String.UnicodeScalarView()
            var trimNextText = false
            func flushText(trimEnd: Bool) {
                var t = String(text)
                if trimNextText { t = String(t.drop { $0.isWhitespace }) }
                if trimEnd { while let last = t.last, last.isWhitespace { t.removeLast() } }
                if !t.isEmpty { tokens.append(.text(t)) }
                text = String.UnicodeScalarView()
                trimNextText = false
            }
            while i < s.count {
                if s[i] == "{", i + 1 < s.count, s[i + 1] == "{" || s[i + 1] == "%" || s[i + 1] == "#" {
                    let kind = s[i + 1]
                    let trimBefore = i + 2 < s.count && s[i + 2] == "-"
                    if kind == "%" && !trimBefore {
                        // lstrip_blocks (transformers enables it): spaces and tabs between the
                        // start of a line and a block tag are dropped.
                        var k = text.endIndex
                        while k > text.startIndex, text[text.index(before: k)] == " " || text[text.index(before: k)] == "\t" {
                            k = text.index(before: k)
                        }
                        let atLineStart = k == text.startIndex ? tokens.isEmpty : text[text.index(before: k)] == "\n"
                        if atLineStart { text.removeSubrange(k..<text.endIndex) }
                    }
                    flushText(trimEnd: trimBefore)
                    i += trimBefore ? 3 : 2
                    if kind == "#" {  // comment
                        while i + 1 < s.count, !(s[i] == "#" && s[i + 1] == "}") { i += 1 }
                        if i > 0, s[i - 1] == "-" { trimNextText = true }
                        i += 2
                        continue
                    }
                    tokens.append(kind == "{" ? .outputStart : .blockStart)
                    let close: Unicode.Scalar = kind == "{" ? "}" : "%"
                    while true {
                        while i < s.count, s[i].properties.isWhitespace { i += 1 }
                        guard i < s.count else { throw ChatTemplateError.syntax("unterminated tag") }
                        if (s[i] == "-" && i + 2 < s.count && s[i + 1] == close && s[i + 2] == "}") {
                            trimNextText = true
                            i += 3
                            break
                        }
                        if s[i] == close, i + 1 < s.count, s[i + 1] == "}" { i += 2; break }
                        let c = s[i]
                        if c == "'" || c == "\"" {
                            var value = String.UnicodeScalarView()
                            i += 1
                            while i < s.count, s[i] != c {
                                if s[i] == "\\", i + 1 < s.count {
                                    i += 1
                                    switch s[i] {
                                    case "n": value.append("\n")
                                    case "t": value.append("\t")
                                    case "r": value.append("\r")
                                    default: value.append(s[i])
                                    }
                                } else {
                                    value.append(s[i])
                                }
                                i += 1
                            }
                            guard i < s.count else { throw ChatTemplateError.syntax("unterminated string") }
                            i += 1
                            tokens.append(.string(String(value)))
                        } else if c.properties.numericType != nil, c.value < 0x80 {
                            var j = i
                            while j < s.count, s[j].value >= 0x30, s[j].value <= 0x39 { j += 1 }
                            let digits = String(String.UnicodeScalarView(s[i..<j]))
                            guard let value = Int(digits) else { throw ChatTemplateError.syntax("integer \(digits) out of range") }
                            tokens.append(.int(value))
                            i = j
                        } else if c.properties.isAlphabetic || c == "_" {
                            var j = i
                            while j < s.count, s[j].properties.isAlphabetic || s[j] == "_" || (s[j].value >= 0x30 && s[j].value <= 0x39) { j += 1 }
                            tokens.append(.name(String(String.UnicodeScalarView(s[i..<j]))))
                            i = j
                        } else {
                            let two = i + 1 < s.count ? String(String.UnicodeScalarView([c, s[i + 1]])) : ""
                            if ["==", "!=", "<=", ">=", "//", "**"].contains(two) {
                                tokens.append(.symbol(two))
                                i += 2
                            } else if "+-*/%~<>()[]{}.,:|=!".unicodeScalars.contains(c) {
                                tokens.append(.symbol(String(c)))
                                i += 1
                            } else {
                                throw ChatTemplateError.syntax("unexpected character '\(c)'")
                            }
                        }
                    }
                    tokens.append(kind == "{" ? .outputEnd : .blockEnd)
                    // trim_blocks (transformers enables it): the newline after a block tag goes.
                    if kind == "%", i < s.count, s[i] == "\n" { i += 1 }
                } else {
                    text.append(s[i])
                    i += 1
                }
            }
            flushText(trimEnd: false)
            return tokens
        }
    }
}
