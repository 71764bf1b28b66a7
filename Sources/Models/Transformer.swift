import Foundation

/// New tokens for one sequence in a (batched) forward step.
public struct SequenceChunk: Sendable {
    /// The KV cache sequence the tokens extend.
    public var sequence: SequenceID
    /// Token ids to append, in order.
    public var tokens: [Int]
    /// Logits for every token (prefill scoring, speculative verification) or just the last.
    public var allLogits: Bool

    /// A chunk of `tokens` for `sequence`; by default only the last token's logits are returned.
    public init(sequence: SequenceID, tokens: [Int], allLogits: Bool = false) {
        self.sequence = sequence
        self.tokens = tokens
        self.allLogits = allLogits
    }
}

/// Why a forward pass was refused.
public enum ModelError: Error, Equatable, CustomStringConvertible {
    case tokenOutOfRange(token: Int, vocabularySize: Int)
    case tooManyTokens(count: Int, maximum: Int)
    case cacheMismatch(String)

    /// A one-line description for logs and error messages.
    public var description: String {
        switch self {
        case let .tokenOutOfRange(token, size): return "token id \(token) is outside the vocabulary of \(size)"
        case let .tooManyTokens(count, maximum): return "\(count) tokens in one step; this model was built for at most \(maximum)"
        case let .cacheMismatch(detail): return "KV cache does not fit the model: \(detail)"
        }
    }
}

/// A Llama-family decoder (`llama`, `mistral`, `qwen2`, and `mixtral`'s mixture of
/// experts): RMSNorm, RoPE, grouped-query attention over the paged KV cache, SwiGLU MLP or
/// routed SwiGLU experts, tied or separate output head. Tensor names are the checkpoint's. Activation buffers are allocated once, for `maximumTokens` tokens
/// per step; a step allocates nothing else but the returned logits.
public final class TransformerModel {
    /// The architecture the weights were loaded for.
    public let configuration: TransformerConfiguration
    /// The thread pool and scratch memory its kernels run on.
    public let context: ComputeContext
    /// Tokens one `forward` call may process (a prompt chunk or a batch of decode rows).
    public let maximumTokens: Int
    let rope: RotaryEmbedding

    struct Layer {
        let inputNorm: [Float]            // [hidden]
        let q, k, v, o: Tensor            // [heads·d, hidden], [kv·d, hidden] ×2, [hidden, heads·d]
        let qkv: [Tensor]                 // [q, k, v]: one parallel pass for the three (see Kernels.matmul(weights:))
        let qBias, kBias, vBias: [Float]  // [heads·d], [kv·d], [kv·d] (empty without biases)
        let oBias: [Float]                // [hidden] (empty without)
        let postNorm: [Float]             // [hidden]
        let mlp: MLP
    }

    /// One SwiGLU MLP: down(silu(gate x) · up x).
    struct Expert {
        let gate, up, down: Tensor        // [inter, hidden], [inter, hidden], [hidden, inter]
        let gateUp: [Tensor]              // [gate, up]

        init(gate: Tensor, up: Tensor, down: Tensor) {
            (self.gate, self.up, self.down, gateUp) = (gate, up, down, [gate, up])
        }
    }

    enum MLP {
        case dense(Expert)
        /// Mixtral: router [experts, hidden] and experts w1 (gate), w3 (up), w2 (down).
        case experts(router: Tensor, experts: [Expert])
    }
    let layers: [Layer]
    let embedding: Tensor                 // [vocab, hidden]
    let finalNorm: [Float]                // [hidden]
    let outputHead: Tensor                // [vocab, hidden] (the embedding when tied)

