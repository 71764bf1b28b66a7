import Foundation
import Testing
@testable import Models

let modelsFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

func configuration(_ name: String) throws -> ModelConfiguration {
    try ModelConfiguration(contentsOf: modelsFixtures.appendingPathComponent("configs/\(name).json"))
}

func transformer(_ name: String) throws -> TransformerConfiguration {
    guard case let .transformer(c) = try configuration(name) else { throw ConfigurationError.missingKey(path: name, key: "transformer") }
    return c
}

/// config.json files written by transformers 5 (`save_pretrained`) and as transformers-4
/// era checkpoints publish them (Scripts/make_config_fixtures.py).
@Suite struct ConfigurationTests {
    @Test func llamaWithGroupedQueryAttention() throws {
        let c = try transformer("v5-llama-gqa")
        #expect(c.modelType == "llama" && c.hiddenSize == 2048 && c.intermediateSize == 5632 && c.layerCount == 22)
        #expect(c.headCount == 32 && c.keyValueHeadCount == 4 && c.groupSize == 8 && c.headDimension == 64)
        #expect(c.vocabularySize == 32000 && c.rmsNormEpsilon == 1e-5 && c.ropeTheta == 10000 && c.ropeScaling == .none)
        #expect(!c.tieWordEmbeddings && c.slidingWindow == nil && c.experts == nil && !c.queryKeyValueBias)
    }

    @Test func llama3ScalingReadsTheSameInBothLayouts() throws {
        let v5 = try transformer("v5-llama3-tied"), v4 = try transformer("v4-llama31-8b")
        let expected = RopeScaling.llama3(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalMaxPositionEmbeddings: 8192)
        #expect(v5.ropeScaling == expected && v4.ropeScaling == expected)
        #expect(v5.ropeTheta == 500_000 && v4.ropeTheta == 500_000)
        #expect(v5.tieWordEmbeddings && !v4.tieWordEmbeddings)
        #expect(v4.eosTokenIDs == [128_001, 128_008, 128_009] && v4.bosTokenID == 128_000)
        #expect(v4.headDimension == 128 && v4.keyValueHeadCount == 8)
    }

    @Test func yarnAndLinearScaling() throws {
        let yarn = try transformer("v5-llama-yarn")
        #expect(yarn.ropeScaling == .yarn(factor: 4, originalMaxPositionEmbeddings: 1024))
        #expect(try yarn.rotaryEmbedding().attentionScaling == Float(0.1 * log(4.0) + 1))
        let linear = try transformer("v4-llama-head-dim-null")
        #expect(linear.headDimension == 32 && linear.ropeScaling == .linear(factor: 2))
    }

    @Test func mistralSlidingWindow() throws {
        for name in ["v5-mistral", "v4-mistral-7b"] {
            let c = try transformer(name)
            #expect(c.modelType == "mistral" && c.slidingWindow == 4096 && c.headDimension == 128 && c.keyValueHeadCount == 8, "\(name)")
        }
    }

    @Test func qwen2BiasesAndWindowOnlyWhenEnabled() throws {
        for name in ["v5-qwen2", "v4-qwen2-0.5b"] {
            let c = try transformer(name)
            #expect(c.queryKeyValueBias && !c.outputProjectionBias && c.slidingWindow == nil && c.tieWordEmbeddings, "\(name)")
            #expect(c.headDimension == 64 && c.keyValueHeadCount == 2)
        }
        #expect(try transformer("v4-qwen2-0.5b").ropeTheta == 1_000_000)
    }

    @Test func mixtralExperts() throws {
        for name in ["v5-mixtral", "v4-mixtral-8x7b"] {
            let c = try transformer(name)
            #expect(c.experts?.count == 8 && c.experts?.perToken == 2 && c.slidingWindow == nil, "\(name)")
            #expect(c.ropeTheta == 1_000_000 && c.rmsNormEpsilon == 1e-5)
        }
    }

    @Test func mamba() throws {
        for name in ["v5-mamba", "v4-mamba-130m"] {
            guard case let .mamba(c) = try configuration(name) else { Issue.record("not mamba: \(name)"); continue }
            #expect(c.hiddenSize == 768 && c.layerCount == 24 && c.stateSize == 16 && c.innerSize == 1536, "\(name)")
            #expect(c.convolutionKernel == 4 && c.timeStepRank == 48 && !c.useBias && c.useConvolutionBias && c.vocabularySize == 50280)
        }
    }

    func expectError(_ json: String, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(sourceLocation: sourceLocation) {
            try ModelConfiguration(json: Data(json.utf8), path: "/models/x/config.json")
        } throws: { error in
            error is ConfigurationError && "\(error)".contains("/models/x/config.json") && "\(error)".contains(text)
        }
    }

    @Test func badConfigurationsThrowNamingFileAndKey() {
        let base = #""model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"vocab_size":100"#
        expectError(#"{"model_type":"gpt2"}"#, "model_type 'gpt2' is not supported")
        expectError("{}", "missing required key 'model_type'")
        expectError("[1]", "not a JSON object")
        expectError("{", "invalid JSON")
        expectError("{\(base)}", "'num_attention_heads'")
        expectError("{\(base),\"num_attention_heads\":5}", "does not divide hidden_size")
        expectError("{\(base),\"num_attention_heads\":4,\"num_key_value_heads\":3}", "does not divide num_attention_heads")
        expectError("{\(base),\"num_attention_heads\":4,\"rope_scaling\":{\"rope_type\":\"longrope\"}}", "'longrope' is not supported")
        expectError("{\(base),\"num_attention_heads\":4,\"rope_scaling\":{\"rope_type\":\"linear\"}}", "'factor'")
        expectError("{\(base),\"num_attention_heads\":4,\"tie_word_embeddings\":1}", "expected true or false")
        expectError(#"{"model_type":"llama","vocab_size":100,"hidden_size":-64}"#, "'hidden_size': expected an integer")
        // Sizes whose products would overflow Int, and a factor that would not convert to Int.
        expectError(#"{"model_type":"llama","vocab_size":100,"hidden_size":4611686018427387904}"#, "'hidden_size': expected an integer from 1 to")
        expectError(#"{"model_type":"mamba","vocab_size":100,"hidden_size":1073741824,"num_hidden_layers":1,"expand":1073741824}"#, "'expand'")
        expectError("{\(base),\"num_attention_heads\":4,\"partial_rotary_factor\":1e300}", "'partial_rotary_factor'")
        expectError("{\(base),\"num_attention_heads\":4,\"partial_rotary_factor\":-1}", "outside (0, 1]")
        expectError(#"{"model_type":"mixtral","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"vocab_size":100,"num_attention_heads":4,"num_local_experts":2,"num_experts_per_tok":3}"#, "exceeds")
    }
}
