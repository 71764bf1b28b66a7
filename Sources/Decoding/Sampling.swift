@_exported import Models
import Foundation

/// The tokens a sampler chain works on: (id, logit) pairs in one buffer reused for every
/// step. Processors narrow and reshape it; a selector picks the token.
public struct Candidates: Sendable {
    /// Token ids of the entries (only the first `count` are in use).
    public internal(set) var ids: [Int32]
    /// Logits of the entries, parallel to `ids`.
    public internal(set) var logits: [Float]
    /// Entries in use (the buffers keep their full capacity).
    public internal(set) var count = 0
    /// Whether entries 0..<count are sorted by logit, largest first.
    public internal(set) var isSorted = false

    /// A buffer for a vocabulary of `capacity` tokens.
    public init(capacity: Int) {
        ids = [Int32](repeating: 0, count: capacity)
        logits = [Float](repeating: 0, count: capacity)
    }

    /// Loads one step's logits: every token becomes a candidate.
    public mutating func reset(_ values: UnsafeBufferPointer<Float>) {
        if ids.count < values.count {
            ids = [Int32](repeating: 0, count: values.count)
            logits = [Float](repeating: 0, count: values.count)
        }
        for i in 0..<values.count {
            ids[i] = Int32(i)
            logits[i] = values[i]
        }
        count = values.count
        isSorted = false
    }

    /// Sorts by logit, largest first (ties: lower id first).
    mutating func sort() {
        guard !isSorted else { return }
        var order = Array(0..<count)
        order.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && ids[$0] < ids[$1]) }
        let (oldIDs, oldLogits) = (Array(ids[0..<count]), Array(logits[0..<count]))
        for (position, index) in order.enumerated() {
            ids[position] = oldIDs[index]
            logits[position] = oldLogits[index]
        }
        isSorted = true
    }

    /// Softmax of the current logits (float64 accumulation), in entry order.
    public func probabilities() -> [Double] {
        guard count > 0 else { return [] }
        var maximum = -Float.infinity
        for i in 0..<count { maximum = max(maximum, logits[i]) }
        var weights = (0..<count).map { Foundation.exp(Double(logits[$0] - maximum)) }
        let total = weights.reduce(0, +)
        for i in weights.indices { weights[i] /= total }
        return weights
    }

    /// Keeps the first `n` entries.
    mutating func truncate(to n: Int) { count = max(1, min(count, n)) }

    /// The probability of `id` among the current candidates (0 when it was removed).
    public func probability(of id: Int) -> Double {
        let p = probabilities()
        for i in 0..<count where Int(ids[i]) == id { return p[i] }
        return 0
    }
}

/// The tokens seen so far in a request (prompt and generated), for penalties.
public struct TokenHistory: Sendable {
    /// Token ids, oldest first.
    public var tokens: [Int] = []
    /// A history holding `tokens`.
    public init(_ tokens: [Int] = []) { self.tokens = tokens }
}

/// One step of a sampler chain: changes logits or removes candidates.
public protocol LogitProcessor: Sendable {
    func process(_ candidates: inout Candidates, history: TokenHistory)
}

/// Divides positive logits by `penalty` and multiplies negative ones (CTRL's repetition
/// penalty, as transformers and llama.cpp apply it) for tokens among the last `window`.
public struct RepetitionPenalty: LogitProcessor {
    /// Divisor of positive logits and multiplier of negative ones (> 1 discourages repeats).
    public var penalty: Float
    /// How many of the most recent tokens count as seen.
    public var window: Int
    /// A penalty of `penalty` for tokens among the last `window`.
    public init(_ penalty: Float, window: Int = 64) { self.penalty = penalty; self.window = window }
    /// Applies this processor to the candidates (see the type's comment).
    public func process(_ candidates: inout Candidates, history: TokenHistory) {
        let seen = Set(history.tokens.suffix(max(window, 0)))
        for i in 0..<candidates.count where seen.contains(Int(candidates.ids[i])) {
            let l = candidates.logits[i]
            candidates.logits[i] = l > 0 ? l / penalty : l * penalty
        }
        candidates.isSorted = false
    }
}

