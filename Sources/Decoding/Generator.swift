import Foundation

/// What to generate from.
public enum Prompt: Sendable {
    /// Text, tokenized with the model's tokenizer (special tokens added as it says).
    case text(String)
    /// Token ids, used as they are.
    case tokens([Int])
    /// A conversation, rendered with the model's chat template (ending with the prompt for
    /// the assistant's turn) and tokenized without adding special tokens again, as
    /// transformers' `apply_chat_template` does.
    case chat([ChatMessage])
}

/// Parameters of one request. Temperature 0 is greedy.
public struct GenerationParameters: Sendable {
    /// The most tokens to generate.
    public var maxTokens = 256
    /// Sampling temperature; 0 picks the most likely token (greedy).
    public var temperature: Float = 0
    /// Keep only the k most likely tokens (nil: off; used only when temperature > 0).
    public var topK: Int?
    /// Keep the most likely tokens whose probabilities add up to p (nil: off; only when temperature > 0).
    public var topP: Double?
    /// Keep tokens at least p × as likely as the most likely one (nil: off; only when temperature > 0).
    public var minP: Double?
    /// CTRL repetition penalty for tokens among the last `penaltyWindow` (nil or 1: off).
    public var repetitionPenalty: Float?
    /// Subtracted from a token's logit per occurrence among the last `penaltyWindow` tokens (0: off).
    public var frequencyPenalty: Float = 0
    /// Subtracted once from the logit of any token among the last `penaltyWindow` tokens (0: off).
    public var presencePenalty: Float = 0
    /// How many recent tokens (prompt and generated) the penalties look at.
    public var penaltyWindow = 64
    /// Added to the logits of these token ids (−infinity bans a token).
    public var logitBias: [Int: Float] = [:]
    /// The request's own random seed: the same seed and prompt give the same text.
    public var seed: UInt64 = 0
    /// Text that ends generation; it is not emitted, even when it spans several tokens.
    public var stopStrings: [String] = []
    /// Token ids that end generation besides the model's end-of-sequence ids.
    public var stopTokenIDs: [Int] = []
    /// Keep going past end-of-sequence tokens (benchmarks, tests).
    public var ignoreEndOfSequence = false
    /// Report the log-probabilities of each chosen token and of the `logprobs` most likely
    /// tokens (0: none), from the model's distribution before any sampler changed it.
    public var logprobs = 0
    /// Draft tokens per speculative step, at most 6 (used when the generator has a draft
    /// source; 0 turns speculation off for this request). The length adapts to acceptance.
    public var draftTokens = 5

    public init() {}

    /// Throws `GenerationError.invalidParameter` for values no sampler can use.
    public func validate() throws {
        func invalid(_ name: String, _ detail: String) -> GenerationError { .invalidParameter(name: name, detail: detail) }
        guard maxTokens >= 1 else { throw invalid("maxTokens", "\(maxTokens); must be at least 1") }
        guard temperature.isFinite, temperature >= 0 else { throw invalid("temperature", "\(temperature); must be finite and ≥ 0") }
        if let topK, topK < 1 { throw invalid("topK", "\(topK); must be at least 1") }
        if let topP, !(topP > 0 && topP <= 1) { throw invalid("topP", "\(topP); must be in (0, 1]") }
        if let minP, !(minP >= 0 && minP <= 1) { throw invalid("minP", "\(minP); must be in [0, 1]") }
        if let repetitionPenalty, !(repetitionPenalty.isFinite && repetitionPenalty > 0) {
            throw invalid("repetitionPenalty", "\(repetitionPenalty); must be finite and > 0")
        }
        guard frequencyPenalty.isFinite, presencePenalty.isFinite else { throw invalid("frequencyPenalty/presencePenalty", "must be finite") }
        guard penaltyWindow >= 0 else { throw invalid("penaltyWindow", "\(penaltyWindow); must be ≥ 0") }
        guard logprobs >= 0 else { throw invalid("logprobs", "\(logprobs); must be ≥ 0") }
        guard draftTokens >= 0 else { throw invalid("draftTokens", "\(draftTokens); must be ≥ 0") }
    }
}

/// Why a request was refused before it started.
public enum GenerationError: Error, Equatable, CustomStringConvertible {
    /// A `GenerationParameters` value out of its range.
    case invalidParameter(name: String, detail: String)
    /// The prompt (or the tokens to score) has more tokens than the generator's context length.
    case promptTooLong(tokens: Int, contextLength: Int)

