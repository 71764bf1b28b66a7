/// Llama-family transformers (`llama`, `mistral`, `qwen2`, `mixtral`): the fields every
/// one of them needs, with each architecture's own defaults for keys a checkpoint omits.
public struct TransformerConfiguration: Sendable, Equatable {
    /// The architecture: `llama`, `mistral`, `qwen2` or `mixtral` (`model_type`).
    public var modelType: String
    /// Rows of the embedding matrix (`vocab_size`).
    public var vocabularySize: Int
    /// Width of the residual stream (`hidden_size`).
    public var hiddenSize: Int
    /// The MLP's inner size (per expert for Mixtral).
    public var intermediateSize: Int
    /// Decoder layers (`num_hidden_layers`).
    public var layerCount: Int
    /// Query heads per layer (`num_attention_heads`).
    public var headCount: Int
    /// Key/value heads per layer (`num_key_value_heads`; defaults to `headCount`).
    public var keyValueHeadCount: Int
    /// `head_dim`, or hidden_size / num_attention_heads when absent or null.
    public var headDimension: Int
    /// Epsilon added inside RMSNorm (`rms_norm_eps`).
    public var rmsNormEpsilon: Float
    /// Longest sequence the model supports (`max_position_embeddings`).
    public var maxPositionEmbeddings: Int
    /// RoPE base frequency (`rope_theta`).
    public var ropeTheta: Float
    /// RoPE frequency scaling (`rope_scaling` or `rope_parameters`; `.none` when absent).
    public var ropeScaling: RopeScaling
    /// Dimensions of each head that rotate (head_dim × partial_rotary_factor).
    public var rotaryDimension: Int
    /// Hugging Face checkpoints rotate half-split pairs; a GGUF of arch `llama` adjacent ones.
    public var ropeLayout: RopeLayout
    /// The output head reuses the embedding matrix.
    public var tieWordEmbeddings: Bool
    /// Attention sees only the last `slidingWindow` positions (Mistral); nil for full attention.
    public var slidingWindow: Int?
    /// q/k/v projections have biases (Qwen2; Llama's `attention_bias`).
    public var queryKeyValueBias: Bool
    /// o_proj has a bias (Llama's `attention_bias`; never Qwen2).
    public var outputProjectionBias: Bool
    /// Mixture of experts: experts per layer and experts each token uses (nil: dense MLP).
    public var experts: (count: Int, perToken: Int)?
    /// Beginning-of-sequence token id (`bos_token_id`), if set.
    public var bosTokenID: Int?
    /// End-of-sequence token ids (`eos_token_id`, one or a list; empty when absent).
    public var eosTokenIDs: [Int]

    /// Field-by-field equality (written out because `experts` is a tuple).
    public static func == (a: TransformerConfiguration, b: TransformerConfiguration) -> Bool {
        a.modelType == b.modelType && a.vocabularySize == b.vocabularySize && a.hiddenSize == b.hiddenSize
            && a.intermediateSize == b.intermediateSize && a.layerCount == b.layerCount && a.headCount == b.headCount
            && a.keyValueHeadCount == b.keyValueHeadCount && a.headDimension == b.headDimension
            && a.rmsNormEpsilon == b.rmsNormEpsilon && a.maxPositionEmbeddings == b.maxPositionEmbeddings
            && a.ropeTheta == b.ropeTheta && a.ropeScaling == b.ropeScaling && a.rotaryDimension == b.rotaryDimension
            && a.ropeLayout == b.ropeLayout && a.tieWordEmbeddings == b.tieWordEmbeddings && a.slidingWindow == b.slidingWindow
            && a.queryKeyValueBias == b.queryKeyValueBias && a.outputProjectionBias == b.outputProjectionBias
            && a.experts?.count == b.experts?.count && a.experts?.perToken == b.experts?.perToken
            && a.bosTokenID == b.bosTokenID && a.eosTokenIDs == b.eosTokenIDs
    }

    /// Query heads that share one key/value head.
    public var groupSize: Int { headCount / keyValueHeadCount }

