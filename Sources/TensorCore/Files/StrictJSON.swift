/// A small strict JSON parser for file headers. Unlike `JSONSerialization` it reports
/// duplicate object keys (a safetensors header with two entries of one name must be
/// rejected, not silently resolved), bounds nesting depth (hostile input cannot exhaust
/// the stack) and keeps integers exact.
public enum StrictJSON: Equatable, Sendable {
    case null
    case bool(Bool)
    case integer(Int)
    case number(Double)
    case string(String)
    case array([StrictJSON])
    /// Members in document order.
    case object([(String, StrictJSON)])

    /// Structural equality (object members compared in order).
    public static func == (lhs: StrictJSON, rhs: StrictJSON) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.integer(a), .integer(b)): return a == b
        case let (.number(a), .number(b)): return a == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)): return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// A parse failure, with the byte offset where it happened.
    public struct ParseError: Error, Equatable, CustomStringConvertible {
        /// Byte offset of the failure in the input.
        public let offset: Int
        /// What was wrong.
        public let reason: String
        /// A one-line description for logs and error messages.
        public var description: String { "\(reason) at byte \(offset)" }
    }

    /// Parses a whole document (trailing whitespace allowed, nothing else).
    public static func parse(_ bytes: UnsafeRawBufferPointer, maximumDepth: Int = 64) throws -> StrictJSON {
        var parser = Parser(bytes: bytes, maximumDepth: maximumDepth)
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.position == bytes.count else { throw parser.error("trailing characters") }
        return value
    }

    /// Parses a whole document given as text (trailing whitespace allowed, nothing else).
    public static func parse(_ text: String, maximumDepth: Int = 64) throws -> StrictJSON {
        var copy = text
        return try copy.withUTF8 { try parse(UnsafeRawBufferPointer($0), maximumDepth: maximumDepth) }
    }

    /// The member named `key` of an object (nil for other values or absent keys).
    public subscript(key: String) -> StrictJSON? {
        guard case let .object(members) = self else { return nil }
        return members.first { $0.0 == key }?.1
    }

    private struct Parser {
        let bytes: UnsafeRawBufferPointer
        let maximumDepth: Int
        var position = 0

        init(bytes: UnsafeRawBufferPointer, maximumDepth: Int) {
            self.bytes = bytes
            self.maximumDepth = maximumDepth
        }

        func error(_ reason: String) -> ParseError { ParseError(offset: position, reason: reason) }

        mutating func skipWhitespace() {
            while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) { position += 1 }
        }

        mutating func expect(_ literal: String, _ result: StrictJSON) throws -> StrictJSON {
            for byte in literal.utf8 {
                guard position < bytes.count, bytes[position] == byte else { throw error("invalid literal") }
                position += 1
            }
            return result
        }

        mutating func value(depth: Int) throws -> StrictJSON {
            guard depth < maximumDepth else { throw error("nesting deeper than \(maximumDepth)") }
            skipWhitespace()
            guard position < bytes.count else { throw error("unexpected end") }
            switch bytes[position] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try expect("true", .bool(true))
            case UInt8(ascii: "f"): return try expect("false", .bool(false))
            case UInt8(ascii: "n"): return try expect("null", .null)
            default: return try number()
            }
        }

        mutating func object(depth: Int) throws -> StrictJSON {
            position += 1
            var members: [(String, StrictJSON)] = []
            var seen = Set<String>()
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "}") { position += 1; return .object(members) }
            while true {
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw error("expected a key") }
                let key = try string()
                guard seen.insert(key).inserted else { throw error("duplicate key \"\(key)\"") }
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw error("expected ':'") }
                position += 1
                members.append((key, try value(depth: depth + 1)))
                skipWhitespace()
                guard position < bytes.count else { throw error("unexpected end in object") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                if bytes[position] == UInt8(ascii: "}") { position += 1; return .object(members) }
                throw error("expected ',' or '}'")
            }
        }

        mutating func array(depth: Int) throws -> StrictJSON {
            position += 1
            var elements: [StrictJSON] = []
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "]") { position += 1; return .array(elements) }
            while true {
                elements.append(try value(depth: depth + 1))
                skipWhitespace()
                guard position < bytes.count else { throw error("unexpected end in array") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                if bytes[position] == UInt8(ascii: "]") { position += 1; return .array(elements) }
                throw error("expected ',' or ']'")
            }
        }

        mutating func hexDigit() throws -> UInt32 {
            guard position < bytes.count else { throw error("unexpected end in escape") }
            let c = bytes[position]
            position += 1
            switch c {
            case 0x30...0x39: return UInt32(c - 0x30)
            case 0x41...0x46: return UInt32(c - 0x41 + 10)
            case 0x61...0x66: return UInt32(c - 0x61 + 10)
            default: throw error("invalid hex digit")
            }
        }

        mutating func string() throws -> String {
            position += 1  // opening quote
            var utf8: [UInt8] = []
            while true {
                guard position < bytes.count else { throw error("unterminated string") }
                let c = bytes[position]
                position += 1
                if c == UInt8(ascii: "\"") { break }
                if c < 0x20 { throw error("control character in string") }
                guard c == UInt8(ascii: "\\") else { utf8.append(c); continue }
                guard position < bytes.count else { throw error("unterminated escape") }
                let e = bytes[position]
                position += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(e)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0C)
                case UInt8(ascii: "n"): utf8.append(0x0A)
                case UInt8(ascii: "r"): utf8.append(0x0D)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try (0..<4).reduce(UInt32(0)) { acc, _ in acc << 4 | (try hexDigit()) }
                    if (0xD800..<0xDC00).contains(scalar) {  // a surrogate pair
                        guard position + 1 < bytes.count, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") else {
                            throw error("unpaired surrogate")
                        }
                        position += 2
                        let low = try (0..<4).reduce(UInt32(0)) { acc, _ in acc << 4 | (try hexDigit()) }
                        guard (0xDC00..<0xE000).contains(low) else { throw error("unpaired surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { throw error("invalid code point") }
                    utf8.append(contentsOf: Array(String(Character(unicode)).utf8))
                default: throw error("invalid escape")
                }
            }
            guard let text = String(validating: utf8, as: UTF8.self) else { throw error("invalid UTF-8 in string") }
            return text
        }

        mutating func number() throws -> StrictJSON {
            let start = position
            var isInteger = true
            if position < bytes.count, bytes[position] == UInt8(ascii: "-") { position += 1 }
            while position < bytes.count {
                let c = bytes[position]
                if (0x30...0x39).contains(c) { position += 1; continue }
                if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") || c == UInt8(ascii: "+")
                    || (c == UInt8(ascii: "-") && position > start) {
                    isInteger = false
                    position += 1
                    continue
                }
                break
            }
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
            guard !text.isEmpty, text != "-" else { throw ParseError(offset: start, reason: "invalid value") }
            if isInteger, let value = Int(text) { return .integer(value) }
            guard let value = Double(text), value.isFinite else { throw ParseError(offset: start, reason: "invalid number \(text)") }
            return .number(value)
        }
    }
}
