import Foundation
import Testing
@testable import TensorCore

/// Inverse frequencies, attention scaling and cos/sin tables against transformers'
/// LlamaRotaryEmbedding (Fixtures/rope.json, made by Scripts/make_tensorcore_fixtures.py).
@Suite struct RopeTests {
    static func cases() throws -> [[String: Any]] { try loadFixture("rope.json")["cases"] as! [[String: Any]] }

    static func embedding(for testCase: [String: Any]) throws -> RotaryEmbedding {
        let p = testCase["rope_parameters"] as! [String: Any]
        func number(_ key: String) -> Float { (p[key] as! NSNumber).floatValue }
        func integer(_ key: String) -> Int { (p[key] as! NSNumber).intValue }
        let scaling: RopeScaling
        switch p["rope_type"] as! String {
        case "linear": scaling = .linear(factor: number("factor"))
        case "llama3":
            scaling = .llama3(factor: number("factor"), lowFrequencyFactor: number("low_freq_factor"),
                              highFrequencyFactor: number("high_freq_factor"),
                              originalMaxPositionEmbeddings: integer("original_max_position_embeddings"))
        case "yarn": scaling = .yarn(factor: number("factor"), originalMaxPositionEmbeddings: integer("original_max_position_embeddings"))
        case "dynamic": scaling = .dynamic(factor: number("factor"), maxPositionEmbeddings: (testCase["max_position_embeddings"] as! NSNumber).intValue)
        default: scaling = .none
        }
        return try RotaryEmbedding(dimension: (testCase["head_dim"] as! NSNumber).intValue, base: number("rope_theta"), scaling: scaling)
    }

    @Test func matchesTransformers() throws {
        for testCase in try Self.cases() {
            let name = testCase["name"] as! String
            let rope = try Self.embedding(for: testCase)
            let expected = doubles(testCase["inv_freq"])
            for i in expected.indices {
                #expect(abs(Double(rope.inverseFrequencies[i]) - expected[i]) <= 1.2e-7 * expected[i], "\(name) inv_freq[\(i)]")
            }
            #expect(abs(Double(rope.attentionScaling) - (testCase["attention_scaling"] as! NSNumber).doubleValue) < 1e-6, "\(name)")
            let half = rope.dimension / 2
            var cosTable = [Float](repeating: 0, count: half), sinTable = cosTable
            let positions = (testCase["positions"] as! [NSNumber]).map(\.intValue)
            let cosines = testCase["cos"] as! [[NSNumber]], sines = testCase["sin"] as! [[NSNumber]]
            for (index, position) in positions.enumerated() {
                let frequencies = rope.inverseFrequencies(sequenceLength: position + 1)
                rope.fillTables(position: position, frequencies: frequencies, cos: &cosTable, sin: &sinTable)
                for i in 0..<half {
                    // inv_freq agrees to one ulp (torch's float32 pow is not always
                    // correctly rounded): allow that ulp times the position in the angle.
                    let tolerance = 2e-6 + Double(position) * Double(frequencies[i].ulp) * Double(rope.attentionScaling)
                    #expect(abs(Double(cosTable[i]) - cosines[index][i].doubleValue) <= tolerance, "\(name) cos p=\(position) i=\(i)")
                    #expect(abs(Double(sinTable[i]) - sines[index][i].doubleValue) <= tolerance, "\(name) sin p=\(position) i=\(i)")
                }
            }
        }
    }

    @Test func rotatedQueryMatchesTransformers() throws {
        for testCase in try Self.cases() {
            let rope = try Self.embedding(for: testCase)
            let position = (testCase["rotated_query_position"] as! NSNumber).intValue
            var query = doubles(testCase["query"]).map(Float.init)
            let expected = doubles(testCase["rotated_query"])
            var cosTable = [Float](repeating: 0, count: rope.dimension / 2), sinTable = cosTable
            rope.fillTables(position: position, frequencies: rope.inverseFrequencies(sequenceLength: position + 1), cos: &cosTable, sin: &sinTable)
            try rope.apply(to: &query, heads: 2, headDimension: rope.dimension, cos: cosTable, sin: sinTable)
            for i in query.indices { #expect(abs(Double(query[i]) - expected[i]) <= 1e-5, "\(testCase["name"]!) [\(i)]") }
        }
    }

    /// Adjacent pairs (GGUF arch `llama`) and partial rotation, against a float64 rotation.
    @Test(arguments: [RopeLayout.halfSplit, .adjacentPairs])
    func layoutsAndPartialRotation(layout: RopeLayout) throws {
        let headDimension = 80, rotated = 32, heads = 3, position = 37
        let rope = try RotaryEmbedding(dimension: rotated, base: 10000, layout: layout)
        var cosTable = [Float](repeating: 0, count: rotated / 2), sinTable = cosTable
        rope.fillTables(position: position, frequencies: rope.inverseFrequencies, cos: &cosTable, sin: &sinTable)
        let original = randomFloats(heads * headDimension, seed: 77)
        var vectors = original
        try rope.apply(to: &vectors, heads: heads, headDimension: headDimension, cos: cosTable, sin: sinTable)
        for h in 0..<heads {
            let base = h * headDimension
            for i in 0..<rotated / 2 {
                let (a, b) = layout == .halfSplit ? (i, i + rotated / 2) : (2 * i, 2 * i + 1)
                let angle = Double(Float(position) * rope.inverseFrequencies[i])
                let x0 = Double(original[base + a]), x1 = Double(original[base + b])
                #expect(abs(Double(vectors[base + a]) - (x0 * cos(angle) - x1 * sin(angle))) < 1e-6)
                #expect(abs(Double(vectors[base + b]) - (x1 * cos(angle) + x0 * sin(angle))) < 1e-6)
            }
            for i in rotated..<headDimension { #expect(vectors[base + i] == original[base + i]) }
        }
    }

    @Test func invalidParametersThrow() {
        #expect(throws: TensorError.self) { try RotaryEmbedding(dimension: 63, base: 10000) }
        #expect(throws: TensorError.self) { try RotaryEmbedding(dimension: 64, base: 0.5) }
        #expect(throws: TensorError.self) { try RotaryEmbedding(dimension: 64, base: 10000, scaling: .linear(factor: 0)) }
        #expect(throws: TensorError.self) {
            try RotaryEmbedding(dimension: 64, base: 10000, scaling: .llama3(factor: 8, lowFrequencyFactor: 4, highFrequencyFactor: 1, originalMaxPositionEmbeddings: 8192))
        }
        let rope = try! RotaryEmbedding(dimension: 64, base: 10000)
        var v = [Float](repeating: 0, count: 32)
        #expect(throws: TensorError.self) { try rope.apply(to: &v, heads: 1, headDimension: 32, cos: [], sin: []) }
    }
}