    // Activations, [maximumTokens, ·] each.
    let hidden, normed, attentionOutput, projected: FloatBuffer  // [n, hidden], [n, hidden], [n, heads·d], [n, hidden]
    let queries, keys, values: FloatBuffer                       // [n, heads·d], [n, kv·d], [n, kv·d]
    let queriesKeysValues: [FloatBuffer]                         // [queries, keys, values]
    let gateOut, upOut: FloatBuffer                              // [n, inter]
    let gateUpOut: [FloatBuffer]                                 // [gateOut, upOut]
    let routerLogits: FloatBuffer                                // [n, experts]
    let expertInput, expertOutput: FloatBuffer                   // [n, hidden]: one expert's tokens, gathered
    // Mixture-of-experts routing, allocated once (empty for dense models); k = experts per token.
    var chosenExpert: [Int]                                      // [n·k] expert of each (token, slot)
    var chosenWeight: [Float]                                    // [n·k] its renormalized weight
    var routedChoice: [Int]                                      // [n] (token·k + slot) of each expertInput row
    var batchedExperts: [(expert: Int, rows: Range<Int>)]        // [experts per pass] gathered experts and their expertInput rows
    var products: [Kernels.GroupedProduct]                       // [2 · experts per pass] one grouped pass's matrices
    let cosTable, sinTable: UnsafeMutablePointer<Float>          // [rotary/2]
    let outputScratch = OutputScratch()  // the head's gathered rows and logits, grown on demand
    let layout = StepLayout()            // the step's row layout, refilled each step
    var positions: [Int]                 // [chunks] each chunk's first position, refilled each step
    var attentionRows: [AttentionRows]   // [chunks] each chunk's rows for the batched attention call

    /// Builds the model from `files` (a transformer) with activation buffers for `maximumTokens` tokens.
    public init(files: ModelFiles, context: ComputeContext, maximumTokens: Int = 256) throws {
        guard case let .transformer(c) = files.configuration else {
            throw ConfigurationError.invalidValue(path: files.weights.path, key: "model_type", detail: "not a transformer")
        }
        configuration = c
        self.context = context
        self.maximumTokens = maximumTokens
        rope = try c.rotaryEmbedding()
        let w = files.weights, h = c.hiddenSize, d = c.headDimension
        let qDim = c.headCount * d, kvDim = c.keyValueHeadCount * d
        func floats(_ name: String, _ count: Int) throws -> [Float] { try w.tensor(name, shape: [count]).floats() }
        func optionalFloats(_ name: String, _ count: Int, _ present: Bool) throws -> [Float] { present ? try floats(name, count) : [] }
        // A weight of matrix products: Q4_0 and Q8_0 ones in the interleaved layout the kernels read fastest.
        func matrix(_ name: String, _ shape: [Int]) throws -> Tensor { try w.tensor(name, shape: shape).interleavedForMatmul() }
        func expert(_ prefix: String, gate: String, up: String, down: String) throws -> Expert {
            Expert(gate: try matrix(prefix + gate, [c.intermediateSize, h]),
                   up: try matrix(prefix + up, [c.intermediateSize, h]),
                   down: try matrix(prefix + down, [h, c.intermediateSize]))
        }
        layers = try (0..<c.layerCount).map { i in
            let p = "model.layers.\(i)."
            let mlp: MLP
            if let experts = c.experts {
                let moe = p + "block_sparse_moe."
                mlp = .experts(router: try matrix(moe + "gate.weight", [experts.count, h]),
                               experts: try (0..<experts.count).map {
                                   try expert(moe + "experts.\($0).", gate: "w1.weight", up: "w3.weight", down: "w2.weight")
                               })
            } else {
                mlp = .dense(try expert(p + "mlp.", gate: "gate_proj.weight", up: "up_proj.weight", down: "down_proj.weight"))
            }
            let q = try matrix(p + "self_attn.q_proj.weight", [qDim, h])
            let k = try matrix(p + "self_attn.k_proj.weight", [kvDim, h])
            let v = try matrix(p + "self_attn.v_proj.weight", [kvDim, h])
            return Layer(
                inputNorm: try floats(p + "input_layernorm.weight", h),
                q: q, k: k, v: v, o: try matrix(p + "self_attn.o_proj.weight", [h, qDim]), qkv: [q, k, v],
                qBias: try optionalFloats(p + "self_attn.q_proj.bias", qDim, c.queryKeyValueBias),
                kBias: try optionalFloats(p + "self_attn.k_proj.bias", kvDim, c.queryKeyValueBias),
                vBias: try optionalFloats(p + "self_attn.v_proj.bias", kvDim, c.queryKeyValueBias),
                oBias: try optionalFloats(p + "self_attn.o_proj.bias", h, c.outputProjectionBias),
                postNorm: try floats(p + "post_attention_layernorm.weight", h),
                mlp: mlp)
        }
        // A tied embedding is also the output head, the largest matrix: it takes the matrix
        // layout (rows are looked up from the interleaved layout just as well).
        let embeddingShape = [c.vocabularySize, h]
        embedding = c.tieWordEmbeddings ? try matrix("model.embed_tokens.weight", embeddingShape)
            : try w.tensor("model.embed_tokens.weight", shape: embeddingShape)
        finalNorm = try floats("model.norm.weight", h)
        outputHead = c.tieWordEmbeddings ? embedding : try matrix("lm_head.weight", [c.vocabularySize, h])
        let n = maximumTokens
        hidden = try FloatBuffer(rows: n, columns: h)
        normed = try FloatBuffer(rows: n, columns: h)
        attentionOutput = try FloatBuffer(rows: n, columns: qDim)
        projected = try FloatBuffer(rows: n, columns: h)
        queries = try FloatBuffer(rows: n, columns: qDim)
        keys = try FloatBuffer(rows: n, columns: kvDim)
        values = try FloatBuffer(rows: n, columns: kvDim)
        queriesKeysValues = [queries, keys, values]
        gateOut = try FloatBuffer(rows: n, columns: c.intermediateSize)
        upOut = try FloatBuffer(rows: n, columns: c.intermediateSize)
        gateUpOut = [gateOut, upOut]
        routerLogits = try FloatBuffer(rows: n, columns: c.experts?.count ?? 1)
        expertInput = try FloatBuffer(rows: n, columns: h)
        expertOutput = try FloatBuffer(rows: n, columns: h)
        let choices = n * (c.experts?.perToken ?? 0)
        chosenExpert = [Int](repeating: 0, count: choices)
        chosenWeight = [Float](repeating: 0, count: choices)
        routedChoice = [Int](repeating: 0, count: c.experts == nil ? 0 : n)
        batchedExperts = Array(repeating: (0, 0..<0), count: Kernels.GroupedProduct.groupCapacity / 2)
        products = []
        products.reserveCapacity(Kernels.GroupedProduct.groupCapacity)
        cosTable = .allocate(capacity: max(1, rope.dimension / 2))
        sinTable = .allocate(capacity: max(1, rope.dimension / 2))
        positions = []
        positions.reserveCapacity(maximumTokens)
        attentionRows = []
        attentionRows.reserveCapacity(maximumTokens)
    }