/// OpenAI's penalties over the last `window` tokens: logit −= frequency · count + presence · [count > 0].
public struct FrequencyPresencePenalty: LogitProcessor {
    /// Subtracted from a token's logit once per occurrence in the window.
    public var frequency: Float
    /// Subtracted once from the logit of any token that occurs in the window.
    public var presence: Float
    /// How many of the most recent tokens are counted.
    public var window: Int
    /// Penalties over the last `window` tokens (0: off).
    public init(frequency: Float = 0, presence: Float = 0, window: Int = 64) {
        self.frequency = frequency; self.presence = presence; self.window = window
    }
    /// Applies this processor to the candidates (see the type's comment).
    public func process(_ candidates: inout Candidates, history: TokenHistory) {
        var counts: [Int: Int] = [:]
        for token in history.tokens.suffix(max(window, 0)) { counts[token, default: 0] += 1 }
        for i in 0..<candidates.count {
            if let n = counts[Int(candidates.ids[i])] { candidates.logits[i] -= frequency * Float(n) + presence }
        }
        candidates.isSorted = false
    }
}

/// Adds a fixed bias to chosen tokens' logits (−infinity bans a token).
public struct LogitBias: LogitProcessor {
    /// Logit offsets by token id.
    public var bias: [Int: Float]
    /// A processor adding `bias` to the listed tokens' logits.
    public init(_ bias: [Int: Float]) { self.bias = bias }
    /// Applies this processor to the candidates (see the type's comment).
    public func process(_ candidates: inout Candidates, history: TokenHistory) {
        for i in 0..<candidates.count { if let b = bias[Int(candidates.ids[i])] { candidates.logits[i] += b } }
        candidates.isSorted = false
    }
}

/// Divides logits by `temperature` (> 0; use `GreedySelector` for 0).
public struct Temperature: LogitProcessor {
    /// The divisor (must be positive).
    public var temperature: Float
    /// Divides logits by `temperature` (> 0).
    public init(_ temperature: Float) { self.temperature = temperature }
    /// Applies this processor to the candidates (see the type's comment).
    public func process(_ candidates: inout Candidates, history: TokenHistory) {
        for i in 0..<candidates.count { candidates.logits[i] /= temperature }
    }
}

/// Keeps the `k` most likely tokens.
public struct TopK: LogitProcessor {
    /// Tokens to keep (0 or less keeps them all).
    public var k: Int
    /// Keeps the `k` most likely tokens.
    public init(_ k: Int) { self.k = k }
    /// Applies this processor to the candidates (see the type's comment).
    public func process(_ candidates: inout Candidates, history: TokenHistory) {
        guard k > 0, k < candidates.count else { return }
        candidates.sort()
        candidates.truncate(to: k)
    }
}

/// Keeps the smallest set of most likely tokens whose probabilities reach `p` (nucleus).
public struct TopP: LogitProcessor {
    /// Cumulative probability to reach (1 or more keeps every token).
    public var p: Double
    /// Nucleus filtering with threshold `p`.
    public init(_ p: Double) { self.p = p }
    /// Applies this processor to the candidates (see the type's comment).
    public func process(_ candidates: inout Candidates, history: TokenHistory) {
        guard p < 1 else { return }
        candidates.sort()
        var cumulative = 0.0, keep = 0
        for probability in candidates.probabilities() {
            cumulative += probability
            keep += 1
            if cumulative >= p { break }
        }
        candidates.truncate(to: keep)
    }
}

/// Keeps tokens whose probability is at least `p` × the most likely one's.
public struct MinP: LogitProcessor {
    /// Minimum probability as a fraction of the most likely token's (0 or less keeps every token).
    public var p: Double
    /// Keeps tokens at least `p` × as likely as the most likely one.
    public init(_ p: Double) { self.p = p }
    /// Applies this processor to the candidates (see the type's comment).
    public func process(_ candidates: inout Candidates, history: TokenHistory) {
        guard p > 0 else { return }
        candidates.sort()
        let probabilities = candidates.probabilities()
        let threshold = p * probabilities[0]
        candidates.truncate(to: probabilities.firstIndex { $0 < threshold } ?? candidates.count)
    }
}