    /// A one-line description for logs and error messages.
    public var description: String {
        switch self {
        case let .invalidParameter(name, detail): return "generation parameter \(name) = \(detail)"
        case let .promptTooLong(tokens, contextLength):
            return "the prompt has \(tokens) tokens but the context holds \(contextLength)"
        }
    }
}

/// Why a generation ended.
public enum StopReason: Sendable, Equatable {
    case endOfSequence, stopSequence, maxTokens, contextFull, cancelled
}

/// Timing and counts of one generation.
public struct GenerationStatistics: Sendable, Equatable {
    /// Tokens in the prompt.
    public var promptTokens = 0
    /// Prompt tokens reused from the prefix cache instead of computed.
    public var reusedPromptTokens = 0
    /// Tokens generated.
    public var generatedTokens = 0
    /// Seconds from the request to the first generated token.
    public var timeToFirstToken = 0.0
    /// Prompt tokens computed (not reused) per second of prefill.
    public var prefillTokensPerSecond = 0.0
    /// Tokens generated per second after the first (0 with fewer than two).
    public var decodeTokensPerSecond = 0.0
    /// Seconds of the decode (after the first token) spent in the model's forward passes,
    /// shared with the other requests of each batch. The rest of the decode time is the
    /// Generator's own work (scheduling, sampling, detokenizing, streaming) and waiting.
    public var decodeModelSeconds = 0.0
    /// Draft tokens proposed to the target and how many it accepted (speculative decoding).
    public var draftTokens = 0
    /// Draft tokens the target accepted.
    public var acceptedDraftTokens = 0

    public init() {}
}

/// A token's log-probability under the model.
public struct TokenLogprob: Sendable, Equatable {
    /// The token id.
    public let token: Int
    /// Its natural-log probability.
    public let logprob: Double
}

/// The chosen token's log-probability and the most likely alternatives, for one step.
public struct TokenLogprobs: Sendable, Equatable {
    /// The generated token.
    public let chosen: TokenLogprob
    /// The `logprobs` most likely tokens, most likely first.
    public let top: [TokenLogprob]
}

/// What a generation stream yields.
public enum GenerationEvent: Sendable, Equatable {
    /// New text (always complete UTF-8) and the generated tokens it completes: a token
    /// whose bytes were held back (part of a character, or maybe of a stop string) arrives
    /// with the text that completes it, so the events' ids add up to every generated token.
    case text(String, tokens: [Int])
    /// Log-probabilities of a generated token (only when `GenerationParameters.logprobs` > 0),
    /// sent before that token's text.
    case logprobs(TokenLogprobs)
    case finished(StopReason, GenerationStatistics)
}

/// How a `Generator` is set up.
public struct GeneratorConfiguration: Sendable {
    /// Compute threads (nil: every core).
    public var threads: Int?
    /// Bytes the KV cache may hold (shared by all running requests).
    public var kvMemoryBudget = 512 << 20
    /// Element type of cached keys and values: F16 (the default, half the memory of F32), Q8_0
    /// (about half of F16's; the head dimension must be a multiple of 32) or F32.
    public var kvElementType: ElementType = .f16
    /// Prompt tokens one step may prefill (longer prompts go in chunks, between decode steps).
    public var chunkSize = 256
    /// Requests decoded together in one step; more wait for a place.
    public var maximumBatch = 16
    /// Positions one request may use, prompt and generated tokens together (nil: the
    /// model's `max_position_embeddings`; no limit for Mamba, whose state has no positions).
    /// A longer prompt is refused with `GenerationError.promptTooLong`; a generation that
    /// reaches it ends with `StopReason.contextFull`.
    public var contextLength: Int?
    /// Quantize weights at load (nil: as stored).
    public var quantization: ElementType?
    /// Speculative decoding's draft source (nil: none).
    public var draft: DraftSource?
    /// Called as the model loads (mapping, quantizing), from the loading thread.
    public var progress: (@Sendable (LoadProgress) -> Void)?
    /// What `generate` and `respond` use when a call passes no parameters.
    public var defaultParameters = GenerationParameters()

    public init() {}
}

