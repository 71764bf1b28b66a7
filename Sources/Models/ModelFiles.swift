import Foundation

/// How far a load has got, for a progress bar.
public struct LoadProgress: Sendable, Equatable {
    /// What is happening ("mapping", "quantizing").
    public let stage: String
    /// Units of the stage done so far.
    public let completed: Int
    /// Units in the stage (e.g. tensors to quantize).
    public let total: Int
    /// completed / total, in 0...1.
    public var fraction: Double { total == 0 ? 1 : Double(completed) / Double(total) }
}

/// Options for `ModelFiles.load`.
public struct LoadOptions: Sendable {
    /// Quantize float weight matrices to Q8_0 or Q4_0 while loading (nil: use them as stored).
    public var quantization: ElementType?
    /// Called as the load advances (from the loading thread).
    public var progress: (@Sendable (LoadProgress) -> Void)?
    /// Threads for quantization at load (nil: all cores).
    public var threads: Int?

    /// Options; the defaults keep weights as stored and use every core.
    public init(quantization: ElementType? = nil, threads: Int? = nil, progress: (@Sendable (LoadProgress) -> Void)? = nil) {
        self.quantization = quantization
        self.threads = threads
        self.progress = progress
    }
}

/// A model's weights by Hugging Face checkpoint name, whatever file they came from. GGUF
/// tensors are renamed (`blk.0.attn_q.weight` → `model.layers.0.self_attn.q_proj.weight`)
/// and stacked experts are sliced per expert, all without copying.
public struct ModelWeights: Sendable {
    enum Source: Sendable {
        case safetensors(SafetensorsCheckpoint)
        case gguf(GGUFFile, names: [String: (gguf: String, expert: Int?)])
    }

    let source: Source
    /// Tensors replaced at load (quantized copies).
    let replaced: [String: Tensor]
    /// The file(s) the weights come from, for error messages.
    public let path: String

    /// Every checkpoint name.
    public var names: [String] {
        switch source {
        case let .safetensors(checkpoint): return checkpoint.names
        case let .gguf(_, names): return names.keys.sorted()
        }
    }

    /// Whether a tensor is present.
    public func contains(_ name: String) -> Bool {
        switch source {
        case let .safetensors(checkpoint): return checkpoint.entry(name) != nil
        case let .gguf(_, names): return names[name] != nil
        }
    }

    /// The tensor `name`, throwing `ModelFileError.missingTensor` when absent.
    public func tensor(_ name: String) throws -> Tensor {
        if let tensor = replaced[name] { return tensor }
        switch source {
        case let .safetensors(checkpoint):
            return try checkpoint.tensor(name)
        case let .gguf(file, names):
            guard let (ggufName, expert) = names[name] else { throw ModelFileError.missingTensor(path: path, tensor: name) }
            var tensor = try file.tensor(ggufName)
            if let expert {
                tensor = try tensor.slice(expert..<expert + 1).reshaped(Array(tensor.shape.dropFirst()))
            }
            return try Tensor(name: name, elementType: tensor.elementType, shape: tensor.shape, storage: tensor.storage,
                              byteOffset: tensor.byteOffset)
        }
    }

    /// The tensor `name` with its shape checked against `shape`.
    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        let tensor = try tensor(name)
        guard tensor.shape == shape else {
            throw ModelFileError.invalidTensor(path: path, tensor: name, detail: "shape \(tensor.shape), the configuration expects \(shape)")
        }
        return tensor
    }
}

/// Everything needed to run a model: its configuration, weights and tokenizer, from a
/// Hugging Face folder (config.json, *.safetensors, tokenizer.json) or a `.gguf` file.
public struct ModelFiles: Sendable {
    /// The architecture and its hyperparameters.
    public let configuration: ModelConfiguration
    /// The tensors, by Hugging Face checkpoint name.
    public let weights: ModelWeights
    /// The model's tokenizer.
    public let tokenizer: Tokenizer
    /// Every id that ends generation: the config's, the generation config's and the tokenizer's.
    public let eosTokenIDs: [Int]
    /// The tokenizer's beginning-of-sequence token, if any.
    public var bosTokenID: Int? { tokenizer.bosTokenID }

