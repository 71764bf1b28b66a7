import Foundation

// Evaluation of a parsed chat template.
extension ChatTemplate {
    /// Variables in scope; namespaces live in a shared store so `ns.x = …` inside a loop is
    /// seen after it (Jinja's way around its loop scoping).
    struct Scope {
        var variables: [String: Value]
        var shared = Shared()

        /// State every nested scope sees: namespaces and what is left of the work budget.
        final class Shared {
            var namespaces: [[String: Value]] = []
            /// Statements the template may still execute: a template is model-file input, and one
            /// that loops for ever must fail rather than hang the caller.
            var statementsLeft = Interpreter.maximumStatements
        }
    }

    enum Interpreter {
        /// Statements and loop iterations one rendering may execute; real templates need a few
        /// hundred per message.
        static let maximumStatements = 1_000_000
        /// Longest string (UTF-8 bytes) or list a template may build, the rendered text included;
        /// it keeps `range(n)`, `s * n` and repeated doubling from exhausting memory.
        static let maximumLength = 1 << 22

        static func checkLength(_ length: Int, of what: String) throws {
            guard length <= maximumLength else {
                throw ChatTemplateError.raised("\(what) longer than \(maximumLength)")
            }
        }

        static func checked(_ result: (partialValue: Int, overflow: Bool)) throws -> Value {
            guard !result.overflow else { throw ChatTemplateError.raised("integer overflow") }
            return .int(result.partialValue)
        }

        /// Charges one statement (or loop iteration) to the rendering's budget.
        static func spend(_ scope: Scope) throws {
            scope.shared.statementsLeft -= 1
            guard scope.shared.statementsLeft >= 0 else {
                throw ChatTemplateError.raised("template ran more than \(maximumStatements) statements")
            }
        }

        static func run(_ nodes: [Node], scope: inout Scope, output: inout String) throws {
            for node in nodes {
                try spend(scope)
                switch node {
                case let .text(text):
                    output += text
                    try checkLength(output.utf8.count, of: "rendered text")
                case let .output(expression):
                    output += try evaluate(expression, scope).text
                    try checkLength(output.utf8.count, of: "rendered text")
                case let .set(target, expression):
                    let value = try evaluate(expression, scope)
                    switch target {
                    case let .name(name): scope.variables[name] = value
                    case let .attribute(object, field):
                        guard case let .namespace(id) = try evaluate(object, scope) else {
                            throw ChatTemplateError.unsupported("setting an attribute of something other than a namespace")
                        }
                        scope.shared.namespaces[id][field] = value
                    default: throw ChatTemplateError.unsupported("set target")
                    }
                case let .ifChain(branches, otherwise):
                    var taken = false
                    for (condition, body) in branches where try evaluate(condition, scope).truthy {
                        try run(body, scope: &scope, output: &output)
                        taken = true
                        break
                    }
                    if !taken { try run(otherwise, scope: &scope, output: &output) }
                case let .forLoop(variables, iterable, body, otherwise):
                    let items: [Value]
                    switch try evaluate(iterable, scope) {
                    case let .list(list): items = list
                    case let .dict(dict): items = dict.keys.sorted().map { .string($0) }
                    case let .string(s): items = s.map { .string(String($0)) }
                    case .none, .undefined: items = []
                    case let other: throw ChatTemplateError.unsupported("iterating over \(other.repr)")
                    }
                    if items.isEmpty { try run(otherwise, scope: &scope, output: &output) }
                    for (index, item) in items.enumerated() {
                        try spend(scope)
                        var inner = scope  // assignments inside the loop stay inside it
                        if variables.count == 1 {
                            inner.variables[variables[0]] = item
                        } else {
                            guard case let .list(parts) = item, parts.count == variables.count else {
                                throw ChatTemplateError.unsupported("unpacking \(item.repr) into \(variables.count) names")
                            }
                            for (name, part) in zip(variables, parts) { inner.variables[name] = part }
                        }
                        inner.variables["loop"] = .dict([
                            "index0": .int(index), "index": .int(index + 1), "first": .bool(index == 0),
                            "last": .bool(index == items.count - 1), "length": .int(items.count),
                            "revindex": .int(items.count - index), "revindex0": .int(items.count - index - 1),
                        ])
                        try run(body, scope: &inner, output: &output)
                    }
                }
            }
        }

