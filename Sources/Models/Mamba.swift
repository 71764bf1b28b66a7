import Foundation

/// A sequence's recurrent state in a Mamba model: per layer, the last kernel−1 convolution
/// inputs and the SSM state. Small and fixed-size whatever the sequence length, so it can be
/// snapshotted and restored (speculative decoding rolls it back this way).
public struct MambaState: Sendable, Equatable {
    /// [layers][inner × (kernel − 1)], oldest input first.
    var convolution: [[Float]]
    /// [layers][inner × state].
    var ssm: [[Float]]
    /// Tokens consumed.
    public internal(set) var length = 0
}

/// A Mamba selective state-space model (`model_type` `mamba`), following transformers'
/// reference implementation: in_proj → (x, z); causal depthwise conv1d + SiLU on x;
/// x_proj → (dt, B, C); dt = softplus(dt_proj(dt)); h = exp(dt·A)·h + dt·B·x; y = C·h + D·x;
/// y · silu(z) → out_proj, added to the residual. Buffers are allocated once.
public final class MambaModel {
    /// The architecture the weights were loaded for.
    public let configuration: MambaConfiguration
    /// The thread pool and scratch memory its kernels run on.
    public let context: ComputeContext
    /// Tokens one `forward` call may process, over all its chunks.
    public let maximumTokens: Int

    struct Layer {
        let norm: [Float]                    // [hidden]
        let inProjection: Tensor             // [2·inner, hidden]
        let convolution: [Float]             // [inner × kernel]
        let convolutionBias: [Float]         // [inner] (zeros without bias)
        let xProjection: Tensor              // [rank + 2·state, inner]
        let dtProjection: Tensor             // [inner, rank]
        let dtBias: [Float]                  // [inner]
        let a: [Float]                       // [inner × state]: −exp(A_log)
        let d: [Float]                       // [inner]
        let outProjection: Tensor            // [hidden, inner]
    }
    let layers: [Layer]
    let embedding: Tensor                    // [vocab, hidden]
    let finalNorm: [Float]                   // [hidden]
    let outputHead: Tensor                   // [vocab, hidden]

    let hidden, normed, projected: FloatBuffer      // [n, hidden]
    let xz: FloatBuffer                             // [n, 2·inner]
    let x: FloatBuffer                              // [n, inner]: after conv + SiLU
    let dtBC: FloatBuffer                           // [n, rank + 2·state]
    let dtIn: FloatBuffer                           // [n, rank]
    let dt: FloatBuffer                             // [n, inner]
    let y: FloatBuffer                              // [n, inner]
    let outputScratch = OutputScratch()  // the head's gathered rows and logits, grown on demand
    let layout = StepLayout()            // the step's row layout, refilled each step

    /// Builds the model from `files` (a Mamba) with activation buffers for `maximumTokens` tokens.
    public init(files: ModelFiles, context: ComputeContext, maximumTokens: Int = 256) throws {
        guard case let .mamba(c) = files.configuration else {
            throw ConfigurationError.invalidValue(path: files.weights.path, key: "model_type", detail: "not mamba")
        }
        configuration = c
        self.context = context
        self.maximumTokens = maximumTokens
        let w = files.weights, h = c.hiddenSize, inner = c.innerSize, state = c.stateSize, rank = c.timeStepRank
        layers = try (0..<c.layerCount).map { i in
            let p = "backbone.layers.\(i)."
            let conv = try w.tensor(p + "mixer.conv1d.weight")
            guard conv.elementCount == inner * c.convolutionKernel else {
                throw ModelFileError.invalidTensor(path: w.path, tensor: conv.name, detail: "shape \(conv.shape), expected \(inner) × \(c.convolutionKernel)")
            }
            // Checkpoints hold A_log; GGUF holds A = −exp(A_log) itself.
            let a: [Float] = w.contains(p + "mixer.A_log")
                ? try w.tensor(p + "mixer.A_log", shape: [inner, state]).floats().map { -Foundation.exp($0) }
                : try w.tensor(p + "mixer.A", shape: [inner, state]).floats()
            return Layer(
                norm: try w.tensor(p + "norm.weight", shape: [h]).floats(),
                inProjection: try w.tensor(p + "mixer.in_proj.weight", shape: [2 * inner, h]).interleavedForMatmul(),
                convolution: conv.floats(),
                convolutionBias: c.useConvolutionBias ? try w.tensor(p + "mixer.conv1d.bias", shape: [inner]).floats() : [Float](repeating: 0, count: inner),
                xProjection: try w.tensor(p + "mixer.x_proj.weight", shape: [rank + 2 * state, inner]).interleavedForMatmul(),
                dtProjection: try w.tensor(p + "mixer.dt_proj.weight", shape: [inner, rank]),
                dtBias: try w.tensor(p + "mixer.dt_proj.bias", shape: [inner]).floats(),
                a: a,
                d: try w.tensor(p + "mixer.D", shape: [inner]).floats(),
                outProjection: try w.tensor(p + "mixer.out_proj.weight", shape: [h, inner]).interleavedForMatmul())
        }
        guard !c.useBias else {
            throw ConfigurationError.invalidValue(path: w.path, key: "use_bias", detail: "in_proj/out_proj biases are not supported")
        }
        // Tied: the embedding is also the output head and takes the matrix layout (see Transformer).
        let embeddingTable = try w.tensor("backbone.embeddings.weight", shape: [c.vocabularySize, h])
        embedding = c.tieWordEmbeddings ? try embeddingTable.interleavedForMatmul() : embeddingTable
        finalNorm = try w.tensor("backbone.norm_f.weight", shape: [h]).floats()
        outputHead = c.tieWordEmbeddings ? embedding : try w.tensor("lm_head.weight", shape: [c.vocabularySize, h]).interleavedForMatmul()
        let n = maximumTokens
        hidden = try FloatBuffer(rows: n, columns: h)
        normed = try FloatBuffer(rows: n, columns: h)
        projected = try FloatBuffer(rows: n, columns: h)
        xz = try FloatBuffer(rows: n, columns: 2 * inner)
        x = try FloatBuffer(rows: n, columns: inner)
        dtBC = try FloatBuffer(rows: n, columns: rank + 2 * state)
        dtIn = try FloatBuffer(rows: n, columns: rank)
        dt = try FloatBuffer(rows: n, columns: inner)
        y = try FloatBuffer(rows: n, columns: inner)
    }