    deinit {
        cosTable.deallocate()
        sinTable.deallocate()
    }

    /// output = down(silu(gate · input) · (up · input)) over the groups' rows.
    func run(_ mlp: Expert, input: FloatBuffer, groups: [RowGroup], output: FloatBuffer) throws {
        let rows = groups.last?.rows.upperBound ?? 0
        try groups.matmul(mlp.gateUp, input, gateUpOut, context: context)
        try Kernels.swiglu(gate: gateOut, up: upOut, rows: rows, output: gateOut)
        try groups.matmul(mlp.down, gateOut, output, context: context)
    }

    /// Mixtral's sparse MLP, added into `hidden`: softmax over all experts' router logits
    /// (float32), the top k per token renormalized to sum to 1, then each selected expert
    /// runs once over the tokens routed to it (gathered into one matrix) and its output is
    /// added back scaled by each token's weight. Unselected experts' weights are not read.
    /// Tokens are routed group by group, so an expert's rows never mix decode rows with a
    /// prompt chunk (see `RowGroup`).
    func mixtureOfExperts(router: Tensor, experts: [Expert], groups: [RowGroup]) throws {
        let k = configuration.experts!.perToken, count = experts.count, h = configuration.hiddenSize
        let n = groups.last?.rows.upperBound ?? 0
        try groups.matmul(router, normed, routerLogits, context: context)
        try Kernels.softmax(routerLogits, rows: n)
        for token in 0..<n {
            // The k most probable experts, largest first (ties: lower index), by k scans of
            // `count` values: k and count are small, and this allocates nothing.
            let probabilities = routerLogits.row(token), first = token * k
            var total: Float = 0
            for slot in 0..<k {
                var best = -1
                for expert in 0..<count where !(first..<first + slot).contains(where: { chosenExpert[$0] == expert }) {
                    if best < 0 || probabilities[expert] > probabilities[best] { best = expert }
                }
                chosenExpert[first + slot] = best
                chosenWeight[first + slot] = probabilities[best]
                total += probabilities[best]
            }
            for slot in 0..<k { chosenWeight[first + slot] /= total }
        }
        for group in groups {
            // Experts are gathered into expertInput one after another, as many as its rows and
            // one grouped pass (gate and up of four experts) hold, and run together.
            var rows = 0, batched = 0
            for index in experts.indices {
                var count = 0  // each token picks an expert at most once
                for choice in group.rows.lowerBound * k..<group.rows.upperBound * k where chosenExpert[choice] == index { count += 1 }
                guard count > 0 else { continue }
                if rows + count > expertInput.rows || batched == expertBatchLimit {
                    try runExperts(experts, batched: batched, rows: rows, group: group)
                    (rows, batched) = (0, 0)
                }
                let first = rows
                for choice in group.rows.lowerBound * k..<group.rows.upperBound * k where chosenExpert[choice] == index {
                    expertInput.row(rows).update(from: normed.row(choice / k), count: h)
                    routedChoice[rows] = choice
                    rows += 1
                }
                batchedExperts[batched] = (index, first..<rows)
                batched += 1
            }
            try runExperts(experts, batched: batched, rows: rows, group: group)
        }
    }