    /// Loads a folder or a `.gguf` file. Weights are memory-mapped and used in place unless
    /// `options.quantization` asks for conversion.
    public static func load(_ path: String, options: LoadOptions = LoadOptions()) throws -> ModelFiles {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw TensorError.file(path: path, reason: "no such file or folder")
        }
        options.progress?(LoadProgress(stage: "mapping", completed: 0, total: 1))
        var files = isDirectory.boolValue ? try loadFolder(path) : try loadGGUF(path)
        if let type = options.quantization { files = try files.quantized(to: type, options: options) }
        options.progress?(LoadProgress(stage: "ready", completed: 1, total: 1))
        return files
    }

    init(configuration: ModelConfiguration, weights: ModelWeights, tokenizer: Tokenizer, eosTokenIDs: [Int]) {
        self.configuration = configuration
        self.weights = weights
        self.tokenizer = tokenizer
        self.eosTokenIDs = eosTokenIDs
    }

    static func loadFolder(_ path: String) throws -> ModelFiles {
        let folder = URL(fileURLWithPath: path)
        let configuration = try ModelConfiguration(contentsOf: folder.appendingPathComponent("config.json"))
        let tokenizer = try Tokenizer(directory: folder)
        let checkpoint = try SafetensorsCheckpoint(directory: path)
        var eos = tokenizer.eosTokenIDs
        switch configuration {
        case let .transformer(c): eos += c.eosTokenIDs
        case let .mamba(c): eos += c.eosTokenIDs
        }
        let generation = folder.appendingPathComponent("generation_config.json")
        if let data = try? Data(contentsOf: generation), case let .object(members) = try? data.withUnsafeBytes({ try StrictJSON.parse($0) }) {
            eos += (try? ConfigurationKeys(members: members, path: generation.path).integers("eos_token_id")) ?? []
        }
        let weights = ModelWeights(source: .safetensors(checkpoint), replaced: [:], path: path)
        return ModelFiles(configuration: configuration, weights: weights, tokenizer: tokenizer,
                          eosTokenIDs: orderedUnique(eos.filter { $0 < tokenizer.vocabularySize }))
    }

    static func loadGGUF(_ path: String) throws -> ModelFiles {
        let file = try GGUFFile(path: path)
        let tokenizer = try Tokenizer(gguf: file)
        let configuration = try GGUFConfiguration.configuration(file, vocabularySize: tokenizer.vocabularySize)
        let names = GGUFConfiguration.checkpointNames(file, configuration: configuration)
        let weights = ModelWeights(source: .gguf(file, names: names), replaced: [:], path: path)
        return ModelFiles(configuration: configuration, weights: weights, tokenizer: tokenizer, eosTokenIDs: tokenizer.eosTokenIDs)
    }

    /// Float matrices (2-D, not the embedding, innermost dimension a whole number of
    /// blocks) converted to `type`.
    public func quantized(to type: ElementType, options: LoadOptions = LoadOptions()) throws -> ModelFiles {
        guard type == .q8_0 || type == .q4_0 else {
            throw ConfigurationError.invalidValue(path: weights.path, key: "quantization", detail: "\(type) is not Q8_0 or Q4_0")
        }
        let candidates = try weights.names.filter { name in
            let tensor = try weights.tensor(name)
            return tensor.shape.count == 2 && !tensor.elementType.isQuantized && tensor.columns % type.blockSize == 0
                && !name.hasSuffix("embed_tokens.weight") && !name.hasSuffix("embeddings.weight")
        }
        let pool = try ThreadPool(threads: options.threads)
        var replaced: [String: Tensor] = [:]
        for (index, name) in candidates.enumerated() {
            options.progress?(LoadProgress(stage: "quantizing", completed: index, total: candidates.count))
            // Matrices go straight to the interleaved layout the kernels read (the models would
            // otherwise repack them, holding both copies).
            replaced[name] = try weights.tensor(name).converted(to: type, pool: pool).interleavedForMatmul(pool: pool)
        }
        options.progress?(LoadProgress(stage: "quantizing", completed: candidates.count, total: candidates.count))
        let quantizedWeights = ModelWeights(source: weights.source, replaced: replaced, path: weights.path)
        return ModelFiles(configuration: configuration, weights: quantizedWeights, tokenizer: tokenizer, eosTokenIDs: eosTokenIDs)
    }
}

/// The layout of one forward step, kept by a model and refilled every step (its arrays keep
/// their capacity, so a step allocates nothing once they have grown).
final class StepLayout {
    /// Where each chunk's rows start in the activation buffers.
    private(set) var rowStarts: [Int] = []
    /// Each chunk's token count.
    private(set) var counts: [Int] = []
    /// Each chunk's first row in the logits, plus the total at the end (chunk i owns rows
    /// logitRows[i] ..< logitRows[i + 1]).
    private(set) var logitRows: [Int] = []
    /// Rows multiplied together.
    private(set) var groups: [RowGroup] = []

    /// Lays out chunks of `count(i)` tokens, of which `allLogits(i)` want every row's logits.
    func plan(chunks: Int, count: (Int) -> Int, allLogits: (Int) -> Bool) {
        rowStarts.removeAll(keepingCapacity: true)
        counts.removeAll(keepingCapacity: true)
        logitRows.removeAll(keepingCapacity: true)
        groups.removeAll(keepingCapacity: true)
        var rows = 0, logits = 0
        for index in 0..<chunks {
            let n = count(index)
            rowStarts.append(rows)
            counts.append(n)
            logitRows.append(logits)
            logits += allLogits(index) ? n : 1
            RowGroup.extend(&groups, chunk: index, rows: rows..<rows + n)
            rows += n
        }
        logitRows.append(logits)
    }
}

/// Logits of one forward step: chunk i's rows (its token count, or 1 when it asked only for
/// its last token) × vocabulary. A view of the model's output buffer, valid until the
/// model's next step; `arrays()` copies it.
public struct StepLogits {
    let buffer: FloatBuffer
    let logitRows: [Int]
    /// Floats per row.
    public let vocabularySize: Int

