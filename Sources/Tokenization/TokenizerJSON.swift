import Foundation
import TensorCore

extension Tokenizer {
    /// Loads `tokenizer.json` (and `tokenizer_config.json` when present) from a folder.
    ///
    /// The chat template comes from tokenizer_config.json's `chat_template` or, as
    /// transformers 4.43 and later save it, from a `chat_template.jinja` file beside it.
    public convenience init(directory: URL) throws {
        let path = directory.appendingPathComponent("tokenizer.json").path
        let root = try Self.readJSON(path)
        let configPath = directory.appendingPathComponent("tokenizer_config.json").path
        var config = FileManager.default.fileExists(atPath: configPath) ? try Self.readJSON(configPath) : .object([])
        let templatePath = directory.appendingPathComponent("chat_template.jinja").path
        if config["chat_template"] == nil, case let .object(members) = config,
           FileManager.default.fileExists(atPath: templatePath) {
            let template: String
            do {
                let file = try MappedFile(path: templatePath)
                guard let text = String(validating: file.bytes, as: UTF8.self) else {
                    throw TokenizerError.unreadable(path: templatePath, reason: "not valid UTF-8")
                }
                template = text
            } catch let error as TokenizerError { throw error } catch {
                throw TokenizerError.unreadable(path: templatePath, reason: "\(error)")
            }
            config = .object(members + [("chat_template", .string(template))])
        }
        try self.init(tokenizerJSON: root, config: config, path: path)
    }

    /// Builds a tokenizer from the bytes of a tokenizer.json (and optionally a
    /// tokenizer_config.json); `name` stands for the file in errors.
    public convenience init(tokenizerJSON: UnsafeRawBufferPointer, config: UnsafeRawBufferPointer? = nil, name: String) throws {
        func parse(_ bytes: UnsafeRawBufferPointer) throws -> StrictJSON {
            do { return try StrictJSON.parse(bytes) } catch {
                throw TokenizerError.unreadable(path: name, reason: "invalid JSON: \(error)")
            }
        }
        try self.init(tokenizerJSON: try parse(tokenizerJSON), config: try config.map(parse) ?? .object([]), path: name)
    }

    static func readJSON(_ path: String) throws -> StrictJSON {
        let file: MappedFile
        do { file = try MappedFile(path: path) } catch {
            throw TokenizerError.unreadable(path: path, reason: "\(error)")
        }
        do { return try StrictJSON.parse(file.bytes) } catch {
            throw TokenizerError.unreadable(path: path, reason: "invalid JSON: \(error)")
        }
    }

