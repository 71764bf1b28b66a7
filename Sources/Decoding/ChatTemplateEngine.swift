import Foundation

// The chat template's parser and interpreter (the lexer and types are in ChatTemplate.swift).
extension ChatTemplate {
    struct Parser {
        let tokens: [Token]
        var position = 0
        /// Depth of the tree being built; parsing and rendering recurse once per level, so a
        /// template nested (or chained) without bound would overflow the stack.
        var depth = 0
        static let maximumDepth = 256

        init(tokens: [Token]) { self.tokens = tokens }

        /// Goes `levels` deeper into the tree, or throws past `maximumDepth`; callers undo it.
        mutating func descend(_ levels: Int = 1) throws {
            depth += levels
            guard depth <= Self.maximumDepth else {
                throw ChatTemplateError.syntax("nested more than \(Self.maximumDepth) levels deep")
            }
        }

        var current: Token? { position < tokens.count ? tokens[position] : nil }

        mutating func advance() -> Token? { defer { position += 1 }; return current }

        mutating func expect(_ token: Token) throws {
            guard advance() == token else { throw ChatTemplateError.syntax("expected \(token) at token \(position - 1)") }
        }

        func isKeyword(_ name: String, offset: Int = 0) -> Bool {
            position + offset < tokens.count && tokens[position + offset] == .name(name)
        }

        mutating func skipSymbol(_ symbol: String) -> Bool {
            if current == .symbol(symbol) { position += 1; return true }
            return false
        }

        mutating func skipKeyword(_ name: String) -> Bool {
            if isKeyword(name) { position += 1; return true }
            return false
        }

        mutating func name() throws -> String {
            guard case let .name(n)? = advance() else { throw ChatTemplateError.syntax("expected a name at token \(position - 1)") }
            return n
        }

        /// Nodes until a `{% name %}` whose name is in `terminators` (left unconsumed).
        mutating func parseBlock(until terminators: Set<String>) throws -> [Node] {
            try descend()
            defer { depth -= 1 }
            var nodes: [Node] = []
            while let token = current {
                switch token {
                case let .text(text):
                    position += 1
                    nodes.append(.text(text))
                case .outputStart:
                    position += 1
                    nodes.append(.output(try expression()))
                    try expect(.outputEnd)
                case .blockStart:
                    guard position + 1 < tokens.count, case let .name(keyword) = tokens[position + 1] else {
                        throw ChatTemplateError.syntax("empty block tag")
                    }
                    if terminators.contains(keyword) { return nodes }
                    position += 2
                    switch keyword {
                    case "for": nodes.append(try forLoop())
                    case "if": nodes.append(try ifChain())
                    case "set":
                        let target = try postfix()
                        guard skipSymbol("=") else { throw ChatTemplateError.unsupported("{% set %} blocks") }
                        nodes.append(.set(target: target, value: try expression()))
                        try expect(.blockEnd)
                    case "generation", "endgeneration":  // transformers' marker for assistant masks
                        try expect(.blockEnd)
                    default:
                        throw ChatTemplateError.unsupported("{% \(keyword) %}")
                    }
                default:
                    throw ChatTemplateError.syntax("unexpected \(token)")
                }
            }
            if !terminators.isEmpty { throw ChatTemplateError.syntax("missing {% \(terminators.sorted().joined(separator: " or ")) %}") }
            return nodes
        }

        mutating func endTag(_ name: String) throws {
            try expect(.blockStart)
            guard try self.name() == name else { throw ChatTemplateError.syntax("expected {% \(name) %}") }
            try expect(.blockEnd)
        }

        mutating func forLoop() throws -> Node {
            var variables = [try name()]
            while skipSymbol(",") { variables.append(try name()) }
            guard skipKeyword("in") else { throw ChatTemplateError.syntax("expected 'in' in for loop") }
            let iterable = try orExpression()
            if isKeyword("if") { throw ChatTemplateError.unsupported("for ... if filters") }
            try expect(.blockEnd)
            let body = try parseBlock(until: ["endfor", "else"])
            var otherwise: [Node] = []
            if isKeyword("else", offset: 1) {
                position += 2
                try expect(.blockEnd)
                otherwise = try parseBlock(until: ["endfor"])
            }
            try endTag("endfor")
            return .forLoop(variables: variables, iterable: iterable, body: body, otherwise: otherwise)
        }

        mutating func ifChain() throws -> Node {
            var branches: [(Expression, [Node])] = []
            var condition = try expression()
            try expect(.blockEnd)
            while true {
                branches.append((condition, try parseBlock(until: ["elif", "else", "endif"])))
                position += 1  // the block start
                let keyword = try name()
                if keyword == "elif" {
                    condition = try expression()
                    try expect(.blockEnd)
                    continue
                }
                try expect(.blockEnd)
                if keyword == "endif" { return .ifChain(branches, otherwise: []) }
                let otherwise = try parseBlock(until: ["endif"])
                try endTag("endif")
                return .ifChain(branches, otherwise: otherwise)
            }
        }

        // MARK: Expressions, loosest first

        mutating func expression() throws -> Expression {
            try descend()
            defer { depth -= 1 }
            let value = try orExpression()
            guard skipKeyword("if") else { return value }
            let condition = try orExpression()
            let otherwise = skipKeyword("else") ? try expression() : nil
            return .conditional(value, condition: condition, otherwise: otherwise)
        }