        static func evaluate(_ expression: Expression, _ scope: Scope) throws -> Value {
            switch expression {
            case let .literal(value): return value
            case let .name(name): return scope.variables[name] ?? .undefined
            case let .list(items): return .list(try items.map { try evaluate($0, scope) })
            case let .dict(pairs):
                var result: [String: Value] = [:]
                for (key, value) in pairs { result[try evaluate(key, scope).text] = try evaluate(value, scope) }
                return .dict(result)
            case let .attribute(object, field):
                switch try evaluate(object, scope) {
                case let .dict(dict): return dict[field] ?? .undefined
                case let .namespace(id): return scope.shared.namespaces[id][field] ?? .undefined
                default: return .undefined
                }
            case let .subscript_(object, key):
                let container = try evaluate(object, scope), index = try evaluate(key, scope)
                switch (container, index) {
                case let (.dict(dict), .string(k)): return dict[k] ?? .undefined
                case let (.list(list), .int(i)):
                    let j = i < 0 ? list.count + i : i
                    guard j >= 0, j < list.count else { throw ChatTemplateError.raised("list index \(i) out of range") }
                    return list[j]
                case let (.string(s), .int(i)):
                    let characters = Array(s), j = i < 0 ? characters.count + i : i
                    guard j >= 0, j < characters.count else { throw ChatTemplateError.raised("string index \(i) out of range") }
                    return .string(String(characters[j]))
                default: return .undefined
                }
            case let .slice(object, start, end):
                let container = try evaluate(object, scope)
                func bounds(_ count: Int) throws -> Range<Int> {
                    func position(_ e: Expression?, _ fallback: Int) throws -> Int {
                        guard let e else { return fallback }
                        guard case let .int(i) = try evaluate(e, scope) else { throw ChatTemplateError.unsupported("non-integer slice bound") }
                        return min(max(i < 0 ? count + i : i, 0), count)
                    }
                    let a = try position(start, 0), b = try position(end, count)
                    return a..<max(a, b)
                }
                switch container {
                case let .list(list): return .list(Array(list[try bounds(list.count)]))
                case let .string(s): let c = Array(s); return .string(String(c[try bounds(c.count)]))
                default: return .undefined
                }
            case let .unary(op, operand):
                let value = try evaluate(operand, scope)
                if op == "not" { return .bool(!value.truthy) }
                guard case let .int(i) = value else { throw ChatTemplateError.unsupported("negating \(value.repr)") }
                return try checked(Int(0).subtractingReportingOverflow(i))
            case let .binary(op, left, right):
                if op == "and" { let l = try evaluate(left, scope); return l.truthy ? try evaluate(right, scope) : l }
                if op == "or" { let l = try evaluate(left, scope); return l.truthy ? l : try evaluate(right, scope) }
                return try binary(op, try evaluate(left, scope), try evaluate(right, scope))
            case let .test(operand, name, negated):
                let value = try evaluate(operand, scope)
                let result: Bool
                switch name {
                case "defined": result = value != .undefined
                case "undefined": result = value == .undefined
                case "none": result = value == .none
                case "string": if case .string = value { result = true } else { result = false }
                case "number", "integer": if case .int = value { result = true } else { result = false }
                case "mapping": if case .dict = value { result = true } else { result = false }
                case "sequence", "iterable":
                    switch value { case .list, .string, .dict: result = true; default: result = false }
                case "true": result = value == .bool(true)
                case "false": result = value == .bool(false)
                default: throw ChatTemplateError.unsupported("test 'is \(name)'")
                }
                return .bool(result != negated)
            case let .conditional(value, condition, otherwise):
                if try evaluate(condition, scope).truthy { return try evaluate(value, scope) }
                return try otherwise.map { try evaluate($0, scope) } ?? .undefined
            case let .filter(operand, name, arguments):
                return try filter(name, try evaluate(operand, scope), try arguments.map { try evaluate($0, scope) })
            case let .call(callee, positional, named):
                let arguments = try positional.map { try evaluate($0, scope) }
                if case let .name(function) = callee {
                    switch function {
                    case "raise_exception": throw ChatTemplateError.raised(arguments.first?.text ?? "raise_exception")
                    case "namespace":
                        var fields: [String: Value] = [:]
                        for (key, value) in named { fields[key] = try evaluate(value, scope) }
                        scope.shared.namespaces.append(fields)
                        return .namespace(scope.shared.namespaces.count - 1)
                    case "range":
                        guard case let .int(n)? = arguments.first else { throw ChatTemplateError.unsupported("range arguments") }
                        try checkLength(n, of: "range")
                        return .list((0..<max(n, 0)).map { .int($0) })
                    default: throw ChatTemplateError.unsupported("function \(function)()")
                    }
                }
                guard case let .attribute(object, method) = callee else { throw ChatTemplateError.unsupported("call of an expression") }
                return try self.method(method, on: try evaluate(object, scope), arguments)
            }
        }