/// Xoshiro256** seeded through SplitMix64: a request's own generator, so the same seed and
/// prompt give the same text whatever other requests run alongside.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)
    /// A generator whose whole sequence is determined by `seed`.
    public init(seed: UInt64) {
        var x = seed
        func split() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (split(), split(), split(), split())
    }
    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0; s.3 ^= s.1; s.1 ^= s.2; s.0 ^= s.3; s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }
}

/// A processing chain and how it picks the token.
///
/// Order, fixed and documented: repetition penalty → frequency/presence penalties → logit
/// bias → temperature → top-k → top-p → min-p → draw. The warpers follow transformers'
/// order (temperature first); penalties come first, as in vLLM and llama.cpp.
public struct SamplerChain: Sendable {
    /// The processors, run in order before the token is picked.
    public var processors: [any LogitProcessor]
    /// nil: greedy (the most likely token); otherwise a draw with this request's generator.
    public var generator: SeededGenerator?

    /// A chain of `processors` that picks greedily (`generator` nil) or draws with `generator`.
    public init(processors: [any LogitProcessor], generator: SeededGenerator?) {
        self.processors = processors
        self.generator = generator
    }

    /// The chain for common parameters (temperature 0 or nil top values = greedy / off).
    public init(temperature: Float = 0, topK: Int? = nil, topP: Double? = nil, minP: Double? = nil,
                repetitionPenalty: Float? = nil, frequencyPenalty: Float = 0, presencePenalty: Float = 0,
                penaltyWindow: Int = 64, logitBias: [Int: Float] = [:], seed: UInt64 = 0) {
        var chain: [any LogitProcessor] = []
        if let repetitionPenalty, repetitionPenalty != 1 { chain.append(RepetitionPenalty(repetitionPenalty, window: penaltyWindow)) }
        if frequencyPenalty != 0 || presencePenalty != 0 {
            chain.append(FrequencyPresencePenalty(frequency: frequencyPenalty, presence: presencePenalty, window: penaltyWindow))
        }
        if !logitBias.isEmpty { chain.append(LogitBias(logitBias)) }
        if temperature > 0 {
            if temperature != 1 { chain.append(Temperature(temperature)) }
            if let topK { chain.append(TopK(topK)) }
            if let topP { chain.append(TopP(topP)) }
            if let minP { chain.append(MinP(minP)) }
        }
        self.init(processors: chain, generator: temperature > 0 ? SeededGenerator(seed: seed) : nil)
    }

    /// Whether tokens are drawn at random (false: greedy).
    public var isSampling: Bool { generator != nil }

    /// Runs the processors over `candidates` and returns the distribution the draw would
    /// use (a one-hot on the greedy choice when greedy), as (token, probability) pairs.
    public func distribution(_ candidates: inout Candidates, history: TokenHistory) -> [(token: Int, probability: Double)] {
        for processor in processors { processor.process(&candidates, history: history) }
        guard generator != nil else { return [(Self.greedyChoice(candidates), 1)] }
        let probabilities = candidates.probabilities()
        return (0..<candidates.count).map { (Int(candidates.ids[$0]), probabilities[$0]) }
    }

    /// A uniform draw in [0, 1) from the request's generator (0 when greedy).
    public mutating func uniform() -> Double {
        guard var generator else { return 0 }
        defer { self.generator = generator }
        return Double(generator.next() >> 11) * 0x1p-53
    }

    /// The most likely candidate (ties: the lower id).
    static func greedyChoice(_ candidates: Candidates) -> Int {
        var best = 0
        for i in 1..<max(candidates.count, 1) where candidates.logits[i] > candidates.logits[best]
            || (candidates.logits[i] == candidates.logits[best] && candidates.ids[i] < candidates.ids[best]) { best = i }
        return Int(candidates.ids[best])
    }

    /// Picks the next token from `candidates` (already loaded with this step's logits).
    public mutating func select(_ candidates: inout Candidates, history: TokenHistory) -> Int {
        for processor in processors { processor.process(&candidates, history: history) }
        guard var generator else { return Self.greedyChoice(candidates) }
        let probabilities = candidates.probabilities()
        let u = Double(generator.next() >> 11) * 0x1p-53
        self.generator = generator
        var cumulative = 0.0
        for (i, p) in probabilities.enumerated() {
            cumulative += p
            if u < cumulative { return Int(candidates.ids[i]) }
        }
        return Int(candidates.ids[candidates.count - 1])
    }
}