    /// A `rope_type` (or transformers 4's `type`) and its parameters.
    static func scaling(_ keys: ConfigurationKeys, maxPositionEmbeddings: Int) throws -> RopeScaling {
        let type = keys.has("rope_type") ? try keys.string("rope_type") : keys.has("type") ? try keys.string("type") : "default"
        switch type {
        case "default": return .none
        case "linear": return .linear(factor: Float(try keys.number("factor")))
        case "dynamic": return .dynamic(factor: Float(try keys.number("factor")), maxPositionEmbeddings: maxPositionEmbeddings)
        case "llama3":
            return .llama3(factor: Float(try keys.number("factor")),
                           lowFrequencyFactor: Float(try keys.number("low_freq_factor")),
                           highFrequencyFactor: Float(try keys.number("high_freq_factor")),
                           originalMaxPositionEmbeddings: try keys.integer("original_max_position_embeddings"))
        case "yarn":
            let original = try keys.integer("original_max_position_embeddings", default: maxPositionEmbeddings)
            let factor = keys.has("factor") ? Float(try keys.number("factor")) : Float(maxPositionEmbeddings) / Float(original)
            return .yarn(factor: factor, originalMaxPositionEmbeddings: original,
                         betaFast: Float(try keys.number("beta_fast", default: 32)),
                         betaSlow: Float(try keys.number("beta_slow", default: 1)),
                         attentionFactor: keys.has("attention_factor") ? Float(try keys.number("attention_factor")) : nil,
                         mscale: keys.has("mscale") ? Float(try keys.number("mscale")) : nil,
                         mscaleAllDim: keys.has("mscale_all_dim") ? Float(try keys.number("mscale_all_dim")) : nil,
                         truncate: try keys.bool("truncate", default: true))
        default:
            throw keys.invalid("rope_type", "'\(type)' is not supported (default, linear, dynamic, llama3, yarn)")
        }
    }

    /// The rotary embedding this configuration describes.
    public func rotaryEmbedding() throws -> RotaryEmbedding {
        try RotaryEmbedding(dimension: rotaryDimension, base: ropeTheta, scaling: ropeScaling, layout: ropeLayout)
    }
}

extension TransformerConfiguration {
    /// Reads a config.json's keys with `modelType`'s defaults.
    init(keys: ConfigurationKeys, modelType: String) throws {
        self.modelType = modelType
        vocabularySize = try keys.integer("vocab_size")
        hiddenSize = try keys.integer("hidden_size")
        intermediateSize = try keys.integer("intermediate_size")
        layerCount = try keys.integer("num_hidden_layers")
        headCount = try keys.integer("num_attention_heads")
        keyValueHeadCount = try keys.integer("num_key_value_heads", default: headCount)
        if keys.has("head_dim") {
            headDimension = try keys.integer("head_dim")
        } else {
            guard hiddenSize % headCount == 0 else {
                throw keys.invalid("num_attention_heads", "\(headCount) does not divide hidden_size \(hiddenSize) and head_dim is absent")
            }
            headDimension = hiddenSize / headCount
        }
        guard headCount % keyValueHeadCount == 0 else {
            throw keys.invalid("num_key_value_heads", "\(keyValueHeadCount) does not divide num_attention_heads \(headCount)")
        }
        let defaults: (eps: Double, theta: Double, positions: Int) = switch modelType {
        case "mixtral": (1e-5, 1e6, 4096 * 32)
        case "mistral": (1e-6, 10000, 4096 * 32)
        case "qwen2": (1e-6, 10000, 32768)
        default: (1e-6, 10000, 2048)
        }
        rmsNormEpsilon = Float(try keys.number("rms_norm_eps", default: defaults.eps))
        maxPositionEmbeddings = try keys.integer("max_position_embeddings", default: defaults.positions)
        tieWordEmbeddings = try keys.bool("tie_word_embeddings", default: false)
        switch modelType {
        case "qwen2":
            queryKeyValueBias = true
            outputProjectionBias = false
            slidingWindow = try keys.bool("use_sliding_window", default: false) && keys.has("sliding_window")
                ? try keys.integer("sliding_window") : nil
        case "llama":
            queryKeyValueBias = try keys.bool("attention_bias", default: false)
            outputProjectionBias = queryKeyValueBias
            slidingWindow = nil
            guard try !keys.bool("mlp_bias", default: false) else { throw keys.invalid("mlp_bias", "MLP biases are not supported") }
        default:  // mistral, mixtral
            queryKeyValueBias = false
            outputProjectionBias = false
            slidingWindow = keys.has("sliding_window") ? try keys.integer("sliding_window") : nil
        }
        if modelType == "mixtral" {
            let count = try keys.integer("num_local_experts", default: 8)
            let perToken = try keys.integer("num_experts_per_tok", default: 2)
            guard perToken <= count else { throw keys.invalid("num_experts_per_tok", "\(perToken) exceeds num_local_experts \(count)") }
            experts = (count, perToken)
        } else {
            experts = nil
        }
        bosTokenID = keys.has("bos_token_id") ? try keys.integer("bos_token_id", minimum: 0) : nil
        eosTokenIDs = try keys.integers("eos_token_id")
        ropeLayout = .halfSplit
        // transformers 5 writes rope_parameters; transformers 4 rope_theta + rope_scaling.
        let rope = try keys.nested("rope_parameters")
        let scalingKeys = try rope ?? keys.nested("rope_scaling")
        ropeTheta = Float(try rope?.number("rope_theta", default: keys.number("rope_theta", default: defaults.theta))
            ?? keys.number("rope_theta", default: defaults.theta))
        let partial = try rope?.number("partial_rotary_factor", default: 1) ?? keys.number("partial_rotary_factor", default: 1)
        guard partial > 0, partial <= 1 else { throw keys.invalid("partial_rotary_factor", "\(partial) is outside (0, 1]") }
        rotaryDimension = Int(Double(headDimension) * partial)
        guard rotaryDimension >= 2, rotaryDimension % 2 == 0, rotaryDimension <= headDimension else {
            throw keys.invalid("partial_rotary_factor", "gives \(rotaryDimension) rotated dimensions of \(headDimension)")
        }
        let positions = maxPositionEmbeddings
        ropeScaling = try scalingKeys.map { try Self.scaling($0, maxPositionEmbeddings: positions) } ?? .none
    }
}