        static func binary(_ op: String, _ l: Value, _ r: Value) throws -> Value {
            switch (op, l, r) {
            case let ("+", .int(a), .int(b)): return try checked(a.addingReportingOverflow(b))
            case let ("+", .string(a), .string(b)):
                try checkLength(a.utf8.count + b.utf8.count, of: "string")
                return .string(a + b)
            case let ("+", .list(a), .list(b)):
                try checkLength(a.count + b.count, of: "list")
                return .list(a + b)
            case ("~", _, _):
                let (a, b) = (l.text, r.text)
                try checkLength(a.utf8.count + b.utf8.count, of: "string")
                return .string(a + b)
            case let ("-", .int(a), .int(b)): return try checked(a.subtractingReportingOverflow(b))
            case let ("*", .int(a), .int(b)): return try checked(a.multipliedReportingOverflow(by: b))
            case let ("*", .string(a), .int(b)):
                let length = a.utf8.count.multipliedReportingOverflow(by: max(b, 0))
                try checkLength(length.overflow ? .max : length.partialValue, of: "string")
                return .string(String(repeating: a, count: max(b, 0)))
            case let ("//", .int(a), .int(b)) where b != 0:  // Python floors; Swift truncates
                guard a != .min || b != -1 else { throw ChatTemplateError.raised("integer overflow") }
                let quotient = a / b
                return .int(a % b != 0 && (a < 0) != (b < 0) ? quotient - 1 : quotient)
            case let ("%", .int(a), .int(b)) where b != 0:  // Python's remainder takes the divisor's sign
                let remainder = b == -1 ? 0 : a % b
                return .int(remainder != 0 && (remainder < 0) != (b < 0) ? remainder + b : remainder)
            case ("==", _, _): return .bool(l == r)
            case ("!=", _, _): return .bool(l != r)
            case let ("<", .int(a), .int(b)): return .bool(a < b)
            case let (">", .int(a), .int(b)): return .bool(a > b)
            case let ("<=", .int(a), .int(b)): return .bool(a <= b)
            case let (">=", .int(a), .int(b)): return .bool(a >= b)
            case let ("in", _, .list(list)): return .bool(list.contains(l))
            case let ("in", .string(a), .string(b)): return .bool(b.contains(a))
            case let ("in", .string(a), .dict(d)): return .bool(d[a] != nil)
            default: throw ChatTemplateError.unsupported("\(l.repr) \(op) \(r.repr)")
            }
        }

        static func method(_ name: String, on value: Value, _ arguments: [Value]) throws -> Value {
            switch (value, name) {
            case let (.string(s), "strip"): return .string(s.trimmingCharacters(in: .whitespacesAndNewlines))
            case let (.string(s), "lstrip"): return .string(String(s.drop { $0.isWhitespace }))
            case let (.string(s), "rstrip"):
                var t = s
                while let last = t.last, last.isWhitespace { t.removeLast() }
                return .string(t)
            case let (.string(s), "upper"): return .string(s.uppercased())
            case let (.string(s), "lower"): return .string(s.lowercased())
            case let (.string(s), "title"): return .string(s.capitalized)
            case let (.string(s), "startswith"): return .bool(s.hasPrefix(arguments.first?.text ?? ""))
            case let (.string(s), "endswith"): return .bool(s.hasSuffix(arguments.first?.text ?? ""))
            case let (.string(s), "replace") where arguments.count == 2:
                let (needle, replacement) = (arguments[0].text.utf8.count, arguments[1].text.utf8.count)
                try checkLength(s.utf8.count + s.utf8.count / max(needle, 1) * replacement, of: "string")
                return .string(s.replacingOccurrences(of: arguments[0].text, with: arguments[1].text))
            case let (.string(s), "split"):
                let parts = arguments.isEmpty ? s.split(whereSeparator: \.isWhitespace).map(String.init)
                    : s.components(separatedBy: arguments[0].text)
                return .list(parts.map { .string($0) })
            case let (.dict(d), "items"): return .list(d.keys.sorted().map { .list([.string($0), d[$0]!]) })
            case let (.dict(d), "keys"): return .list(d.keys.sorted().map { .string($0) })
            case let (.dict(d), "values"): return .list(d.keys.sorted().map { d[$0]! })
            case let (.dict(d), "get"): return d[arguments.first?.text ?? ""] ?? (arguments.count > 1 ? arguments[1] : .none)
            default: throw ChatTemplateError.unsupported("method .\(name)() on \(value.repr)")
            }
        }

        static func filter(_ name: String, _ value: Value, _ arguments: [Value]) throws -> Value {
            switch (name, value) {
            case let ("trim", .string(s)): return .string(s.trimmingCharacters(in: .whitespacesAndNewlines))
            case let ("upper", .string(s)): return .string(s.uppercased())
            case let ("lower", .string(s)): return .string(s.lowercased())
            case let ("capitalize", .string(s)): return .string(s.prefix(1).uppercased() + s.dropFirst().lowercased())
            case let ("length", .list(l)), let ("count", .list(l)): return .int(l.count)
            case let ("length", .string(s)), let ("count", .string(s)): return .int(s.count)
            case let ("length", .dict(d)): return .int(d.count)
            case ("tojson", _): return .string(value.json)
            case ("string", _): return .string(value.text)
            case let ("first", .list(l)): return l.first ?? .undefined
            case let ("last", .list(l)): return l.last ?? .undefined
            case let ("join", .list(l)):
                let parts = l.map(\.text), separator = arguments.first?.text ?? ""
                try checkLength(parts.reduce(separator.utf8.count * parts.count) { $0 + $1.utf8.count }, of: "string")
                return .string(parts.joined(separator: separator))
            case let ("reverse", .list(l)): return .list(l.reversed())
            case ("default", _): return value == .undefined || (arguments.count > 1 && arguments[1].truthy && !value.truthy) ? arguments.first ?? .undefined : value
            case let ("items", .dict(d)): return .list(d.keys.sorted().map { .list([.string($0), d[$0]!]) })
            default: throw ChatTemplateError.unsupported("filter |\(name) on \(value.repr)")
            }
        }
    }
}
