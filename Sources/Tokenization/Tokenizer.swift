import Foundation
import TensorCore

/// Why a tokenizer could not be loaded or used.
public enum TokenizerError: Error, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    /// A component (model type, normalizer, pre-tokenizer, decoder) Quill does not implement.
    case unsupported(path: String, component: String)
    case invalid(path: String, detail: String)
    /// A token id outside the vocabulary was given to decode.
    case tokenOutOfRange(id: Int, vocabularySize: Int)

    /// A one-line description for logs and error messages.
    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "\(path): cannot read tokenizer: \(reason)"
        case let .unsupported(path, component): return "\(path): unsupported tokenizer component: \(component)"
        case let .invalid(path, detail): return "\(path): invalid tokenizer: \(detail)"
        case let .tokenOutOfRange(id, size): return "token id \(id) is outside the vocabulary of \(size) tokens"
        }
    }
}

/// Text → token ids → text, for the two BPE families: byte-level (GPT-2, Qwen, Llama 3)
/// and SentencePiece-style (Llama 2, Mistral), from a `tokenizer.json` or a GGUF vocabulary.
/// Immutable and thread-safe.
public final class Tokenizer: Sendable {
    /// The token strings by id ("" for ids the vocabulary skips).
    public let tokens: [String]
    /// Which ids are special tokens (skipped by `decode(_:skipSpecialTokens: true)`).
    let special: [Bool]
    /// The bytes each token contributes to decoded text, and for the first token of a text.
    let tokenBytes: [[UInt8]]
    let firstTokenBytes: [[UInt8]]
    /// Leading spaces removed from the start of decoded text (the Strip decoder).
    let stripLeadingSpaces: Int
    let vocabularyIndex: [String: Int]
    let normalizer: [NormalizerStep]
    let preTokenizer: [PreTokenizerStep]
    let model: BPEModel
    let addedTokens: AddedTokenMatcher
    /// Ids added around the text when special tokens are requested.
    public let prefixIDs: [Int]
    /// Ids appended after the text when special tokens are requested.
    public let suffixIDs: [Int]
    /// The beginning-of-sequence token, if the tokenizer defines one.
    public let bosTokenID: Int?
    /// Every id that ends a sequence (the tokenizer's EOS; the model loader adds the
    /// config's and generation config's).
    public let eosTokenIDs: [Int]
    /// The Jinja chat template, if the tokenizer ships one.
    public let chatTemplate: String?

    init(tokens: [String], special: [Bool], tokenBytes: [[UInt8]], firstTokenBytes: [[UInt8]], stripLeadingSpaces: Int,
         normalizer: [NormalizerStep], preTokenizer: [PreTokenizerStep], model: BPEModel, addedTokens: AddedTokenMatcher,
         prefixIDs: [Int], suffixIDs: [Int], bosTokenID: Int?, eosTokenIDs: [Int], chatTemplate: String?) {
        self.tokens = tokens
        self.special = special
        self.tokenBytes = tokenBytes
        self.firstTokenBytes = firstTokenBytes
        self.stripLeadingSpaces = stripLeadingSpaces
        var index: [String: Int] = [:]
        for (id, token) in tokens.enumerated() where !token.isEmpty && index[token] == nil { index[token] = id }
        self.vocabularyIndex = index
        self.normalizer = normalizer
        self.preTokenizer = preTokenizer
        self.model = model
        self.addedTokens = addedTokens
        self.prefixIDs = prefixIDs
        self.suffixIDs = suffixIDs
        self.bosTokenID = bosTokenID
        self.eosTokenIDs = eosTokenIDs
        self.chatTemplate = chatTemplate
    }

    /// Number of ids (one more than the largest).
    public var vocabularySize: Int { tokens.count }

    /// The id of a token string.
    public func id(of token: String) -> Int? { vocabularyIndex[token] }

    /// Whether `id` is a special token.
    public func isSpecial(_ id: Int) -> Bool { id >= 0 && id < special.count && special[id] }

    /// Token ids for `text`. With `addSpecialTokens`, the tokenizer's BOS/EOS (or its
    /// post-processor template) are added around them.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = addSpecialTokens ? prefixIDs : []
        var symbols: [Int32] = []
        for segment in addedTokens.segments(of: text) {
            switch segment {
            case let .token(id):
                ids.append(id)
            case let .text(piece, atStart):
                var normalized = String(piece)
                for step in normalizer { normalized = step.apply(normalized) }
                var words = [normalized]
                for step in preTokenizer { words = step.apply(words, atStart: atStart) }
                for word in words where !word.isEmpty {
                    model.encode(word: word[...].unicodeScalars, into: &ids, symbols: &symbols)
                }
            }
        }
        if addSpecialTokens { ids += suffixIDs }
        return ids
    }

    /// The text of `ids`. Throws for ids outside the vocabulary.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) throws -> String {
        var detokenizer = StreamingDetokenizer(tokenizer: self, skipSpecialTokens: skipSpecialTokens)
        var text = ""
        for id in ids { text += try detokenizer.append(id) }
        return text + detokenizer.finish()
    }

    /// A detokenizer that turns ids into text one at a time, never emitting an incomplete
    /// UTF-8 sequence.
    public func makeStreamingDetokenizer(skipSpecialTokens: Bool = false) -> StreamingDetokenizer {
        StreamingDetokenizer(tokenizer: self, skipSpecialTokens: skipSpecialTokens)
    }
}

/// Turns token ids into text incrementally: each `append` costs O(that token's bytes), and
/// text is only emitted once its UTF-8 sequences are complete (an emoji split over byte
/// tokens appears when its last byte arrives).
public struct StreamingDetokenizer: Sendable {
    let tokenizer: Tokenizer
    let skipSpecialTokens: Bool
    private var pending: [UInt8] = []
    private var atStart = true
    private var leadingSpacesToStrip: Int

    init(tokenizer: Tokenizer, skipSpecialTokens: Bool) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
        self.leadingSpacesToStrip = tokenizer.stripLeadingSpaces
    }

    /// Adds one token; returns the text that became complete (possibly empty).
    public mutating func append(_ id: Int) throws -> String {
        guard id >= 0, id < tokenizer.tokens.count else {
            throw TokenizerError.tokenOutOfRange(id: id, vocabularySize: tokenizer.tokens.count)
        }
        if skipSpecialTokens && tokenizer.special[id] { return "" }
        var bytes = atStart ? tokenizer.firstTokenBytes[id] : tokenizer.tokenBytes[id]
        atStart = false
        while leadingSpacesToStrip > 0, pending.isEmpty, let first = bytes.first {
            if first == 0x20 { bytes.removeFirst(); leadingSpacesToStrip -= 1 } else { leadingSpacesToStrip = 0 }
        }
        pending += bytes
        return takeComplete()
    }

    /// Whatever remains, with incomplete sequences replaced by U+FFFD.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Emits the longest prefix of `pending` that does not end inside a UTF-8 sequence.
    private mutating func takeComplete() -> String {
        var end = pending.count
        // Look back at most 3 bytes for the lead byte of a sequence that is still open.
        var back = 1
        while back <= min(4, pending.count) {
            let byte = pending[pending.count - back]
            if byte & 0xC0 != 0x80 {  // a lead byte (or ASCII)
                let length = byte < 0x80 ? 1 : byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
                if length > back { end = pending.count - back }
                break
            }
            back += 1
        }
        guard end > 0 else { return "" }
        let text = String(decoding: pending[0..<end], as: UTF8.self)
        pending.removeFirst(end)
        return text
    }
}