        mutating func orExpression() throws -> Expression {
            var left = try andExpression(), links = 0
            defer { depth -= links }
            while skipKeyword("or") { try descend(); links += 1; left = .binary("or", left, try andExpression()) }
            return left
        }

        mutating func andExpression() throws -> Expression {
            var left = try notExpression(), links = 0
            defer { depth -= links }
            while skipKeyword("and") { try descend(); links += 1; left = .binary("and", left, try notExpression()) }
            return left
        }

        mutating func notExpression() throws -> Expression {
            guard skipKeyword("not") else { return try comparison() }
            try descend()
            defer { depth -= 1 }
            return .unary("not", try notExpression())
        }

        mutating func comparison() throws -> Expression {
            var left = try concatenation(), links = 0
            defer { depth -= links }
            while true {
                try descend(); links += 1
                if case let .symbol(op)? = current, ["==", "!=", "<", ">", "<=", ">="].contains(op) {
                    position += 1
                    left = .binary(op, left, try concatenation())
                } else if skipKeyword("in") {
                    left = .binary("in", left, try concatenation())
                } else if isKeyword("not"), isKeyword("in", offset: 1) {
                    position += 2
                    left = .unary("not", .binary("in", left, try concatenation()))
                } else if skipKeyword("is") {
                    let negated = skipKeyword("not")
                    left = .test(left, try name(), negated: negated)
                } else {
                    return left
                }
            }
        }

        mutating func concatenation() throws -> Expression {
            var left = try additive(), links = 0
            defer { depth -= links }
            while skipSymbol("~") { try descend(); links += 1; left = .binary("~", left, try additive()) }
            return left
        }

        mutating func additive() throws -> Expression {
            var left = try multiplicative(), links = 0
            defer { depth -= links }
            while case let .symbol(op)? = current, op == "+" || op == "-" {
                try descend(); links += 1
                position += 1
                left = .binary(op, left, try multiplicative())
            }
            return left
        }

        mutating func multiplicative() throws -> Expression {
            var left = try unary(), links = 0
            defer { depth -= links }
            while case let .symbol(op)? = current, ["*", "/", "//", "%"].contains(op) {
                try descend(); links += 1
                position += 1
                left = .binary(op, left, try unary())
            }
            return left
        }

        mutating func unary() throws -> Expression {
            try descend()
            defer { depth -= 1 }
            if skipSymbol("-") { return .unary("-", try unary()) }
            var value = try postfix(), links = 0
            defer { depth -= links }
            while skipSymbol("|") {
                try descend(); links += 1
                let filter = try name()
                value = .filter(value, filter, current == .symbol("(") ? try arguments().0 : [])
            }
            return value
        }

        mutating func arguments() throws -> ([Expression], [String: Expression]) {
            try expect(.symbol("("))
            var positional: [Expression] = [], named: [String: Expression] = [:]
            while !skipSymbol(")") {
                if case let .name(key)? = current, position + 1 < tokens.count, tokens[position + 1] == .symbol("=") {
                    position += 2
                    named[key] = try expression()
                } else {
                    positional.append(try expression())
                }
                _ = skipSymbol(",")
            }
            return (positional, named)
        }

        mutating func postfix() throws -> Expression {
            var value = try primary(), links = 0
            defer { depth -= links }
            while true {
                try descend(); links += 1
                if skipSymbol(".") {
                    value = .attribute(value, try name())
                } else if current == .symbol("(") {
                    let (positional, named) = try arguments()
                    value = .call(value, positional, named)
                } else if skipSymbol("[") {
                    let start = current == .symbol(":") ? nil : try expression()
                    if skipSymbol(":") {
                        let end = current == .symbol("]") ? nil : try expression()
                        value = .slice(value, start, end)
                    } else {
                        value = .subscript_(value, start!)
                    }
                    try expect(.symbol("]"))
                } else {
                    return value
                }
            }
        }

        mutating func primary() throws -> Expression {
            switch advance() {
            case let .string(s)?:
                var text = s
                while case let .string(next)? = current { text += next; position += 1 }  // adjacent literals join
                return .literal(.string(text))
            case let .int(i)?: return .literal(.int(i))
            case let .name(n)?:
                switch n {
                case "true", "True": return .literal(.bool(true))
                case "false", "False": return .literal(.bool(false))
                case "none", "None": return .literal(.none)
                default: return .name(n)
                }
            case .symbol("(")?:
                let value = try expression()
                try expect(.symbol(")"))
                return value
            case .symbol("[")?:
                var items: [Expression] = []
                while !skipSymbol("]") { items.append(try expression()); _ = skipSymbol(",") }
                return .list(items)
            case .symbol("{")?:
                var pairs: [(Expression, Expression)] = []
                while !skipSymbol("}") {
                    let key = try expression()
                    try expect(.symbol(":"))
                    pairs.append((key, try expression()))
                    _ = skipSymbol(",")
                }
                return .dict(pairs)
            case let token:
                throw ChatTemplateError.syntax("unexpected \(token.map { "\($0)" } ?? "end of template")")
            }
        }
    }
}
