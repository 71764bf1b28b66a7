import TensorCore

extension Tokenizer {
    /// The vocabulary embedded in a GGUF file: `tokenizer.ggml.model` `gpt2` (byte-level
    /// BPE with merges; the split pattern from `tokenizer.ggml.pre`) or `llama`
    /// (SentencePiece BPE whose merge order comes from the token scores, as llama.cpp does).
    public convenience init(gguf: GGUFFile) throws {
        let path = gguf.path
        func invalid(_ detail: String) -> TokenizerError { .invalid(path: path, detail: detail) }
        guard let model = gguf["tokenizer.ggml.model"]?.string else { throw invalid("no tokenizer.ggml.model") }
        guard let tokenValues = gguf["tokenizer.ggml.tokens"]?.array else { throw invalid("no tokenizer.ggml.tokens") }
        let tokens = try tokenValues.map { value -> String in
            guard let text = value.string else { throw invalid("tokenizer.ggml.tokens holds a non-string") }
            return text
        }
        guard !tokens.isEmpty, tokens.count < 1 << 24 else { throw invalid("\(tokens.count) tokens") }
        // token_type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
        let types = try (gguf["tokenizer.ggml.token_type"]?.array ?? []).map { value -> Int in
            guard let type = value.integer else { throw invalid("tokenizer.ggml.token_type holds a non-integer") }
            return type
        }
        guard types.isEmpty || types.count == tokens.count else {
            throw invalid("\(types.count) token types for \(tokens.count) tokens")
        }
        func type(_ id: Int) -> Int { types.isEmpty ? 1 : types[id] }
        var vocabulary: [String: Int32] = [:]
        for (id, token) in tokens.enumerated() where vocabulary[token] == nil { vocabulary[token] = Int32(id) }
        func tokenID(_ key: String) throws -> Int? {
            guard let value = gguf[key] else { return nil }
            guard let id = value.integer, id >= 0, id < tokens.count else { throw invalid("\(key) is not a token id") }
            return id
        }

        // Control and unknown tokens are special (matched in text, skippable on decode),
        // user-defined ones are matched in text too, as llama.cpp does.
        let special = tokens.indices.map { type($0) == 3 || type($0) == 2 }
        let added = tokens.indices.filter { [2, 3, 4].contains(type($0)) }.map {
            AddedTokenMatcher.Token(scalars: Array(tokens[$0].unicodeScalars), id: $0, leftStrip: false, rightStrip: false, singleWord: false)
        }
        let unknownID = tokens.indices.first { type($0) == 2 }.map { Int32($0) }
        var merges: [UInt64: BytePairEncoder.Merge] = [:]
        let preTokenizer: [PreTokenizerStep]
        let bytes: [[UInt8]], firstBytes: [[UInt8]], strip: Int
        switch model {
        case "gpt2":
            guard let mergeValues = gguf["tokenizer.ggml.merges"]?.array else { throw invalid("no tokenizer.ggml.merges") }
            for (rank, value) in mergeValues.enumerated() {
                let pair = (value.string ?? "").split(separator: " ", omittingEmptySubsequences: false).map(String.init)
                guard pair.count == 2, let a = vocabulary[pair[0]], let b = vocabulary[pair[1]], let result = vocabulary[pair[0] + pair[1]] else {
                    throw invalid("merge \(rank) names tokens missing from the vocabulary")
                }
                let key = BytePairEncoder.key(a, b)
                if merges[key] == nil { merges[key] = .init(rank: Int32(rank), result: result) }
            }
            let pattern: SplitPattern
            switch gguf["tokenizer.ggml.pre"]?.string ?? "default" {
            case "llama3", "llama-bpe", "llama-v3", "smaug-bpe": pattern = .llama3(maximumDigits: 3)
            case "qwen2": pattern = .llama3(maximumDigits: 1)
            case "default", "gpt-2", "gpt2": pattern = .gpt2
            case let other: throw TokenizerError.unsupported(path: path, component: "tokenizer.ggml.pre \(other)")
            }
            preTokenizer = [.split(pattern), .byteLevel(addPrefixSpace: false, split: nil)]
            bytes = tokens.map(ByteLevelAlphabet.decode)
            firstBytes = bytes
            strip = 0
        case "llama":
            guard let scoreValues = gguf["tokenizer.ggml.scores"]?.array, scoreValues.count == tokens.count else {
                throw invalid("tokenizer.ggml.scores missing or of the wrong length")
            }
            // NaN would never find its own rank (NaN != NaN): non-finite scores rank last.
            let scores = scoreValues.map { value -> Double in
                guard let score = value.number, score.isFinite else { return -.infinity }
                return score
            }
            // Rank = position among distinct scores, highest first: a pair merges when the
            // token it forms has the best score; equal scores merge leftmost first.
            let distinct = Array(Set(scores)).sorted(by: >)
            let rankOf = Dictionary(uniqueKeysWithValues: distinct.enumerated().map { ($0.element, Int32($0.offset)) })
            for (id, token) in tokens.enumerated() where type(id) == 1 {
                let characters = Array(token)
                guard characters.count > 1 else { continue }
                for cut in 1..<characters.count {
                    guard let a = vocabulary[String(characters[..<cut])], let b = vocabulary[String(characters[cut...])] else { continue }
                    let key = BytePairEncoder.key(a, b)
                    let merge = BytePairEncoder.Merge(rank: rankOf[scores[id]] ?? Int32.max, result: Int32(id))
                    if let existing = merges[key], existing.rank <= merge.rank { continue }
                    merges[key] = merge
                }
            }
            let addSpacePrefix = gguf["tokenizer.ggml.add_space_prefix"]?.bool ?? true
            preTokenizer = [.metaspace(replacement: "▁", prepend: addSpacePrefix ? .first : .never, split: false)]
            bytes = tokens.enumerated().map { id, token in
                if type(id) == 6, let byte = Self.fallbackByte(token) { return [byte] }
                return Array(token.replacingOccurrences(of: "▁", with: " ").utf8)
            }
            firstBytes = bytes
            strip = addSpacePrefix ? 1 : 0
        default:
            throw TokenizerError.unsupported(path: path, component: "tokenizer.ggml.model \(model)")
        }
        let bpe = BPEModel(vocabulary: vocabulary, encoder: BytePairEncoder(merges: merges),
                           byteFallback: model == "llama", unknownID: unknownID, fuseUnknown: false, ignoreMerges: false)
        let bos = try tokenID("tokenizer.ggml.bos_token_id")
        let eos = try tokenID("tokenizer.ggml.eos_token_id")
        let addBOS = gguf["tokenizer.ggml.add_bos_token"]?.bool ?? (model == "llama")
        let addEOS = gguf["tokenizer.ggml.add_eos_token"]?.bool ?? false
        self.init(tokens: tokens, special: special, tokenBytes: bytes, firstTokenBytes: firstBytes, stripLeadingSpaces: strip,
                  normalizer: [], preTokenizer: preTokenizer, model: bpe, addedTokens: AddedTokenMatcher(added),
                  prefixIDs: addBOS ? bos.map { [$0] } ?? [] : [], suffixIDs: addEOS ? eos.map { [$0] } ?? [] : [],
                  bosTokenID: bos, eosTokenIDs: eos.map { [$0] } ?? [], chatTemplate: gguf["tokenizer.chat_template"]?.string)
    }
}