/// Loads a model once and streams text from it to any number of concurrent requests.
///
/// The generator's own thread runs a continuous-batching scheduler: concurrent `generate`
/// calls decode together, one batched forward per step (see `Scheduler`), and a request's
/// output does not depend on which others run beside it. Its token loop never awaits.
/// Cancelling a consumer stops its computation within one step and frees its KV blocks.
public final class Generator: Sendable {
    /// The loaded model's configuration, weights and tokenizer.
    public let files: ModelFiles
    /// Positions one request may use (nil: unlimited, a Mamba model's default).
    public let contextLength: Int?
    let configuration: GeneratorConfiguration
    let scheduler: Scheduler

    /// Loads a model folder or `.gguf` file (and the draft model, when one is configured).
    public init(modelPath: String, configuration: GeneratorConfiguration = GeneratorConfiguration()) throws {
        guard configuration.chunkSize > 0, configuration.maximumBatch > 0, configuration.threads.map({ $0 > 0 }) ?? true,
              configuration.contextLength.map({ $0 > 0 }) ?? true else {
            throw ConfigurationError.invalidValue(path: modelPath, key: "GeneratorConfiguration",
                                                  detail: "chunkSize, maximumBatch, threads and contextLength must be positive")
        }
        let options = LoadOptions(quantization: configuration.quantization, threads: configuration.threads, progress: configuration.progress)
        files = try ModelFiles.load(modelPath, options: options)
        self.configuration = configuration
        let context = try ComputeContext(threads: configuration.threads)
        let target = try Self.languageModel(files, configuration, context)
        var draft: (any LanguageModel)?
        switch configuration.draft {
        case let .model(path)?:
            let draftFiles = try ModelFiles.load(path, options: LoadOptions(threads: configuration.threads))
            guard draftFiles.tokenizer.vocabularySize == files.tokenizer.vocabularySize,
                  draftFiles.tokenizer.tokens == files.tokenizer.tokens else {
                throw ConfigurationError.invalidValue(path: path, key: "tokenizer",
                                                      detail: "the draft model's vocabulary differs from the target's")
            }
            draft = try Self.languageModel(draftFiles, configuration, try Self.draftContext(draftFiles, shared: context))
        case let .quantizedSelf(type)?:
            let options = LoadOptions(threads: configuration.threads, progress: configuration.progress)
            let quantized = try files.quantized(to: type, options: options)
            draft = try Self.languageModel(quantized, configuration, try Self.draftContext(quantized, shared: context))
        case .ngram(let n)?:
            guard n > 0 else { throw ConfigurationError.invalidValue(path: modelPath, key: "ngram", detail: "n must be positive") }
        case nil: break
        }
        switch files.configuration {
        case let .transformer(model): contextLength = configuration.contextLength ?? model.maxPositionEmbeddings
        case .mamba: contextLength = configuration.contextLength
        }
        scheduler = Scheduler(target: target, draft: draft, draftSource: configuration.draft, tokenizer: files.tokenizer,
                              chunkSize: configuration.chunkSize, maximumBatch: configuration.maximumBatch,
                              contextLength: contextLength ?? .max)
    }

    deinit { scheduler.shutDown() }

    /// Weights below this size run a draft on the scheduler's thread alone: for a model that
    /// small, waking the pool for each of its matrices costs more than the second core saves
    /// (the bundled 1.3 MB draft decodes about twice as fast on one thread).
    static let singleThreadDraftBytes = 8 << 20

    static func draftContext(_ files: ModelFiles, shared: ComputeContext) throws -> ComputeContext {
        let bytes = try files.weights.names.reduce(0) { $0 + (try files.weights.tensor($1)).byteCount }
        return bytes < singleThreadDraftBytes ? try ComputeContext(threads: 1) : shared
    }

    static func languageModel(_ files: ModelFiles, _ configuration: GeneratorConfiguration, _ context: ComputeContext) throws -> any LanguageModel {
        // A step holds one prompt chunk and every running request's decode row and drafts
        // (activation buffers are sized for it, so no room for drafts without speculation).
        let rowsPerRequest = configuration.draft == nil ? 1 : Speculation.maximumDraft + 1
        let rows = configuration.chunkSize + configuration.maximumBatch * rowsPerRequest
        return try files.languageModel(context: context, maximumTokens: rows, kvMemoryBudget: configuration.kvMemoryBudget,
                                       kvElementType: configuration.kvElementType)
    }

