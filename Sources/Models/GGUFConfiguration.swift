/// A GGUF file's architecture metadata as the same configuration a config.json gives, and
/// its tensor names as Hugging Face checkpoint names.
enum GGUFConfiguration {
    static func configuration(_ file: GGUFFile, vocabularySize: Int) throws -> ModelConfiguration {
        let path = file.path
        guard let architecture = file["general.architecture"]?.string else {
            throw ConfigurationError.missingKey(path: path, key: "general.architecture")
        }
        func integer(_ key: String, default fallback: Int? = nil) throws -> Int {
            if let value = file["\(architecture).\(key)"] {
                guard let integer = value.integer, integer >= 0, integer <= ConfigurationKeys.largestInteger else {
                    throw ConfigurationError.invalidValue(path: path, key: "\(architecture).\(key)",
                                                          detail: "expected an integer from 0 to \(ConfigurationKeys.largestInteger)")
                }
                return integer
            }
            if let fallback { return fallback }
            throw ConfigurationError.missingKey(path: path, key: "\(architecture).\(key)")
        }
        func number(_ key: String, default fallback: Double) throws -> Double {
            guard let value = file["\(architecture).\(key)"] else { return fallback }
            guard let number = value.number, number.isFinite else {
                throw ConfigurationError.invalidValue(path: path, key: "\(architecture).\(key)", detail: "expected a number")
            }
            return number
        }
        func positive(_ value: Int, _ key: String) throws -> Int {
            guard value > 0 else { throw ConfigurationError.invalidValue(path: path, key: "\(architecture).\(key)", detail: "must be positive") }
            return value
        }
        let vocabulary = try integer("vocab_size", default: vocabularySize)
        let eos = file["tokenizer.ggml.eos_token_id"]?.integer.map { [$0] } ?? []
        let bos = file["tokenizer.ggml.bos_token_id"]?.integer
        switch architecture {
        case "llama", "qwen2":
            let hidden = try positive(try integer("embedding_length"), "embedding_length")
            let heads = try positive(try integer("attention.head_count"), "attention.head_count")
            let kvHeads = try positive(try integer("attention.head_count_kv", default: heads), "attention.head_count_kv")
            guard heads % kvHeads == 0 else {
                throw ConfigurationError.invalidValue(path: path, key: "\(architecture).attention.head_count_kv", detail: "\(kvHeads) does not divide \(heads)")
            }
            let headDimension = try positive(try integer("attention.key_length", default: hidden / heads), "attention.key_length")
            let experts = try integer("expert_count", default: 0)
            var scaling = RopeScaling.none
            switch file["\(architecture).rope.scaling.type"]?.string {
            case nil, "none": break
            case "linear": scaling = .linear(factor: Float(try number("rope.scaling.factor", default: 1)))
            case "yarn":
                scaling = .yarn(factor: Float(try number("rope.scaling.factor", default: 1)),
                                originalMaxPositionEmbeddings: try integer("rope.scaling.original_context_length"))
            case let other?:
                throw ConfigurationError.invalidValue(path: path, key: "\(architecture).rope.scaling.type", detail: "'\(other)' is not supported")
            }
            let configuration = TransformerConfiguration(
                modelType: architecture == "qwen2" ? "qwen2" : experts > 0 ? "mixtral" : "llama",
                vocabularySize: vocabulary, hiddenSize: hidden,
                intermediateSize: try positive(try integer("feed_forward_length"), "feed_forward_length"),
                layerCount: try positive(try integer("block_count"), "block_count"),
                headCount: heads, keyValueHeadCount: kvHeads, headDimension: headDimension,
                rmsNormEpsilon: Float(try number("attention.layer_norm_rms_epsilon", default: 1e-5)),
                maxPositionEmbeddings: try integer("context_length", default: 4096),
                ropeTheta: Float(try number("rope.freq_base", default: 10000)), ropeScaling: scaling,
                rotaryDimension: try integer("rope.dimension_count", default: headDimension),
                // llama.cpp's converter permutes Q/K rows of arch `llama` so that adjacent
                // pairs rotate together; Qwen2 keeps the half-split layout.
                ropeLayout: architecture == "llama" ? .adjacentPairs : .halfSplit,
                tieWordEmbeddings: file.tensors["output.weight"] == nil,
                slidingWindow: nil,
                queryKeyValueBias: file.tensors["blk.0.attn_q.bias"] != nil,
                outputProjectionBias: file.tensors["blk.0.attn_output.bias"] != nil,
                experts: experts > 0 ? (experts, try integer("expert_used_count", default: 2)) : nil,
                bosTokenID: bos, eosTokenIDs: eos)
            if let experts = configuration.experts, experts.perToken < 1 || experts.perToken > experts.count {
                throw ConfigurationError.invalidValue(path: path, key: "\(architecture).expert_used_count",
                                                      detail: "\(experts.perToken) is not from 1 to expert_count \(experts.count)")
            }
            guard configuration.rotaryDimension % 2 == 0, configuration.rotaryDimension <= headDimension else {
                throw ConfigurationError.invalidValue(path: path, key: "\(architecture).rope.dimension_count", detail: "must be even and ≤ the head dimension")
            }
            return .transformer(configuration)
        case "mamba":
            let hidden = try positive(try integer("embedding_length"), "embedding_length")
            return .mamba(MambaConfiguration(
                vocabularySize: vocabulary, hiddenSize: hidden,
                layerCount: try positive(try integer("block_count"), "block_count"),
                stateSize: try positive(try integer("ssm.state_size"), "ssm.state_size"),
                innerSize: try positive(try integer("ssm.inner_size"), "ssm.inner_size"),
                convolutionKernel: try positive(try integer("ssm.conv_kernel"), "ssm.conv_kernel"),
                timeStepRank: try positive(try integer("ssm.time_step_rank"), "ssm.time_step_rank"),
                useBias: file.tensors["blk.0.ssm_in.bias"] != nil,
                useConvolutionBias: file.tensors["blk.0.ssm_conv1d.bias"] != nil,
                normEpsilon: Float(try number("attention.layer_norm_rms_epsilon", default: 1e-5)),
                tieWordEmbeddings: file.tensors["output.weight"] == nil,
                bosTokenID: bos, eosTokenIDs: eos))
        default:
            throw ConfigurationError.unknownModelType(path: path, modelType: architecture)
        }
    }