    /// A fresh state (zeros) for a new sequence.
    public func makeState() -> MambaState {
        let c = configuration
        return MambaState(convolution: Array(repeating: [Float](repeating: 0, count: c.innerSize * (c.convolutionKernel - 1)), count: c.layerCount),
                          ssm: Array(repeating: [Float](repeating: 0, count: c.innerSize * c.stateSize), count: c.layerCount))
    }

    /// Runs `tokens` after `state` (which advances) and returns logits for every token
    /// (`allLogits`) or the last one: [count][vocabulary] floats.
    public func forward(_ tokens: [Int], state: inout MambaState, allLogits: Bool = false) throws -> [Float] {
        guard !tokens.isEmpty else { return [] }
        // The caller's copy is released while the step runs, so the state is updated in
        // place rather than copied layer by layer (copy-on-write).
        var states = [state]
        state = MambaState(convolution: [], ssm: [])
        defer { state = states[0] }
        return try forward([MambaChunk(tokens: tokens, allLogits: allLogits)], states: &states)[0]
    }

    /// `forward(_:states:)` that also returns, for each chunk with `traceStates`, the
    /// state after each of its tokens (traces[i][t]: after token t), so speculative decoding
    /// can roll a sequence back to any verified position without recomputing.
    public func forward(_ chunks: [MambaChunk], states: inout [MambaState], traces: inout [[MambaState]]) throws -> [[Float]] {
        try step(chunks, states: &states, traces: &traces).arrays()
    }

    /// One step over several sequences: chunk i continues `states[i]` (which advances). The
    /// projections read each weight once for all rows (grouped as in the transformer, so a
    /// sequence's logits do not depend on the others in the step); the convolution and the
    /// scan run per sequence. Returns each chunk's logits ([rows][vocabulary]).
    public func forward(_ chunks: [MambaChunk], states: inout [MambaState]) throws -> [[Float]] {
        var traces: [[MambaState]] = []
        return try step(chunks, states: &states, traces: &traces).arrays()
    }

