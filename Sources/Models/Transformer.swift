import Foundation

/// Why a forward pass was refused.
public enum ModelError: Error, Equatable, CustomStringConvertible {
    case tokenOutOfRange(token: Int, vocabularySize: Int)
    case tooManyTokens(count: Int, maximum: Int)
    case cacheMismatch(String)

    public var description: String {
        switch self {
        case let .tokenOutOfRange(token, size): return "token id \(token) is outside the vocabulary of \(size)"
        case let .tooManyTokens(count, maximum): return "\(count) tokens in one step; this model was built for at most \(maximum)"
        case let .cacheMismatch(detail): return "KV cache does not fit the model: \(detail)"
        }
    }
}

/// A Llama-family decoder (`llama`, `mistral`, `qwen2`): RMSNorm, RoPE, grouped-query
/// attention over the paged KV cache, SwiGLU MLP, tied or separate output head. Tensor names
/// are the checkpoint's. Activation buffers are allocated once, for `maximumTokens` tokens
/// per step; a step allocates nothing else but the returned logits.
public final class TransformerModel {
    public let configuration: TransformerConfiguration
    public let context: ComputeContext
    /// Tokens one `forward` call may process (a prompt chunk or a batch of decode rows).
    public let maximumTokens: Int
    let rope: RotaryEmbedding

    struct Layer {
        let inputNorm: [Float]            // [hidden]
        let q, k, v, o: Tensor            // [heads·d, hidden], [kv·d, hidden] ×2, [hidden, heads·d]
        let qBias, kBias, vBias: [Float]  // [heads·d], [kv·d], [kv·d] (empty without biases)
        let oBias: [Float]                // [hidden] (empty without)
        let postNorm: [Float]             // [hidden]
        let gate, up, down: Tensor        // [inter, hidden], [inter, hidden], [hidden, inter]
    }
    let layers: [Layer]
    let embedding: Tensor                 // [vocab, hidden]
    let finalNorm: [Float]                // [hidden]
    let outputHead: Tensor                // [vocab, hidden] (the embedding when tied)

    // Activations, [maximumTokens, ·] each.
    let hidden, normed, attentionOutput, projected: FloatBuffer  // [n, hidden], [n, hidden], [n, heads·d], [n, hidden]
    let queries, keys, values: FloatBuffer                       // [n, heads·d], [n, kv·d], [n, kv·d]
    let gateOut, upOut: FloatBuffer                              // [n, inter]
    let cosTable, sinTable: UnsafeMutablePointer<Float>          // [rotary/2]

    public init(files: ModelFiles, context: ComputeContext, maximumTokens: Int = 256) throws {
        guard case let .transformer(c) = files.configuration, c.experts == nil else {
            throw ConfigurationError.invalidValue(path: files.weights.path, key: "model_type", detail: "not a dense transformer")
        }
        configuration = c
        self.context = context
        self.maximumTokens = maximumTokens
        rope = try c.rotaryEmbedding()
        let w = files.weights, h = c.hiddenSize, d = c.headDimension
        let qDim = c.headCount * d, kvDim = c.keyValueHeadCount * d
        func floats(_ name: String, _ count: Int) throws -> [Float] { try w.tensor(name, shape: [count]).floats() }
        func optionalFloats(_ name: String, _ count: Int, _ present: Bool) throws -> [Float] { present ? try floats(name, count) : [] }
        layers = try (0..<c.layerCount).map { i in
            let p = "model.layers.\(i)."
            return Layer(
                inputNorm: try floats(p + "input_layernorm.weight", h),
                q: try w.tensor(p + "self_attn.q_proj.weight", shape: [qDim, h]),
                k: try w.tensor(p + "self_attn.k_proj.weight", shape: [kvDim, h]),
                v: try w.tensor(p + "self_attn.v_proj.weight", shape: [kvDim, h]),
                o: try w.tensor(p + "self_attn.o_proj.weight", shape: [h, qDim]),
                qBias: try optionalFloats(p + "self_attn.q_proj.bias", qDim, c.queryKeyValueBias),
                kBias: try optionalFloats(p + "self_attn.k_proj.bias", kvDim, c.queryKeyValueBias),
                vBias: try optionalFloats(p + "self_attn.v_proj.bias", kvDim, c.queryKeyValueBias),
                oBias: try optionalFloats(p + "self_attn.o_proj.bias", h, c.outputProjectionBias),
                postNorm: try floats(p + "post_attention_layernorm.weight", h),
                gate: try w.tensor(p + "mlp.gate_proj.weight", shape: [c.intermediateSize, h]),
                up: try w.tensor(p + "mlp.up_proj.weight", shape: [c.intermediateSize, h]),
                down: try w.tensor(p + "mlp.down_proj.weight", shape: [h, c.intermediateSize]))
        }
        embedding = try w.tensor("model.embed_tokens.weight", shape: [c.vocabularySize, h])
        finalNorm = try floats("model.norm.weight", h)
        outputHead = c.tieWordEmbeddings ? embedding : try w.tensor("lm_head.weight", shape: [c.vocabularySize, h])
        let n = maximumTokens
        hidden = try FloatBuffer(rows: n, columns: h)
        normed = try FloatBuffer(rows: n, columns: h)
        attentionOutput = try FloatBuffer(rows: n, columns: qDim)
        projected = try FloatBuffer(rows: n, columns: h)
        queries = try FloatBuffer(rows: n, columns: qDim)
        keys = try FloatBuffer(rows: n, columns: kvDim)
        values = try FloatBuffer(rows: n, columns: kvDim)
        gateOut = try FloatBuffer(rows: n, columns: c.intermediateSize)
        upOut = try FloatBuffer(rows: n, columns: c.intermediateSize)
        cosTable = .allocate(capacity: max(1, rope.dimension / 2))
        sinTable = .allocate(capacity: max(1, rope.dimension / 2))
    }