    /// Streams the continuation of `prompt` with `parameters` (nil: the configuration's
    /// `defaultParameters`).
    public func generate(_ prompt: Prompt, parameters: GenerationParameters? = nil) -> AsyncThrowingStream<GenerationEvent, Error> {
        let parameters = parameters ?? configuration.defaultParameters
        return AsyncThrowingStream { continuation in
            let tokens: [Int]
            do {
                try parameters.validate()
                tokens = try promptTokens(for: prompt)
                guard !tokens.isEmpty else { throw ModelError.tooManyTokens(count: 0, maximum: configuration.chunkSize) }
                try checkContext(tokens)
                let vocabulary = scheduler.target.vocabularySize  // the model's: it may pad the tokenizer's
                if let bad = tokens.first(where: { $0 < 0 || $0 >= vocabulary }) {
                    throw ModelError.tokenOutOfRange(token: bad, vocabularySize: vocabulary)
                }
            } catch {
                continuation.finish(throwing: error)
                return
            }
            let cancelled = CancellationFlag()
            let scheduler = self.scheduler
            continuation.onTermination = { _ in
                cancelled.set()
                scheduler.wake()
            }
            let speculate = configuration.draft != nil
            scheduler.submit { id in
                Request(id: id, prompt: tokens, parameters: parameters, tokenizer: files.tokenizer, endOfSequence: files.eosTokenIDs,
                        speculate: speculate, cancelled: cancelled, yield: { continuation.yield($0) },
                        end: { error in if let error { continuation.finish(throwing: error) } else { continuation.finish() } })
            }
        }
    }

    /// The whole continuation as text, and why it ended.
    public func respond(_ prompt: Prompt, parameters: GenerationParameters? = nil) async throws -> (text: String, reason: StopReason) {
        var text = ""
        for try await event in generate(prompt, parameters: parameters) {
            switch event {
            case let .text(piece, _): text += piece
            case .logprobs: break
            case let .finished(reason, _): return (text, reason)
            }
        }
        return (text, .cancelled)
    }

    /// log-softmax of `logits` for `chosen` and the `top` most likely tokens.
    static func logprobs(_ logits: [Float], chosen: Int, top: Int) -> TokenLogprobs {
        let maximum = Double(logits.max() ?? 0)
        let logSum = maximum + Foundation.log(logits.reduce(0.0) { $0 + Foundation.exp(Double($1) - maximum) })
        let best = logits.withUnsafeBufferPointer { Kernels.topK($0, k: top) }
        return TokenLogprobs(chosen: TokenLogprob(token: chosen, logprob: Double(logits[chosen]) - logSum),
                             top: best.map { TokenLogprob(token: $0.index, logprob: Double($0.value) - logSum) })
    }

    /// The token ids `prompt` becomes (chat prompts through the model's template).
    public func promptTokens(for prompt: Prompt, addGenerationPrompt: Bool = true) throws -> [Int] {
        let tokenizer = files.tokenizer
        switch prompt {
        case let .text(text): return tokenizer.encode(text)
        case let .tokens(tokens): return tokens
        case let .chat(messages):
            guard let source = tokenizer.chatTemplate else { throw ChatTemplateError.noTemplate }
            let bos = tokenizer.bosTokenID.map { tokenizer.tokens[$0] } ?? ""
            let eos = tokenizer.eosTokenIDs.first.map { tokenizer.tokens[$0] } ?? ""
            let text = try ChatTemplate(source).render(messages, addGenerationPrompt: addGenerationPrompt, bosToken: bos, eosToken: eos)
            return tokenizer.encode(text, addSpecialTokens: false)
        }
    }

    /// Logits of every position of `tokens` as a fresh sequence (evaluation, scoring,
    /// parity checks): [tokens.count][vocabulary]. Runs in chunks between generation steps.
    public func logits(for tokens: [Int]) async throws -> [[Float]] {
        var rows: [[Float]] = []
        try await score(tokens) { _, row in rows.append(Array(row)) }
        return rows
    }