    /// Checkpoint name → (GGUF name, expert index for stacked expert tensors).
    static func checkpointNames(_ file: GGUFFile, configuration: ModelConfiguration) -> [String: (gguf: String, expert: Int?)] {
        var names: [String: (gguf: String, expert: Int?)] = [:]
        let isMamba: Bool
        if case .mamba = configuration { isMamba = true } else { isMamba = false }
        let root = isMamba ? "backbone" : "model"
        let layerNames: [String: String] = isMamba ? [
            "attn_norm": "norm", "ssm_in": "mixer.in_proj", "ssm_conv1d": "mixer.conv1d", "ssm_x": "mixer.x_proj",
            "ssm_dt": "mixer.dt_proj", "ssm_d": "mixer.D", "ssm_out": "mixer.out_proj",
            // GGUF stores A = -exp(A_log) itself, so it gets its own name.
            "ssm_a": "mixer.A",
        ] : [
            "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
            "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
            "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
            "ffn_gate_inp": "block_sparse_moe.gate",
        ]
        let experts: [String: String] = ["ffn_gate_exps": "w1", "ffn_down_exps": "w2", "ffn_up_exps": "w3"]
        for name in file.tensorNames {
            switch name {
            case "token_embd.weight": names[isMamba ? "backbone.embeddings.weight" : "model.embed_tokens.weight"] = (name, nil)
            case "output_norm.weight": names[isMamba ? "backbone.norm_f.weight" : "model.norm.weight"] = (name, nil)
            case "output.weight": names["lm_head.weight"] = (name, nil)
            default:
                // blk.N.kind.suffix, or blk.N.kind for Mamba's ssm_a and ssm_d.
                let parts = name.split(separator: ".")
                guard parts.count == 3 || parts.count == 4, parts[0] == "blk", let layer = Int(parts[1]) else { continue }
                let kind = String(parts[2]), suffix = parts.count == 4 ? String(parts[3]) : ""
                if let local = layerNames[kind] {
                    // Mamba's A and D are plain parameters, not .weight tensors.
                    let checkpointSuffix = (kind == "ssm_a" || kind == "ssm_d") ? "" : "." + suffix
                    names["\(root).layers.\(layer).\(local)\(checkpointSuffix)"] = (name, nil)
                } else if let w = experts[kind], let count = file.tensors[name]?.shape.first {
                    for e in 0..<count { names["\(root).layers.\(layer).block_sparse_moe.experts.\(e).\(w).\(suffix)"] = (name, e) }
                }
            }
        }
        return names
    }
}
