import Foundation

/// Where speculative decoding gets its draft tokens. The target model verifies them all in
/// one batched forward; only tokens it would have produced itself are kept.
public enum DraftSource: Sendable, Equatable {
    /// A smaller model with the same tokenizer (a folder or `.gguf`).
    case model(path: String)
    /// A quantized copy of the target itself, e.g. Q4_0 drafting for an F16 or Q8_0 target.
    case quantizedSelf(ElementType)
    /// Look-up of the longest recent n-gram (n ≤ `maximumN`) in the prompt and the text
    /// generated so far; proposes what followed it last time. Needs no model.
    case ngram(maximumN: Int)
}

/// The acceptance rule of speculative sampling (Leviathan et al. 2023; Chen et al. 2023):
/// keep draft token x with probability min(1, p(x) / q(x)); otherwise draw the replacement
/// from max(p − q, 0), normalized. The kept or drawn token is distributed exactly as p.
public enum SpeculativeSampling {
    /// Verifies one draft token. `p` is the target's distribution, `q` the draft's (nil: the
    /// draft was proposed deterministically, q = one-hot on `draft`); `uniform` supplies
    /// draws in [0, 1). Returns nil when `draft` is accepted, else the replacement token.
    public static func verify(draft: Int, p: [(token: Int, probability: Double)], q: [(token: Int, probability: Double)]?,
                              uniform: () -> Double) -> Int? {
        var target: [Int: Double] = [:]
        for (token, probability) in p { target[token, default: 0] += probability }
        var proposal: [Int: Double] = [:]
        if let q { for (token, probability) in q { proposal[token, default: 0] += probability } } else { proposal[draft] = 1 }
        let pDraft = target[draft] ?? 0, qDraft = proposal[draft] ?? 0
        if qDraft > 0, uniform() < min(1, pDraft / qDraft) { return nil }
        // The residual max(p − q, 0), in p's order so equal draws give equal tokens.
        var residual: [(Int, Double)] = []
        var total = 0.0
        for (token, probability) in p {
            let r = max(probability - (proposal[token] ?? 0), 0)
            if r > 0 { residual.append((token, r)); total += r }
        }
        if total <= 0 {  // p ≤ q everywhere only when p == q, where a rejection cannot happen; be safe
            residual = p.map { ($0.token, $0.probability) }
            total = residual.reduce(0) { $0 + $1.1 }
        }
        let u = uniform() * total
        var cumulative = 0.0
        for (token, r) in residual {
            cumulative += r
            if u < cumulative { return token }
        }
        return residual.last?.0 ?? draft
    }
}

/// Proposes up to `count` tokens continuing `tokens` from an earlier occurrence of their
/// longest suffix of at most `maximumN` tokens (the most recent occurrence wins).
func ngramDraft(_ tokens: [Int], maximumN: Int, count: Int) -> [Int] {
    guard count > 0, tokens.count >= 2 else { return [] }
    for n in stride(from: min(maximumN, tokens.count - 1), through: 1, by: -1) {
        let suffix = tokens[(tokens.count - n)...]
        var start = tokens.count - n - 1
        while start >= 0 {
            if tokens[start..<start + n].elementsEqual(suffix) {
                let from = start + n
                return Array(tokens[from..<min(tokens.count, from + count)])
            }
            start -= 1
        }
    }
    return []
}

/// A request's speculation state: the draft length, which adapts to how many drafts the
/// target accepts, and the draft model's sequence.
struct Speculation {
    /// Most draft tokens per step: with the last token, a verification chunk stays below
    /// `Kernels.gemmThreshold` rows, on the row-wise path whose results equal plain
    /// decoding bit for bit (so greedy speculation reproduces greedy decoding exactly).
    static let maximumDraft = Kernels.gemmThreshold - 2
    var draftLength: Int
    /// Steps left with drafting paused (acceptance too low, or speculation measured slower
    /// than plain decoding). The first step is plain, to measure plain decoding's speed.
    var pause = 1
    /// Exponential averages of tokens per second in plain and in speculative steps (0: not
    /// measured yet), timed on the scheduler's clock.
    var plainRate = 0.0
    var speculativeRate = 0.0
    /// Exponential average of the fraction of drafts accepted.
    var acceptance = 1.0
    /// The draft model's sequence and how many of the request's tokens it holds.
    var slot: ModelSequence?
    /// The longest draft the request asked for.
    let longestDraft: Int
    var held = 0

    init(draftTokens: Int) {
        draftLength = min(max(draftTokens, 0), Self.maximumDraft)
        longestDraft = draftLength
    }

    /// Records a plain step's duration.
    mutating func recordPlain(seconds: Double) {
        guard seconds > 0 else { return }
        plainRate = plainRate == 0 ? 1 / seconds : 0.7 * plainRate + 0.3 / seconds
    }

    /// Tokens to draft this step (0: plain decoding).
    mutating func nextLength() -> Int {
        if pause > 0 { pause -= 1; return 0 }
        return draftLength
    }

    /// Adapts after a verification of `drafted` tokens of which `kept` were accepted, which
    /// took `seconds` (drafting and the step): grow when all pass, shrink on a rejection, and
    /// pause drafting for a while when acceptance stays low or speculative steps yield fewer
    /// tokens per second than plain ones, so speculation never makes a run much slower than
    /// plain decoding. Paused runs try again later (the text may become predictable).
    mutating func record(drafted: Int, kept: Int, seconds: Double) {
        guard drafted > 0 else { return }
        acceptance = 0.7 * acceptance + 0.3 * Double(kept) / Double(drafted)
        if seconds > 0 {
            let rate = Double(kept + 1) / seconds
            speculativeRate = speculativeRate == 0 ? rate : 0.7 * speculativeRate + 0.3 * rate
        }
        if kept == drafted {
            draftLength = min(longestDraft, draftLength + 1)
        } else {
            draftLength = max(1, kept + 1)
        }
        if acceptance < 0.25 {
            pause = 8
            acceptance = 0.5
        } else if plainRate > 0, speculativeRate > 0, speculativeRate < plainRate {
            pause = 32
            speculativeRate = 0  // measured afresh after the pause
        }
    }
}