/// A Mamba selective state-space model (`model_type` `mamba`).
public struct MambaConfiguration: Sendable, Equatable {
    /// Rows of the embedding matrix (`vocab_size`).
    public var vocabularySize: Int
    /// Width of the residual stream (`hidden_size`).
    public var hiddenSize: Int
    /// Mamba blocks (`num_hidden_layers`).
    public var layerCount: Int
    /// The SSM state per channel (`state_size`, d_state).
    public var stateSize: Int
    /// Inner channels: expand × hidden_size (`intermediate_size`).
    public var innerSize: Int
    /// Width of the causal depthwise convolution (`conv_kernel`, default 4).
    public var convolutionKernel: Int
    /// Rank of the dt projection; `"auto"` means ceil(hidden_size / 16).
    public var timeStepRank: Int
    /// in_proj and out_proj have biases.
    public var useBias: Bool
    /// The depthwise convolution has a bias.
    public var useConvolutionBias: Bool
    /// Epsilon added inside RMSNorm (`layer_norm_epsilon`, default 1e-5).
    public var normEpsilon: Float
    /// The output head reuses the embedding matrix (`tie_word_embeddings`, default true).
    public var tieWordEmbeddings: Bool
    /// Beginning-of-sequence token id (`bos_token_id`), if set.
    public var bosTokenID: Int?
    /// End-of-sequence token ids (`eos_token_id`, one or a list; empty when absent).
    public var eosTokenIDs: [Int]
}

extension MambaConfiguration {
    /// Reads a config.json's keys.
    init(keys: ConfigurationKeys) throws {
        vocabularySize = try keys.integer("vocab_size")
        hiddenSize = try keys.integer("hidden_size")
        layerCount = try keys.integer("num_hidden_layers")
        stateSize = try keys.integer("state_size", default: 16)
        let expand = try keys.integer("expand", default: 2)
        innerSize = try keys.integer("intermediate_size", default: expand * hiddenSize)
        guard innerSize <= ConfigurationKeys.largestInteger else {
            throw keys.invalid("expand", "expand × hidden_size exceeds \(ConfigurationKeys.largestInteger)")
        }
        convolutionKernel = try keys.integer("conv_kernel", default: 4)
        if keys.has("time_step_rank"), case .string("auto") = try keys.value("time_step_rank") {
            timeStepRank = (hiddenSize + 15) / 16
        } else {
            timeStepRank = try keys.integer("time_step_rank", default: (hiddenSize + 15) / 16)
        }
        // numerics.md: read these from the checkpoint rather than trusting defaults.
        useBias = try keys.bool("use_bias", default: false)
        useConvolutionBias = try keys.bool("use_conv_bias", default: true)
        normEpsilon = Float(try keys.number("layer_norm_epsilon", default: 1e-5))
        tieWordEmbeddings = try keys.bool("tie_word_embeddings", default: true)
        bosTokenID = keys.has("bos_token_id") ? try keys.integer("bos_token_id", minimum: 0) : nil
        eosTokenIDs = try keys.integers("eos_token_id")
    }
}
