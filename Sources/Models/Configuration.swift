import Foundation

/// Why a model configuration was rejected: names the file and the key.
public enum ConfigurationError: Error, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case unknownModelType(path: String, modelType: String)
    case missingKey(path: String, key: String)
    case invalidValue(path: String, key: String, detail: String)

    /// A one-line description for logs and error messages.
    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "\(path): cannot read configuration: \(reason)"
        case let .unknownModelType(path, type):
            return "\(path): model_type '\(type)' is not supported (Quill runs llama, mistral, qwen2, mixtral and mamba)"
        case let .missingKey(path, key): return "\(path): missing required key '\(key)'"
        case let .invalidValue(path, key, detail): return "\(path): '\(key)': \(detail)"
        }
    }
}

/// The configuration of a model Quill can run, read from a Hugging Face `config.json`
/// (keyed by `model_type`) or from a GGUF file's architecture metadata.
public enum ModelConfiguration: Sendable, Equatable {
    /// Llama-family decoder-only transformers: `llama`, `mistral`, `qwen2` and `mixtral`.
    case transformer(TransformerConfiguration)
    /// A Mamba selective state-space model.
    case mamba(MambaConfiguration)

    /// Reads `config.json`.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ConfigurationError.unreadable(path: url.path, reason: error.localizedDescription)
        }
        try self.init(json: data, path: url.path)
    }

    /// Parses a `config.json` document; `path` names it in errors.
    public init(json: Data, path: String) throws {
        let document: StrictJSON
        do {
            document = try json.withUnsafeBytes { try StrictJSON.parse($0) }
        } catch {
            throw ConfigurationError.unreadable(path: path, reason: "invalid JSON: \(error)")
        }
        guard case let .object(members) = document else {
            throw ConfigurationError.unreadable(path: path, reason: "not a JSON object")
        }
        let keys = ConfigurationKeys(members: members, path: path)
        let modelType = try keys.string("model_type")
        switch modelType {
        case "llama", "mistral", "qwen2", "mixtral":
            self = .transformer(try TransformerConfiguration(keys: keys, modelType: modelType))
        case "mamba":
            self = .mamba(try MambaConfiguration(keys: keys))
        default:
            throw ConfigurationError.unknownModelType(path: path, modelType: modelType)
        }
    }

    /// The vocabulary size (rows of the embedding).
    public var vocabularySize: Int {
        switch self {
        case let .transformer(c): return c.vocabularySize
        case let .mamba(c): return c.vocabularySize
        }
    }
}

/// Typed access to a JSON object's keys with errors that name the file and key.
struct ConfigurationKeys {
    let values: [String: StrictJSON]
    let path: String

    init(members: [(String, StrictJSON)], path: String) {
        self.values = Dictionary(members, uniquingKeysWith: { first, _ in first })
        self.path = path
    }

    /// Whether `key` is present and not null.
    func has(_ key: String) -> Bool {
        if let value = values[key], value != .null { return true }
        return false
    }

    func value(_ key: String) throws -> StrictJSON {
        guard let value = values[key], value != .null else { throw ConfigurationError.missingKey(path: path, key: key) }
        return value
    }

    func invalid(_ key: String, _ detail: String) -> ConfigurationError { .invalidValue(path: path, key: key, detail: detail) }

    func string(_ key: String) throws -> String {
        guard case let .string(text) = try value(key) else { throw invalid(key, "expected a string") }
        return text
    }

    /// Largest size or id a configuration may name: products of two such values (e.g. heads ×
    /// head_dim) cannot overflow, and no real model comes near it.
    static let largestInteger = 1 << 30

    func integer(_ key: String, minimum: Int = 1) throws -> Int {
        let raw = try value(key)
        var result: Int?
        if case let .integer(i) = raw { result = i }
        if case let .number(d) = raw, d.rounded() == d, let i = Int(exactly: d) { result = i }  // e.g. 4096.0
        guard let integer = result, integer >= minimum, integer <= Self.largestInteger else {
            throw invalid(key, "expected an integer from \(minimum) to \(Self.largestInteger)")
        }
        return integer
    }

    func integer(_ key: String, default fallback: Int, minimum: Int = 1) throws -> Int {
        has(key) ? try integer(key, minimum: minimum) : fallback
    }

    func number(_ key: String) throws -> Double {
        switch try value(key) {
        case let .integer(i): return Double(i)
        case let .number(d): return d
        default: throw invalid(key, "expected a number")
        }
    }

    func number(_ key: String, default fallback: Double) throws -> Double { has(key) ? try number(key) : fallback }

    func bool(_ key: String, default fallback: Bool) throws -> Bool {
        guard has(key) else { return fallback }
        guard case let .bool(flag) = try value(key) else { throw invalid(key, "expected true or false") }
        return flag
    }

    /// An integer or a list of integers (e.g. `eos_token_id`); empty when absent.
    func integers(_ key: String) throws -> [Int] {
        guard has(key) else { return [] }
        if case let .array(items) = try value(key) {
            return try items.map { item in
                guard case let .integer(i) = item, i >= 0 else { throw invalid(key, "expected non-negative integers") }
                return i
            }
        }
        return [try integer(key, minimum: 0)]
    }

    /// A nested object, nil when absent or null.
    func nested(_ key: String) throws -> ConfigurationKeys? {
        guard has(key) else { return nil }
        guard case let .object(members) = try value(key) else { throw invalid(key, "expected an object") }
        return ConfigurationKeys(members: members, path: path + " → " + key)
    }
}
