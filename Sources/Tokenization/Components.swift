import Foundation

/// GPT-2's reversible map from bytes to printable characters (space → Ġ, newline → Ċ):
/// byte-level vocabularies are written in it.
enum ByteLevelAlphabet {
    static let scalars: [Unicode.Scalar] = {
        var printable = Array(0x21...0x7E) + Array(0xA1...0xAC) + Array(0xAE...0xFF)
        var mapped = printable
        var extra = 0
        for byte in 0..<256 where !printable.contains(byte) {
            printable.append(byte)
            mapped.append(256 + extra)
            extra += 1
        }
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        for (byte, scalar) in zip(printable, mapped) { table[byte] = Unicode.Scalar(UInt32(scalar))! }
        return table
    }()

    static let bytes: [UInt32: UInt8] = {
        var inverse: [UInt32: UInt8] = [:]
        for (byte, scalar) in scalars.enumerated() { inverse[scalar.value] = UInt8(byte) }
        return inverse
    }()

    /// `text`'s UTF-8 bytes written in the alphabet.
    static func encode(_ text: Substring) -> String {
        var view = String.UnicodeScalarView()
        for byte in text.utf8 { view.append(scalars[Int(byte)]) }
        return String(view)
    }

    /// A token's bytes: each scalar mapped back; a token with a scalar outside the alphabet
    /// (an added token like "<|im_end|>" is inside it, "a b" is not) is taken as UTF-8,
    /// as Hugging Face's ByteLevel decoder does.
    static func decode(_ token: String) -> [UInt8] {
        var result: [UInt8] = []
        for scalar in token.unicodeScalars {
            guard let byte = bytes[scalar.value] else { return Array(token.utf8) }
            result.append(byte)
        }
        return result
    }
}

/// A normalizer step, applied to each text segment before pre-tokenization.
enum NormalizerStep: Sendable {
    case prepend(String)
    case replace(String, String)
    case nfc, nfkc, nfd, nfkd

    func apply(_ text: String) -> String {
        switch self {
        case let .prepend(prefix): return text.isEmpty ? text : prefix + text
        case let .replace(pattern, content): return text.replacingOccurrences(of: pattern, with: content)
        case .nfc: return text.precomposedStringWithCanonicalMapping
        case .nfkc: return text.precomposedStringWithCompatibilityMapping
        case .nfd: return text.decomposedStringWithCanonicalMapping
        case .nfkd: return text.decomposedStringWithCompatibilityMapping
        }
    }
}

/// When Metaspace puts ▁ before the text.
enum PrependScheme: Sendable {
    case always, first, never
}

/// A pre-tokenizer step: cuts words into smaller words (and maps them to the model's alphabet).
enum PreTokenizerStep: Sendable {
    /// GPT-2 style: optional leading space, optional split by the GPT-2 pattern, then every
    /// word written in the byte-level alphabet.
    case byteLevel(addPrefixSpace: Bool, split: SplitPattern?)
    /// A regex split whose matches and gaps both become words ("Isolated").
    case split(SplitPattern)
    /// SentencePiece style: spaces become `replacement`, ▁ prepended per `prepend`, and
    /// (with `split`) a new word starts at every ▁.
    case metaspace(replacement: Character, prepend: PrependScheme, split: Bool)

    /// `atStart`: the segment begins at offset 0 of the input (no added token before it),
    /// which Metaspace's `first` scheme requires.
    func apply(_ words: [String], atStart: Bool) -> [String] {
        var output: [String] = []
        output.reserveCapacity(words.count)
        for (index, word) in words.enumerated() {
            switch self {
            case let .byteLevel(addPrefixSpace, split):
                let text = addPrefixSpace && !word.hasPrefix(" ") ? " " + word : word
                if let split {
                    let scalars = Array(text.unicodeScalars)
                    for range in split.split(scalars) {
                        output.append(ByteLevelAlphabet.encode(Substring(String(String.UnicodeScalarView(scalars[range])))))
                    }
                } else {
                    output.append(ByteLevelAlphabet.encode(text[...]))
                }
            case let .split(pattern):
                let scalars = Array(word.unicodeScalars)
                for range in pattern.split(scalars) { output.append(String(String.UnicodeScalarView(scalars[range]))) }
            case let .metaspace(replacement, prepend, split):
                var text = word.replacingOccurrences(of: " ", with: String(replacement))
                let prependHere = prepend == .always || (prepend == .first && atStart && index == 0)
                if prependHere && !text.hasPrefix(String(replacement)) { text = String(replacement) + text }
                guard split else { output.append(text); continue }
                var current = ""
                for character in text {
                    if character == replacement && !current.isEmpty {
                        output.append(current)
                        current = ""
                    }
                    current.append(character)
                }
                if !current.isEmpty { output.append(current) }
            }
        }
        return output
    }
}

/// Finds added tokens (special or not) in raw text before anything else runs, longest
/// match first, leftmost first.
struct AddedTokenMatcher: Sendable {
    struct Token: Sendable {
        let scalars: [Unicode.Scalar]
        let id: Int
        /// Swallow whitespace on the left / right of the match.
        let leftStrip: Bool
        let rightStrip: Bool
        /// Only match when not inside a word.
        let singleWord: Bool
    }

    enum Segment {
        case text(Substring, atStart: Bool)
        case token(Int)
    }

    /// Candidates by first scalar, longest first.
    let byFirstScalar: [UInt32: [Token]]

    init(_ tokens: [Token]) {
        var map: [UInt32: [Token]] = [:]
        for token in tokens where !token.scalars.isEmpty { map[token.scalars[0].value, default: []].append(token) }
        byFirstScalar = map.mapValues { $0.sorted { $0.scalars.count > $1.scalars.count } }
    }

    func segments(of text: String) -> [Segment] {
        guard !byFirstScalar.isEmpty else { return text.isEmpty ? [] : [.text(text[...], atStart: true)] }
        let scalars = Array(text.unicodeScalars)
        // String indices of every scalar position, so cutting a piece is O(1).
        var indices = Array(text.unicodeScalars.indices)
        indices.append(text.endIndex)
        var segments: [Segment] = []
        var textStart = 0, i = 0
        func piece(_ a: Int, _ b: Int) -> Substring { text[indices[a]..<indices[b]] }
        while i < scalars.count {
            guard let candidates = byFirstScalar[scalars[i].value],
                  let token = candidates.first(where: { matches($0, scalars, at: i) }) else {
                i += 1
                continue
            }
            var before = i, after = i + token.scalars.count
            if token.leftStrip { while before > textStart, isSpace(scalars[before - 1]) { before -= 1 } }
            if token.rightStrip { while after < scalars.count, isSpace(scalars[after]) { after += 1 } }
            if before > textStart { segments.append(.text(piece(textStart, before), atStart: textStart == 0)) }
            segments.append(.token(token.id))
            textStart = after
            i = after
        }
        if textStart < scalars.count { segments.append(.text(piece(textStart, scalars.count), atStart: textStart == 0)) }
        return segments
    }

    private func matches(_ token: Token, _ scalars: [Unicode.Scalar], at i: Int) -> Bool {
        guard i + token.scalars.count <= scalars.count else { return false }
        for k in 0..<token.scalars.count where scalars[i + k] != token.scalars[k] { return false }
        if token.singleWord {
            let end = i + token.scalars.count
            func wordy(_ s: Unicode.Scalar) -> Bool { isLetter(s) || isNumber(s) || s == "_" }
            if i > 0, wordy(scalars[i - 1]) { return false }
            if end < scalars.count, wordy(scalars[end]) { return false }
        }
        return true
    }
}