    /// Experts a grouped pass holds: their gate and up matrices are two parts each.
    var expertBatchLimit: Int { Kernels.GroupedProduct.groupCapacity / 2 }

    /// Runs the first `batched` entries of `batchedExperts` over their rows of expertInput
    /// (`rows` in all), as one grouped pass for the gates and ups and one for the downs, and
    /// adds each row's output into its token's hidden row, scaled by its routing weight.
    func runExperts(_ experts: [Expert], batched: Int, rows: Int, group: RowGroup) throws {
        guard batched > 0 else { return }
        let k = configuration.experts!.perToken, h = configuration.hiddenSize
        let path = group.path
        products.removeAll(keepingCapacity: true)
        for (index, range) in batchedExperts[0..<batched] {
            products.append(.init(weight: experts[index].gate, rows: range, output: gateOut))
            products.append(.init(weight: experts[index].up, rows: range, output: upOut))
        }
        try Kernels.matmul(grouped: products, input: expertInput, path: path, context: context)
        try Kernels.swiglu(gate: gateOut, up: upOut, rows: rows, output: gateOut)
        products.removeAll(keepingCapacity: true)
        for (index, range) in batchedExperts[0..<batched] {
            products.append(.init(weight: experts[index].down, rows: range, output: expertOutput))
        }
        try Kernels.matmul(grouped: products, input: gateOut, path: path, context: context)
        for row in 0..<rows {
            let weight = chosenWeight[routedChoice[row]]
            let target = hidden.row(routedChoice[row] / k), source = expertOutput.row(row)
            for i in 0..<h { target[i] += weight * source[i] }
        }
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
        try forward([SequenceChunk(sequence: sequence, tokens: tokens, allLogits: allLogits)], cache: cache)[0]
    }

    /// `step(_:cache:)` with the logits copied out: [chunk][rows × vocabulary].
    public func forward(_ chunks: [SequenceChunk], cache: PagedKVCache) throws -> [[Float]] {
        try step(chunks, cache: cache).arrays()
    }