    /// exp(mean negative log-likelihood) of each token of `tokens` given the ones before it;
    /// `progress` receives the fraction done after each chunk. With a `window`, the text is
    /// scored in consecutive windows of that many tokens, each seeing only its own earlier
    /// tokens (llama.cpp's perplexity does the same), so texts longer than the context fit.
    public func perplexity(of tokens: [Int], window: Int? = nil, progress: (@Sendable (Double) -> Void)? = nil) async throws -> Double {
        guard tokens.count >= 2 else { throw ModelError.tooManyTokens(count: tokens.count, maximum: 2) }
        let size = window ?? tokens.count
        guard size >= 2 else { throw GenerationError.invalidParameter(name: "window", detail: "\(size) (a window must hold at least 2 tokens)") }
        var perplexity = Perplexity()
        var start = 0
        while start + 1 < tokens.count {
            let part = Array(tokens[start..<min(tokens.count, start + size)])
            // This window's fraction, as a fraction of the whole text.
            let offset = Double(start) / Double(tokens.count), share = Double(part.count) / Double(tokens.count)
            var windowProgress: (@Sendable (Double) -> Void)?
            if let progress { windowProgress = { fraction in progress(offset + fraction * share) } }
            try await score(part, progress: windowProgress) { position, row in
                guard position + 1 < part.count else { return }
                try perplexity.add(row, next: part[position + 1])
            }
            start += part.count
        }
        return perplexity.value
    }

    /// Runs `tokens` through the model chunk by chunk and hands each position's logits to `body`.
    func score(_ tokens: [Int], progress: (@Sendable (Double) -> Void)? = nil,
               _ body: (Int, ArraySlice<Float>) throws -> Void) async throws {
        guard !tokens.isEmpty else { throw ModelError.tooManyTokens(count: 0, maximum: configuration.chunkSize) }
        try checkContext(tokens)
        let vocabulary = scheduler.target.vocabularySize
        if let bad = tokens.first(where: { $0 < 0 || $0 >= vocabulary }) { throw ModelError.tokenOutOfRange(token: bad, vocabularySize: vocabulary) }
        let slot = try await scheduler.perform { $0.makeSequence(reusingPrefixOf: []).sequence }
        do {
            var start = 0
            while start < tokens.count {
                try Task.checkCancellation()
                let chunk = Array(tokens[start..<min(tokens.count, start + configuration.chunkSize)])
                let logits = try await scheduler.perform { model -> [Float] in
                    try model.reserve(slot, tokens: chunk.count)
                    return Array(try model.step([ModelInput(sequence: slot, tokens: chunk, allLogits: true)])[0])
                }
                for i in chunk.indices { try body(start + i, logits[i * vocabulary..<(i + 1) * vocabulary]) }
                start += chunk.count
                progress?(Double(start) / Double(tokens.count))
            }
        } catch {
            _ = try? await scheduler.perform { $0.release(slot) }
            throw error
        }
        _ = try await scheduler.perform { $0.release(slot) }
    }

    private func checkContext(_ tokens: [Int]) throws {
        if let contextLength, tokens.count > contextLength {
            throw GenerationError.promptTooLong(tokens: tokens.count, contextLength: contextLength)
        }
    }

    /// KV blocks free for new requests (all of them when nothing is running; nil for Mamba).
    public var availableKVBlocks: Int? { scheduler.availableBlocks }

    /// Forward passes of the model so far (tests use it to see where a cancellation stopped).
    var forwardPasses: Int { scheduler.forwardPasses }
}

/// Thrown inside a step when the consumer went away.
struct GenerationCancelled: Error {}

/// Set from any thread, read by the token loop once per step.
final class CancellationFlag: @unchecked Sendable {  // guarded by its lock
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}

/// Holds back text that could be the start of a stop string, so a stop string split over
/// several tokens is found and never emitted.
struct StopStringMatcher {
    let stops: [String]
    private var pending = ""

    init(_ stops: [String]) { self.stops = stops.filter { !$0.isEmpty } }

    /// New text in; the text safe to emit now, and whether a stop string was reached.
    mutating func feed(_ text: String) -> (String, Bool) {
        guard !stops.isEmpty else { return (text, false) }
        pending += text
        if let range = stops.compactMap({ pending.range(of: $0) }).min(by: { $0.lowerBound < $1.lowerBound }) {
            let before = String(pending[..<range.lowerBound])
            pending = ""
            return (before, true)
        }
        // Keep the longest suffix that is a prefix of some stop string.
        var keep = 0
        for stop in stops {
            for length in stride(from: min(stop.count - 1, pending.count), to: 0, by: -1)
            where pending.hasSuffix(String(stop.prefix(length))) {
                keep = max(keep, length)
                break
            }
        }
        let emit = String(pending.dropLast(keep))
        pending = String(pending.suffix(keep))
        return (emit, false)
    }

    /// Whatever was held back (at the end of a generation that did not stop on a string).
    mutating func flush() -> String {
        defer { pending = "" }
        return pending
    }
}