    deinit {
        cosTable.deallocate()
        sinTable.deallocate()
    }

    /// A KV cache shaped for this model, within `memoryBudget` bytes.
    public func makeCache(memoryBudget: Int, elementType: ElementType = .f16, blockSize: Int = 16) throws -> PagedKVCache {
        try PagedKVCache(configuration: KVCacheConfiguration(layers: configuration.layerCount, keyValueHeads: configuration.keyValueHeadCount,
                                                             headDimension: configuration.headDimension, blockSize: blockSize,
                                                             elementType: elementType, memoryBudget: memoryBudget))
    }

    /// Runs `tokens` at the end of `sequence` (its keys and values are added to `cache`) and
    /// returns logits: for every new token (`allLogits`) or only the last one.
    /// Output: [tokens.count or 1][vocabulary] floats, row-major.
    public func forward(_ tokens: [Int], sequence: SequenceID, cache: PagedKVCache, allLogits: Bool = false) throws -> [Float] {
        let c = configuration
        let n = tokens.count
        guard n > 0 else { return [] }
        guard n <= maximumTokens else { throw ModelError.tooManyTokens(count: n, maximum: maximumTokens) }
        guard cache.configuration.layers == c.layerCount, cache.configuration.keyValueHeads == c.keyValueHeadCount,
              cache.configuration.headDimension == c.headDimension else {
            throw ModelError.cacheMismatch("\(cache.configuration) for \(c.layerCount) layers of \(c.keyValueHeadCount)×\(c.headDimension)")
        }
        for token in tokens where token < 0 || token >= c.vocabularySize {
            throw ModelError.tokenOutOfRange(token: token, vocabularySize: c.vocabularySize)
        }
        let start = try cache.length(of: sequence)
        try cache.reserve(sequence, tokens: n)

        // Embedding rows (dequantized if the embedding is quantized).
        for (i, token) in tokens.enumerated() { try embedding.dequantizeRow(token, into: hidden.row(i)) }
        let frequencies = rope.inverseFrequencies(sequenceLength: start + n)
        for (index, layer) in layers.enumerated() {
            try Kernels.rmsNorm(hidden, weight: layer.inputNorm, epsilon: c.rmsNormEpsilon, rows: n, output: normed)
            try Kernels.matmul(weight: layer.q, input: normed, rows: n, output: queries, context: context)
            try Kernels.matmul(weight: layer.k, input: normed, rows: n, output: keys, context: context)
            try Kernels.matmul(weight: layer.v, input: normed, rows: n, output: values, context: context)
            try Kernels.addBias(queries, bias: layer.qBias, rows: n)
            try Kernels.addBias(keys, bias: layer.kBias, rows: n)
            try Kernels.addBias(values, bias: layer.vBias, rows: n)
            for i in 0..<n {
                rope.fillTables(position: start + i, frequencies: frequencies, cos: cosTable, sin: sinTable)
                try rope.apply(to: queries.row(i), heads: c.headCount, headDimension: c.headDimension, cos: cosTable, sin: sinTable)
                try rope.apply(to: keys.row(i), heads: c.keyValueHeadCount, headDimension: c.headDimension, cos: cosTable, sin: sinTable)
                try cache.write(sequence, layer: index, position: start + i, keys: keys.row(i), values: values.row(i))
            }
            try PagedAttention.attend(queries: queries, rows: n, firstPosition: start, cache: cache, sequence: sequence,
                                      layer: index, window: c.slidingWindow, output: attentionOutput, context: context)
            try Kernels.matmul(weight: layer.o, input: attentionOutput, rows: n, output: projected, context: context)
            try Kernels.addBias(projected, bias: layer.oBias, rows: n)
            try Kernels.add(hidden, projected, rows: n, output: hidden)
            try Kernels.rmsNorm(hidden, weight: layer.postNorm, epsilon: c.rmsNormEpsilon, rows: n, output: normed)
            try Kernels.matmul(weight: layer.gate, input: normed, rows: n, output: gateOut, context: context)
            try Kernels.matmul(weight: layer.up, input: normed, rows: n, output: upOut, context: context)
            try Kernels.swiglu(gate: gateOut, up: upOut, rows: n, output: gateOut)
            try Kernels.matmul(weight: layer.down, input: gateOut, rows: n, output: projected, context: context)
            try Kernels.add(hidden, projected, rows: n, output: hidden)
        }
        try cache.append(sequence, tokens: tokens)
        try Kernels.rmsNorm(hidden, weight: finalNorm, epsilon: c.rmsNormEpsilon, rows: n, output: normed)
        let first = allLogits ? 0 : n - 1
        let rows = n - first
        let selected = try FloatBuffer(rows: rows, columns: c.hiddenSize)
        selected.pointer.update(from: normed.row(first), count: rows * c.hiddenSize)
        let logits = try FloatBuffer(rows: rows, columns: c.vocabularySize)
        try Kernels.matmul(weight: outputHead, input: selected, rows: rows, output: logits, context: context)
        return logits.values()
    }
}