    /// One step over several sequences at once: every weight matrix is read once for all
    /// their rows (a decode step of N sequences multiplies each weight tile with all N rows,
    /// not N matrix × vector passes); RoPE and the KV writes run per sequence, attention for
    /// all of them in one parallel loop.
    /// Each row's result depends only on its own chunk (see `RowGroup`), so a sequence's
    /// logits are the same whichever others share the step. Returns each chunk's logits
    /// (rows = its token count or 1), valid until the next step; nothing is allocated.
    public func step(_ chunks: [SequenceChunk], cache: PagedKVCache) throws -> StepLogits {
        let c = configuration
        let n = chunks.reduce(0) { $0 + $1.tokens.count }
        guard n <= maximumTokens else { throw ModelError.tooManyTokens(count: n, maximum: maximumTokens) }
        guard cache.configuration.layers == c.layerCount, cache.configuration.keyValueHeads == c.keyValueHeadCount,
              cache.configuration.headDimension == c.headDimension else {
            throw ModelError.cacheMismatch("\(cache.configuration) for \(c.layerCount) layers of \(c.keyValueHeadCount)×\(c.headDimension)")
        }
        for (index, chunk) in chunks.enumerated() where chunks[..<index].contains(where: { $0.sequence == chunk.sequence }) {
            throw ModelError.cacheMismatch("a sequence appears twice in one step")
        }
        for chunk in chunks {
            guard !chunk.tokens.isEmpty else { throw ModelError.tooManyTokens(count: 0, maximum: maximumTokens) }
            for token in chunk.tokens where token < 0 || token >= c.vocabularySize {
                throw ModelError.tokenOutOfRange(token: token, vocabularySize: c.vocabularySize)
            }
        }
        // Where each chunk's rows start in the buffers, and its first position.
        layout.plan(chunks: chunks.count, count: { chunks[$0].tokens.count }, allLogits: { chunks[$0].allLogits })
        positions.removeAll(keepingCapacity: true)
        for chunk in chunks { positions.append(try cache.length(of: chunk.sequence)) }
        for chunk in chunks { try cache.reserve(chunk.sequence, tokens: chunk.tokens.count) }
        let rowStarts = layout.rowStarts, groups = layout.groups
        attentionRows.removeAll(keepingCapacity: true)
        for (index, chunk) in chunks.enumerated() {
            attentionRows.append(AttentionRows(sequence: chunk.sequence, firstRow: rowStarts[index], rows: chunk.tokens.count,
                                               firstPosition: positions[index]))
        }

        for (index, chunk) in chunks.enumerated() {
            for (i, token) in chunk.tokens.enumerated() { try embedding.dequantizeRow(token, into: hidden.row(rowStarts[index] + i)) }
        }
        for (layerIndex, layer) in layers.enumerated() {
            try Kernels.rmsNorm(hidden, weight: layer.inputNorm, epsilon: c.rmsNormEpsilon, rows: n, output: normed)
            try groups.matmul(layer.qkv, normed, queriesKeysValues, context: context)
            try Kernels.addBias(queries, bias: layer.qBias, rows: n)
            try Kernels.addBias(keys, bias: layer.kBias, rows: n)
            try Kernels.addBias(values, bias: layer.vBias, rows: n)
            for (index, chunk) in chunks.enumerated() {
                let start = positions[index], first = rowStarts[index]
                let frequencies = rope.inverseFrequencies(sequenceLength: start + chunk.tokens.count)
                for i in 0..<chunk.tokens.count {
                    rope.fillTables(position: start + i, frequencies: frequencies, cos: cosTable, sin: sinTable)
                    try rope.apply(to: queries.row(first + i), heads: c.headCount, headDimension: c.headDimension, cos: cosTable, sin: sinTable)
                    try rope.apply(to: keys.row(first + i), heads: c.keyValueHeadCount, headDimension: c.headDimension, cos: cosTable, sin: sinTable)
                    try cache.write(chunk.sequence, layer: layerIndex, position: start + i, keys: keys.row(first + i), values: values.row(first + i))
                }
            }
            // Every sequence's heads in one parallel loop.
            try PagedAttention.attend(batch: attentionRows, queries: queries, cache: cache, layer: layerIndex, window: c.slidingWindow,
                                      output: attentionOutput, context: context)
            try groups.matmul(layer.o, attentionOutput, projected, context: context)
            try Kernels.addBias(projected, bias: layer.oBias, rows: n)
            try Kernels.add(hidden, projected, rows: n, output: hidden)
            try Kernels.rmsNorm(hidden, weight: layer.postNorm, epsilon: c.rmsNormEpsilon, rows: n, output: normed)
            switch layer.mlp {
            case let .dense(mlp):
                try run(mlp, input: normed, groups: groups, output: projected)
                try Kernels.add(hidden, projected, rows: n, output: hidden)
            case let .experts(router, experts):
                try mixtureOfExperts(router: router, experts: experts, groups: groups)
            }
        }
        for chunk in chunks { try cache.append(chunk.sequence, tokens: chunk.tokens) }
        try Kernels.rmsNorm(hidden, weight: finalNorm, epsilon: c.rmsNormEpsilon, rows: n, output: normed)
        return try chunkLogits(normed, layout: layout, head: outputHead, scratch: outputScratch, context: context)
    }

    /// Logits for every position of `tokens` as a fresh sequence (evaluation and scoring),
    /// processed in chunks of `maximumTokens`: [tokens.count][vocabulary].
    public func logits(for tokens: [Int], cache: PagedKVCache) throws -> [Float] {
        try TransformerWithCache(self, cache: cache).logits(for: tokens)
    }

    /// exp(mean negative log-likelihood) of each token given the ones before it.
    public func perplexity(of tokens: [Int], cache: PagedKVCache) throws -> Double {
        try TransformerWithCache(self, cache: cache).perplexity(of: tokens)
    }
}
