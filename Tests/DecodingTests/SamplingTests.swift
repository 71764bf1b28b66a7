import Foundation
import Testing
@testable import Decoding

/// Samplers against distributions computed by hand.
@Suite struct SamplingTests {
    func candidates(_ logits: [Float]) -> Candidates {
        var c = Candidates(capacity: logits.count)
        logits.withUnsafeBufferPointer { c.reset($0) }
        return c
    }

    func distribution(_ c: Candidates) -> [Int: Double] {
        Dictionary(uniqueKeysWithValues: zip((0..<c.count).map { Int(c.ids[$0]) }, c.probabilities()))
    }

    func expectClose(_ actual: [Int: Double], _ expected: [Int: Double], sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(Set(actual.keys) == Set(expected.keys), sourceLocation: sourceLocation)
        for (id, p) in expected { #expect(abs((actual[id] ?? -1) - p) < 1e-6, "token \(id)", sourceLocation: sourceLocation) }  // logits are float32
    }

    /// Logits whose softmax is exactly 0.5, 0.3, 0.15, 0.05.
    let known: [Float] = [0.5, 0.3, 0.15, 0.05].map { Float(log($0)) }

    @Test func greedyTakesTheLargestLogitAndLowerIdOnTies() {
        var chain = SamplerChain()
        var c = candidates([0.1, 3, -2, 3])
        #expect(chain.select(&c, history: TokenHistory()) == 1)
    }

    @Test func temperatureTopKTopPMinP() {
        var c = candidates(known)
        Temperature(2).process(&c, history: TokenHistory())
        let root = [0.5, 0.3, 0.15, 0.05].map { $0.squareRoot() }, total = root.reduce(0, +)
        expectClose(distribution(c), Dictionary(uniqueKeysWithValues: root.enumerated().map { ($0.offset, $0.element / total) }))

        c = candidates(known)
        TopK(2).process(&c, history: TokenHistory())
        expectClose(distribution(c), [0: 0.625, 1: 0.375])

        c = candidates(known)
        TopP(0.7).process(&c, history: TokenHistory())  // 0.5 + 0.3 reaches 0.7
        expectClose(distribution(c), [0: 0.625, 1: 0.375])
        c = candidates(known)
        TopP(0.81).process(&c, history: TokenHistory())
        expectClose(distribution(c), [0: 0.5 / 0.95, 1: 0.3 / 0.95, 2: 0.15 / 0.95])

        c = candidates(known)
        MinP(0.25).process(&c, history: TokenHistory())  // keeps p ≥ 0.125
        expectClose(distribution(c), [0: 0.5 / 0.95, 1: 0.3 / 0.95, 2: 0.15 / 0.95])
    }

    @Test func penaltiesAndBias() {
        var c = candidates([2, -2, 1, 4])
        RepetitionPenalty(2, window: 8).process(&c, history: TokenHistory([7, 0, 1]))
        let penalized: [Float] = [1, -4, 1, 4]
        #expect(Array(c.logits[0..<4]) == penalized)
        c = candidates([2, -2, 1, 4])
        FrequencyPresencePenalty(frequency: 0.5, presence: 1, window: 3).process(&c, history: TokenHistory([0, 3, 3, 3]))
        let expected: [Float] = [2, -2, 1, 1.5]  // 4 − 0.5·3 − 1; token 0 is outside the window of 3
        #expect(Array(c.logits[0..<4]) == expected)
        c = candidates([2, -2, 1, 4])
        LogitBias([3: -.infinity, 1: 10]).process(&c, history: TokenHistory())
        var chain = SamplerChain()
        #expect(chain.select(&c, history: TokenHistory()) == 1)
    }

    @Test func seededDrawsAreReproducible() {
        func draws(seed: UInt64) -> [Int] {
            var chain = SamplerChain(temperature: 1, seed: seed)
            var c = Candidates(capacity: 4)
            return (0..<50).map { _ in
                known.withUnsafeBufferPointer { c.reset($0) }
                return chain.select(&c, history: TokenHistory())
            }
        }
        #expect(draws(seed: 42) == draws(seed: 42))
        #expect(draws(seed: 42) != draws(seed: 43))
    }

    /// 40,000 draws match the distribution within 4 standard errors per token.
    @Test func drawsFollowTheDistribution() {
        var chain = SamplerChain(temperature: 1, topK: 3, seed: 7)
        var c = Candidates(capacity: 4)
        var counts = [0, 0, 0, 0]
        let n = 40_000
        for _ in 0..<n {
            known.withUnsafeBufferPointer { c.reset($0) }
            counts[chain.select(&c, history: TokenHistory())] += 1
        }
        let expected = [0.5, 0.3, 0.15, 0.0].map { $0 / 0.95 }
        for (token, p) in expected.enumerated() {
            let tolerance = 4 * (p * (1 - p) / Double(n)).squareRoot() + 1e-12
            #expect(abs(Double(counts[token]) / Double(n) - p) <= tolerance, "token \(token): \(counts[token])")
        }
    }

    /// The convenience chain applies temperature before top-p, as documented.
    @Test func documentedOrder() {
        let chain = SamplerChain(temperature: 0.5, topK: 3, topP: 0.9, minP: 0.05, repetitionPenalty: 1.1, frequencyPenalty: 0.2, logitBias: [1: 1])
        let names = chain.processors.map { String(describing: type(of: $0)) }
        #expect(names == ["RepetitionPenalty", "FrequencyPresencePenalty", "LogitBias", "Temperature", "TopK", "TopP", "MinP"])
        var manual = candidates(known), automatic = candidates(known)
        Temperature(0.5).process(&manual, history: TokenHistory())
        TopP(0.9).process(&manual, history: TokenHistory())
        var chain2 = SamplerChain(processors: [Temperature(0.5), TopP(0.9)], generator: nil)
        _ = chain2.select(&automatic, history: TokenHistory())
        expectClose(distribution(automatic), distribution(manual))
        expectClose(distribution(manual), [0: 25.0 / 34.0, 1: 9.0 / 34.0])  // 0.5², 0.3² of 0.34, cut at 0.9
    }
}