    /// Chunks in the step.
    public var count: Int { logitRows.count - 1 }

    /// Chunk `index`'s logits, row-major.
    public subscript(index: Int) -> UnsafeBufferPointer<Float> {
        let first = logitRows[index], rows = logitRows[index + 1] - first
        return UnsafeBufferPointer(start: buffer.row(first), count: rows * vocabularySize)
    }

    /// Every chunk's logits, copied: [chunk][rows × vocabulary].
    public func arrays() -> [[Float]] { (0..<count).map { Array(self[$0]) } }
}

/// The output head's buffers, kept by a model across steps and grown only when a step
/// needs more rows: a vocabulary-wide logits buffer per step would be a fresh mmap (and
/// its page faults) on every token.
final class OutputScratch {
    /// Final-norm rows gathered for the head: [rows][hidden].
    private(set) var selected: FloatBuffer?
    /// Logits of the gathered rows: [rows][vocabulary].
    private(set) var logits: FloatBuffer?

    func reserve(rows: Int, hidden: Int, vocabulary: Int) throws -> (selected: FloatBuffer, logits: FloatBuffer) {
        if let selected, let logits, selected.rows >= rows { return (selected, logits) }
        let capacity = max(rows, (selected?.rows ?? 0) * 2, 1)
        let pair = (try FloatBuffer(rows: capacity, columns: hidden), try FloatBuffer(rows: capacity, columns: vocabulary))
        (selected, logits) = pair
        return pair
    }
}

/// Each chunk's logits from the final-norm rows, group by group (so the output head, too,
/// multiplies a row the same way whatever shares its step).
func chunkLogits(_ normed: FloatBuffer, layout: StepLayout, head: Tensor, scratch: OutputScratch,
                 context: ComputeContext) throws -> StepLogits {
    let total = layout.logitRows.last ?? 0
    let (selected, logits) = try scratch.reserve(rows: total, hidden: normed.columns, vocabulary: head.rows)
    for group in layout.groups {
        // Gather the rows the group's chunks want (a batch's last rows are not contiguous),
        // at their places in the logits, and multiply them together.
        for index in group.chunks {
            // A chunk wants its last `wanted` rows: all of them, or only the last.
            let first = layout.logitRows[index], wanted = layout.logitRows[index + 1] - first
            let end = layout.rowStarts[index] + layout.counts[index]
            for i in 0..<wanted { selected.row(first + i).update(from: normed.row(end - wanted + i), count: normed.columns) }
        }
        let rows = layout.logitRows[group.chunks.lowerBound]..<layout.logitRows[group.chunks.upperBound]
        try Kernels.matmul(weight: head, input: selected, rows: rows, output: logits, path: group.path, context: context)
    }
    return StepLogits(buffer: logits, logitRows: layout.logitRows, vocabularySize: head.rows)
}

/// Rows of one forward step that are multiplied together. Chunks shorter than
/// `Kernels.gemmThreshold` (decode rows, speculative verification) share one row-wise
/// group; every longer chunk (a prompt chunk) is its own group. A row's result then depends
/// only on its own chunk, never on which other sequences share the step: batched output
/// equals solo output.
struct RowGroup {
    var rows: Range<Int>
    /// Index range of the chunks whose rows these are.
    var chunks: Range<Int>
    var rowwise: Bool
    var path: Kernels.MatmulPath { rowwise ? .rowwise : .automatic }

    /// Adds chunk `index` with `rows` to `groups`: into the last group when both are short
    /// (row-wise), else as a group of its own.
    static func extend(_ groups: inout [RowGroup], chunk index: Int, rows: Range<Int>) {
        let small = rows.count < Kernels.gemmThreshold
        if small, let last = groups.last, last.rowwise {
            groups[groups.count - 1].rows = last.rows.lowerBound..<rows.upperBound
            groups[groups.count - 1].chunks = last.chunks.lowerBound..<index + 1
        } else {
            groups.append(RowGroup(rows: rows, chunks: index..<index + 1, rowwise: small))
        }
    }
}

extension Array where Element == RowGroup {
    /// `output = weight · input` over every group's rows, each group by its own path.
    func matmul(_ weight: Tensor, _ input: FloatBuffer, _ output: FloatBuffer, context: ComputeContext) throws {
        for group in self {
            try Kernels.matmul(weight: weight, input: input, rows: group.rows, output: output, path: group.path, context: context)
        }
    }

    /// `outputs[j] = weights[j] · input` over every group's rows: weights sharing an input
    /// in one parallel pass where the group's path allows it.
    func matmul(_ weights: [Tensor], _ input: FloatBuffer, _ outputs: [FloatBuffer], context: ComputeContext) throws {
        for group in self {
            try Kernels.matmul(weights: weights, input: input, rows: group.rows, outputs: outputs, path: group.path, context: context)
        }
    }
}

func orderedUnique(_ values: [Int]) -> [Int] {
    var seen = Set<Int>()
    return values.filter { seen.insert($0).inserted }
}