    convenience init(tokenizerJSON root: StrictJSON, config: StrictJSON, path: String) throws {
        func invalid(_ detail: String) -> TokenizerError { .invalid(path: path, detail: detail) }
        guard case .object = root, let model = root["model"], case .object = model else { throw invalid("no model object") }
        let modelType = model["type"]?.stringValue ?? "BPE"
        guard modelType == "BPE" else { throw TokenizerError.unsupported(path: path, component: "model type \(modelType)") }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let value = model[key], value != .null, value != .string("") {
                throw TokenizerError.unsupported(path: path, component: "BPE \(key)")
            }
        }
        // Vocabulary and added tokens.
        guard case let .object(vocabularyEntries)? = model["vocab"] else { throw invalid("model.vocab is not an object") }
        var vocabulary: [String: Int32] = [:]
        var maximumID = -1
        for (token, value) in vocabularyEntries {
            guard case let .integer(id) = value, id >= 0, id < 1 << 24 else { throw invalid("vocab id of '\(token)' is not in 0..<16777216") }
            vocabulary[token] = Int32(id)
            maximumID = max(maximumID, id)
        }
        var added: [(content: String, id: Int, special: Bool, token: AddedTokenMatcher.Token)] = []
        if case let .array(entries)? = root["added_tokens"] {
            for entry in entries {
                guard case let .integer(id)? = entry["id"], id >= 0, id < 1 << 24, let content = entry["content"]?.stringValue else {
                    throw invalid("added token without an id in range and a content string")
                }
                let token = AddedTokenMatcher.Token(scalars: Array(content.unicodeScalars), id: id,
                                                    leftStrip: entry["lstrip"]?.boolValue ?? false,
                                                    rightStrip: entry["rstrip"]?.boolValue ?? false,
                                                    singleWord: entry["single_word"]?.boolValue ?? false)
                added.append((content, id, entry["special"]?.boolValue ?? false, token))
                maximumID = max(maximumID, id)
            }
        }
        var tokens = [String](repeating: "", count: maximumID + 1)
        for (token, id) in vocabulary { tokens[Int(id)] = token }
        var special = [Bool](repeating: false, count: maximumID + 1)
        for entry in added {
            tokens[entry.id] = entry.content
            special[entry.id] = entry.special
        }
        // Merges: "a b" strings (older files) or [a, b] pairs.
        var merges: [UInt64: BytePairEncoder.Merge] = [:]
        if case let .array(list)? = model["merges"] {
            for (rank, item) in list.enumerated() {
                let pair: [String]
                switch item {
                case let .string(text): pair = text.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
                case let .array(parts): pair = parts.compactMap(\.stringValue)
                default: pair = []
                }
                guard pair.count == 2, let a = vocabulary[pair[0]], let b = vocabulary[pair[1]],
                      let result = vocabulary[pair[0] + pair[1]] else {
                    throw invalid("merge \(rank) (\(item)) names tokens missing from the vocabulary")
                }
                let key = BytePairEncoder.key(a, b)
                if merges[key] == nil { merges[key] = .init(rank: Int32(rank), result: result) }
            }
        }
        let unknownToken = model["unk_token"]?.stringValue
        let bpe = BPEModel(vocabulary: vocabulary, encoder: BytePairEncoder(merges: merges),
                           byteFallback: model["byte_fallback"]?.boolValue ?? false,
                           unknownID: unknownToken.flatMap { vocabulary[$0] },
                           fuseUnknown: model["fuse_unk"]?.boolValue ?? false,
                           ignoreMerges: model["ignore_merges"]?.boolValue ?? false)

        let normalizer = try Self.normalizerSteps(root["normalizer"] ?? .null, path: path)
        let preTokenizer = try Self.preTokenizerSteps(root["pre_tokenizer"] ?? .null, path: path)
        let decoding = try Self.decoding(root["decoder"] ?? .null, tokens: tokens, path: path)