    /// The step of `forward(_:states:traces:)`, its logits left in the model's output
    /// buffer (valid until the next step). Allocates nothing when no chunk traces its states
    /// and `traces` already holds one empty array per chunk.
    public func step(_ chunks: [MambaChunk], states: inout [MambaState], traces: inout [[MambaState]]) throws -> StepLogits {
        if traces.count != chunks.count || traces.contains(where: { !$0.isEmpty }) || chunks.contains(where: \.traceStates) {
            traces = zip(chunks, states).map { chunk, state in
                chunk.traceStates ? [MambaState](repeating: state, count: chunk.tokens.count) : []
            }
        }
        let c = configuration
        let n = chunks.reduce(0) { $0 + $1.tokens.count }
        guard chunks.count == states.count else { throw ModelError.cacheMismatch("\(chunks.count) chunks for \(states.count) states") }
        guard n <= maximumTokens else { throw ModelError.tooManyTokens(count: n, maximum: maximumTokens) }
        for chunk in chunks {
            guard !chunk.tokens.isEmpty else { throw ModelError.tooManyTokens(count: 0, maximum: maximumTokens) }
            for token in chunk.tokens where token < 0 || token >= c.vocabularySize {
                throw ModelError.tokenOutOfRange(token: token, vocabularySize: c.vocabularySize)
            }
        }
        for state in states where state.convolution.count != c.layerCount || state.ssm.count != c.layerCount {
            throw ModelError.cacheMismatch("a Mamba state of \(state.ssm.count) layers for a model of \(c.layerCount)")
        }
        let rank = c.timeStepRank
        layout.plan(chunks: chunks.count, count: { chunks[$0].tokens.count }, allLogits: { chunks[$0].allLogits })
        let rowStarts = layout.rowStarts, groups = layout.groups
        for (index, chunk) in chunks.enumerated() {
            for (i, token) in chunk.tokens.enumerated() { try embedding.dequantizeRow(token, into: hidden.row(rowStarts[index] + i)) }
        }
        for (index, layer) in layers.enumerated() {
            try Kernels.rmsNorm(hidden, weight: layer.norm, epsilon: c.normEpsilon, rows: n, output: normed)
            try groups.matmul(layer.inProjection, normed, xz, context: context)
            for (i, chunk) in chunks.enumerated() {
                let rows = rowStarts[i]..<rowStarts[i] + chunk.tokens.count
                try convolve(layer, rows: rows, window: &states[i].convolution[index], tracing: !traces[i].isEmpty) { t, window in
                    traces[i][t - rows.lowerBound].convolution[index] = window
                }
            }
            try Kernels.silu(x, rows: n, output: x)
            try groups.matmul(layer.xProjection, x, dtBC, context: context)
            for t in 0..<n { dtIn.row(t).update(from: dtBC.row(t), count: rank) }
            try groups.matmul(layer.dtProjection, dtIn, dt, context: context)
            for (i, chunk) in chunks.enumerated() {
                let rows = rowStarts[i]..<rowStarts[i] + chunk.tokens.count
                try scan(layer, rows: rows, state: &states[i].ssm[index], tracing: !traces[i].isEmpty) { t, h in
                    if !traces[i].isEmpty { traces[i][t - rows.lowerBound].ssm[index] = h }
                }
            }
            try groups.matmul(layer.outProjection, y, projected, context: context)
            try Kernels.add(hidden, projected, rows: n, output: hidden)
        }
        for (i, chunk) in chunks.enumerated() {
            for t in traces[i].indices { traces[i][t].length = states[i].length + t + 1 }
            states[i].length += chunk.tokens.count
        }
        try Kernels.rmsNorm(hidden, weight: finalNorm, epsilon: c.normEpsilon, rows: n, output: normed)
        return try chunkLogits(normed, layout: layout, head: outputHead, scratch: outputScratch, context: context)
    }

    /// Causal depthwise convolution of x (the first half of `xz`) into `x`, token by token
    /// through the sequence's window of previous inputs (the SiLU follows, vectorized, over
    /// the whole step).
    func convolve(_ layer: Layer, rows: Range<Int>, window: inout [Float], tracing: Bool, after: (Int, [Float]) -> Void) throws {
        func run(_ rows: Range<Int>) throws {
            try Kernels.causalConvolution(input: xz, output: x, rows: rows, window: &window, weights: layer.convolution,
                                          bias: layer.convolutionBias, channels: configuration.innerSize)
        }
        guard tracing else { return try run(rows) }
        for t in rows {
            try run(t..<t + 1)
            after(t, window)
        }
    }

    /// The selective scan over one sequence's rows, gated by SiLU(z), into `y` (the
    /// C kernel; token by token when the states after each token are wanted).
    func scan(_ layer: Layer, rows: Range<Int>, state h: inout [Float], tracing: Bool, after: (Int, [Float]) -> Void) throws {
        let c = configuration
        func run(_ rows: Range<Int>) throws {
            try Kernels.selectiveScan(state: &h, a: layer.a, dtBias: layer.dtBias, d: layer.d, delta: dt, bc: dtBC,
                                      bcColumn: c.timeStepRank, u: x, z: xz, zColumn: c.innerSize, output: y, rows: rows,
                                      states: c.stateSize, context: context)
        }
        guard tracing else { return try run(rows) }
        for t in rows {
            try run(t..<t + 1)
            after(t, h)
        }
    }
}

/// New tokens for one sequence in a batched Mamba step.
public struct MambaChunk: Sendable {
    /// Token ids to consume, in order.
    public var tokens: [Int]
    /// Logits for every token or just the last.
    public var allLogits: Bool
    /// Record the state after each token (see `forward(_:states:traces:)`).
    public var traceStates: Bool

    /// A chunk of `tokens`; by default only the last token's logits and no state traces.
    public init(tokens: [Int], allLogits: Bool = false, traceStates: Bool = false) {
        self.tokens = tokens
        self.allLogits = allLogits
        self.traceStates = traceStates
    }
}
