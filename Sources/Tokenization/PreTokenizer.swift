/// How text is cut into words before BPE. The regular expressions real checkpoints use
/// (GPT-2's, Llama 3's and Qwen2's) are recognised by their text and run as hand-written
/// scanners over Unicode scalars, which is many times faster than a regex engine; any
/// other pattern falls back to Swift's `Regex`.
enum SplitPattern: Sendable {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// Llama 3 (`\p{N}{1,3}`) and Qwen2 (`\p{N}`): case-insensitive contractions, one
    /// optional non-letter before letters, newline-aware whitespace.
    case llama3(maximumDigits: Int)
    /// Any other pattern, through Swift's Regex (slow but correct). The regex text is kept so
    /// the value stays Sendable; it is compiled once per call site.
    case regex(String)

    static let gpt2Text = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Text = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Text = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    init(regex: String) {
        switch regex {
        case Self.gpt2Text: self = .gpt2
        case Self.llama3Text: self = .llama3(maximumDigits: 3)
        case Self.qwen2Text: self = .llama3(maximumDigits: 1)
        default: self = .regex(regex)
        }
    }

    /// Cuts `scalars` into consecutive ranges covering all of it.
    func split(_ scalars: [Unicode.Scalar]) -> [Range<Int>] {
        switch self {
        case .gpt2: return ScalarScanner(scalars).gpt2()
        case let .llama3(digits): return ScalarScanner(scalars).llama3(maximumDigits: digits)
        case let .regex(text): return Self.regexSplit(scalars, pattern: text)
        }
    }

    private static func regexSplit(_ scalars: [Unicode.Scalar], pattern: String) -> [Range<Int>] {
        var text = String.UnicodeScalarView()
        text.append(contentsOf: scalars)
        let string = String(text)
        guard let regex = try? Regex(pattern) else { return scalars.isEmpty ? [] : [0..<scalars.count] }
        var ranges: [Range<Int>] = []
        var last = string.unicodeScalars.startIndex
        func offset(_ index: String.Index) -> Int { string.unicodeScalars.distance(from: string.unicodeScalars.startIndex, to: index) }
        for match in string.matches(of: regex) where !match.range.isEmpty {
            if match.range.lowerBound > last { ranges.append(offset(last)..<offset(match.range.lowerBound)) }
            ranges.append(offset(match.range.lowerBound)..<offset(match.range.upperBound))
            last = match.range.upperBound
        }
        if last < string.unicodeScalars.endIndex { ranges.append(offset(last)..<scalars.count) }
        return ranges
    }
}

/// Unicode classes as the regexes mean them: \p{L}, \p{N} and \s (White_Space).
@inline(__always) func isLetter(_ s: Unicode.Scalar) -> Bool {
    if s.value < 0x80 { return (s.value | 0x20) >= 0x61 && (s.value | 0x20) <= 0x7A }
    switch s.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
    default: return false
    }
}

@inline(__always) func isNumber(_ s: Unicode.Scalar) -> Bool {
    if s.value < 0x80 { return s.value >= 0x30 && s.value <= 0x39 }
    switch s.properties.generalCategory {
    case .decimalNumber, .letterNumber, .otherNumber: return true
    default: return false
    }
}

@inline(__always) func isSpace(_ s: Unicode.Scalar) -> Bool {
    if s.value < 0x80 { return s.value == 0x20 || (s.value >= 0x09 && s.value <= 0x0D) }
    return s.properties.isWhitespace
}

@inline(__always) func isNewline(_ s: Unicode.Scalar) -> Bool { s == "\n" || s == "\r" }

/// The scanners for the known split patterns. Each method mirrors its regex alternative by
/// alternative, in order, as a backtracking regex engine would try them.
struct ScalarScanner {
    let s: [Unicode.Scalar]
    init(_ scalars: [Unicode.Scalar]) { s = scalars }

    func isOther(_ c: Unicode.Scalar) -> Bool { !isSpace(c) && !isLetter(c) && !isNumber(c) }

    /// Length of a contraction ('s 't 're 've 'm 'll 'd) at i, 0 if none.
    func contraction(at i: Int, caseInsensitive: Bool) -> Int {
        guard s[i] == "'", i + 1 < s.count else { return 0 }
        func letter(_ k: Int) -> UInt32? {
            guard k < s.count else { return nil }
            let v = s[k].value
            return caseInsensitive && v >= 0x41 && v <= 0x5A ? v | 0x20 : v
        }
        let a = letter(i + 1), b = letter(i + 2)
        switch (a, b) {
        case (0x72, 0x65), (0x76, 0x65), (0x6C, 0x6C): return 3  // re ve ll
        default: break
        }
        switch a {
        case 0x73, 0x74, 0x6D, 0x64: return 2  // s t m d
        default: return 0
        }
    }

    /// End of the run of scalars satisfying `predicate` from i.
    func run(from i: Int, _ predicate: (Unicode.Scalar) -> Bool) -> Int {
        var j = i
        while j < s.count, predicate(s[j]) { j += 1 }
        return j
    }

    /// `\s+(?!\S)|\s+` at a whitespace scalar: the whole run at the end of the text,
    /// otherwise the run less its last scalar (left for the next token), or one scalar.
    func whitespace(at i: Int) -> Int {
        let end = run(from: i, isSpace)
        if end == s.count || end - i == 1 { return end }
        return end - 1
    }

    func gpt2() -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var i = 0
        while i < s.count {
            var end: Int
            let c = contraction(at: i, caseInsensitive: false)
            if c > 0 {
                end = i + c
            } else {
                let start = s[i] == " " && i + 1 < s.count && !isSpace(s[i + 1]) ? i + 1 : i
                let first = s[start]
                if isLetter(first) { end = run(from: start, isLetter) }
                else if isNumber(first) { end = run(from: start, isNumber) }
                else if !isSpace(first) { end = run(from: start, isOther) }
                else { end = whitespace(at: i) }
            }
            ranges.append(i..<end)
            i = end
        }
        return ranges
    }

    func llama3(maximumDigits: Int) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var i = 0
        while i < s.count {
            ranges.append(i..<llama3Token(at: i, maximumDigits: maximumDigits))
            i = ranges.last!.upperBound
        }
        return ranges
    }

    private func llama3Token(at i: Int, maximumDigits: Int) -> Int {
        let c = contraction(at: i, caseInsensitive: true)
        if c > 0 { return i + c }
        let first = s[i]
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if isLetter(first) { return run(from: i, isLetter) }
        if !isNewline(first), !isNumber(first), i + 1 < s.count, isLetter(s[i + 1]) { return run(from: i + 1, isLetter) }
        // \p{N}{1,n}
        if isNumber(first) {
            var j = i
            while j < s.count, j - i < maximumDigits, isNumber(s[j]) { j += 1 }
            return j
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        let start = first == " " && i + 1 < s.count && isOther(s[i + 1]) ? i + 1 : i
        if isOther(s[start]) { return run(from: run(from: start, isOther), isNewline) }
        // \s*[\r\n]+ : up to the last newline of the whitespace run (and newlines after it)
        let end = run(from: i, isSpace)
        if let lastNewline = (i..<end).last(where: { isNewline(s[$0]) }) { return lastNewline + 1 }
        // \s+(?!\S)|\s+
        return whitespace(at: i)
    }
}