        // Special tokens around the text: tokenizer_config's add_bos_token/add_eos_token
        // when it sets them (what transformers' Llama tokenizers do), else the template.
        func configToken(_ key: String) -> String? {
            if let text = config[key]?.stringValue { return text }
            return config[key]?["content"]?.stringValue
        }
        let index = Dictionary(tokens.enumerated().filter { !$0.element.isEmpty }.map { ($0.element, $0.offset) }, uniquingKeysWith: { a, _ in a })
        let bos = configToken("bos_token").flatMap { index[$0] }
        let eos = configToken("eos_token").flatMap { index[$0] }
        var (prefix, suffix) = try Self.template(root["post_processor"] ?? .null, path: path)
        if config["add_bos_token"] != nil || config["add_eos_token"] != nil {
            prefix = (config["add_bos_token"]?.boolValue ?? false) ? bos.map { [$0] } ?? [] : []
            suffix = (config["add_eos_token"]?.boolValue ?? false) ? eos.map { [$0] } ?? [] : []
        }
        var template = config["chat_template"]?.stringValue
        if case let .array(named)? = config["chat_template"] {
            template = named.first { $0["name"]?.stringValue == "default" }?["template"]?.stringValue
        }
        self.init(tokens: tokens, special: special, tokenBytes: decoding.bytes, firstTokenBytes: decoding.firstBytes,
                  stripLeadingSpaces: decoding.strip, normalizer: normalizer, preTokenizer: preTokenizer, model: bpe,
                  addedTokens: AddedTokenMatcher(added.map(\.token)), prefixIDs: prefix, suffixIDs: suffix,
                  bosTokenID: bos, eosTokenIDs: eos.map { [$0] } ?? [], chatTemplate: template)
    }

    static func normalizerSteps(_ json: StrictJSON, path: String) throws -> [NormalizerStep] {
        guard json != .null else { return [] }
        let type = json["type"]?.stringValue ?? ""
        switch type {
        case "Sequence":
            guard case let .array(items)? = json["normalizers"] else { return [] }
            return try items.flatMap { try normalizerSteps($0, path: path) }
        case "Prepend": return [.prepend(json["prepend"]?.stringValue ?? "")]
        case "Replace":
            guard let pattern = json["pattern"]?["String"]?.stringValue else {
                throw TokenizerError.unsupported(path: path, component: "normalizer Replace with a regex pattern")
            }
            return [.replace(pattern, json["content"]?.stringValue ?? "")]
        case "NFC": return [.nfc]
        case "NFKC": return [.nfkc]
        case "NFD": return [.nfd]
        case "NFKD": return [.nfkd]
        default: throw TokenizerError.unsupported(path: path, component: "normalizer \(type)")
        }
    }

    static func preTokenizerSteps(_ json: StrictJSON, path: String) throws -> [PreTokenizerStep] {
        guard json != .null else { return [] }
        let type = json["type"]?.stringValue ?? ""
        switch type {
        case "Sequence":
            guard case let .array(items)? = json["pretokenizers"] else { return [] }
            return try items.flatMap { try preTokenizerSteps($0, path: path) }
        case "ByteLevel":
            let useRegex = json["use_regex"]?.boolValue ?? true
            return [.byteLevel(addPrefixSpace: json["add_prefix_space"]?.boolValue ?? false, split: useRegex ? .gpt2 : nil)]
        case "Split":
            guard let regex = json["pattern"]?["Regex"]?.stringValue, json["behavior"]?.stringValue == "Isolated",
                  json["invert"]?.boolValue != true else {
                throw TokenizerError.unsupported(path: path, component: "pre-tokenizer Split other than an Isolated regex")
            }
            return [.split(SplitPattern(regex: regex))]
        case "Metaspace":
            let replacement = json["replacement"]?.stringValue.flatMap(\.first) ?? "▁"
            let scheme: PrependScheme
            switch json["prepend_scheme"]?.stringValue {
            case "always": scheme = .always
            case "never": scheme = .never
            case "first": scheme = .first
            default: scheme = (json["add_prefix_space"]?.boolValue ?? true) ? .always : .never
            }
            return [.metaspace(replacement: replacement, prepend: scheme, split: json["split"]?.boolValue ?? true)]
        default:
            throw TokenizerError.unsupported(path: path, component: "pre-tokenizer \(type)")
        }
    }

    /// The ids a post-processor puts before and after a single sequence.
    static func template(_ json: StrictJSON, path: String) throws -> ([Int], [Int]) {
        guard json != .null else { return ([], []) }
        switch json["type"]?.stringValue ?? "" {
        case "ByteLevel": return ([], [])
        case "Sequence":
            guard case let .array(items)? = json["processors"] else { return ([], []) }
            var prefix: [Int] = [], suffix: [Int] = []
            for item in items {
                let (p, s) = try template(item, path: path)
                prefix += p
                suffix += s
            }
            return (prefix, suffix)
        case "TemplateProcessing":
            guard case let .array(single)? = json["single"] else { return ([], []) }
            var prefix: [Int] = [], suffix: [Int] = [], seenSequence = false
            for piece in single {
                if piece["Sequence"] != nil { seenSequence = true; continue }
                guard let name = piece["SpecialToken"]?["id"]?.stringValue,
                      case let .array(ids)? = json["special_tokens"]?[name]?["ids"] else {
                    throw TokenizerError.invalid(path: path, detail: "post_processor template names an unknown special token")
                }
                let values = ids.compactMap(\.integerValue)
                if seenSequence { suffix += values } else { prefix += values }
            }
            return (prefix, suffix)
        case let type:
            throw TokenizerError.unsupported(path: path, component: "post-processor \(type)")
        }
    }

    /// The bytes each token decodes to, the first token's (Metaspace drops its ▁), and how
    /// many leading spaces a Strip decoder removes from the whole text.
    static func decoding(_ json: StrictJSON, tokens: [String], path: String) throws -> (bytes: [[UInt8]], firstBytes: [[UInt8]], strip: Int) {
        var replacements: [(String, String)] = []
        var byteFallback = false, byteLevel = false, strip = 0
        var metaspace: (Character, PrependScheme)?
        func collect(_ json: StrictJSON) throws {
            let type = json["type"]?.stringValue ?? ""
            switch type {
            case "Sequence":
                if case let .array(items)? = json["decoders"] { try items.forEach(collect) }
            case "ByteLevel": byteLevel = true
            case "Replace":
                guard let pattern = json["pattern"]?["String"]?.stringValue else {
                    throw TokenizerError.unsupported(path: path, component: "decoder Replace with a regex pattern")
                }
                replacements.append((pattern, json["content"]?.stringValue ?? ""))
            case "ByteFallback": byteFallback = true
            case "Fuse": break
            case "Strip":
                guard json["content"]?.stringValue == " ", (json["stop"]?.integerValue ?? 0) == 0 else {
                    throw TokenizerError.unsupported(path: path, component: "decoder Strip other than leading spaces")
                }
                strip = json["start"]?.integerValue ?? 0
            case "Metaspace":
                let replacement = json["replacement"]?.stringValue.flatMap(\.first) ?? "▁"
                let scheme: PrependScheme = json["prepend_scheme"]?.stringValue == "never" ? .never : .first
                metaspace = (replacement, scheme)
            default:
                throw TokenizerError.unsupported(path: path, component: "decoder \(type.isEmpty ? "none" : type)")
            }
        }
        try collect(json)
        var bytes: [[UInt8]] = [], first: [[UInt8]] = []
        bytes.reserveCapacity(tokens.count)
        first.reserveCapacity(tokens.count)
        for token in tokens {
            if byteLevel {
                let b = ByteLevelAlphabet.decode(token)
                bytes.append(b)
                first.append(b)
                continue
            }
            if byteFallback, let byte = Self.fallbackByte(token) {
                bytes.append([byte])
                first.append([byte])
                continue
            }
            var text = token
            for (pattern, content) in replacements { text = text.replacingOccurrences(of: pattern, with: content) }
            var firstText = text
            if let (replacement, scheme) = metaspace {
                text = text.replacingOccurrences(of: String(replacement), with: " ")
                firstText = scheme == .never ? text : firstText.replacingOccurrences(of: String(replacement), with: "")
            }
            bytes.append(Array(text.utf8))
            first.append(Array(firstText.utf8))
        }
        return (bytes, first, strip)
    }

    /// The byte of a `<0xXX>` token.
    static func fallbackByte(_ token: String) -> UInt8? {
        let utf8 = Array(token.utf8)
        guard utf8.count == 6, token.hasPrefix("<0x"), token.hasSuffix(">") else { return nil }
        return UInt8(String(decoding: utf8[3..<5], as: UTF8.self), radix: 16)
    }
}

extension StrictJSON {
    var stringValue: String? { if case let .string(s) = self { return s } else { return nil } }
    var boolValue: Bool? { if case let .bool(b) = self { return b } else { return nil } }
    var integerValue: Int? { if case let .integer(i) = self { return i } else { return nil } }
}
