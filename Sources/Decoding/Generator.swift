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
    public var maxTokens = 256
    public var temperature: Float = 0
    public var topK: Int?
    public var topP: Double?
    public var minP: Double?
    public var repetitionPenalty: Float?
    public var frequencyPenalty: Float = 0
    public var presencePenalty: Float = 0
    public var penaltyWindow = 64
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

    public init() {}
}

/// Why a generation ended.
public enum StopReason: Sendable, Equatable {
    case endOfSequence, stopSequence, maxTokens, contextFull, cancelled
}

/// Timing and counts of one generation.
public struct GenerationStatistics: Sendable, Equatable {
    public var promptTokens = 0
    public var reusedPromptTokens = 0
    public var generatedTokens = 0
    /// Seconds from the request to the first generated token.
    public var timeToFirstToken = 0.0
    public var prefillTokensPerSecond = 0.0
    public var decodeTokensPerSecond = 0.0
}

/// A token's log-probability under the model.
public struct TokenLogprob: Sendable, Equatable {
    public let token: Int
    public let logprob: Double
}

/// The chosen token's log-probability and the most likely alternatives, for one step.
public struct TokenLogprobs: Sendable, Equatable {
    public let chosen: TokenLogprob
    /// The `logprobs` most likely tokens, most likely first.
    public let top: [TokenLogprob]
}

/// What a generation stream yields.
public enum GenerationEvent: Sendable, Equatable {
    /// New text (always complete UTF-8) and the tokens it came from.
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
    /// Bytes the KV cache may hold.
    public var kvMemoryBudget = 512 << 20
    public var kvElementType: ElementType = .f16
    /// Tokens one forward step may process (longer prompts are prefilled in chunks).
    public var chunkSize = 256
    /// Quantize weights at load (nil: as stored).
    public var quantization: ElementType?

    public init() {}
}

/// Loads a model once and streams text from it. Requests run one at a time on the
/// generator's own thread (batching concurrent requests is the scheduler's job); the token
/// loop never awaits. Cancelling the consumer stops the computation within one step.
///
/// `@unchecked Sendable`: the models and the KV cache are only touched by a generation's
/// thread while it holds `lock`; everything else is immutable.
public final class Generator: @unchecked Sendable {
    public let files: ModelFiles
    let configuration: GeneratorConfiguration
    let engine: Engine
    let lock = NSLock()
    /// Forward passes run (guarded by `lock`; tests use it to see where a cancellation stopped).
    var forwardPasses = 0

    enum Engine {
        case transformer(TransformerModel, PagedKVCache)
        case mamba(MambaModel)
    }

    /// Loads a model folder or `.gguf` file.
    public init(modelPath: String, configuration: GeneratorConfiguration = GeneratorConfiguration()) throws {
        files = try ModelFiles.load(modelPath, options: LoadOptions(quantization: configuration.quantization, threads: configuration.threads))
        self.configuration = configuration
        let context = try ComputeContext(threads: configuration.threads)
        switch files.configuration {
        case .transformer:
            let model = try TransformerModel(files: files, context: context, maximumTokens: configuration.chunkSize)
            engine = .transformer(model, try model.makeCache(memoryBudget: configuration.kvMemoryBudget, elementType: configuration.kvElementType))
        case .mamba:
            engine = .mamba(try MambaModel(files: files, context: context, maximumTokens: configuration.chunkSize))
        }
    }

    /// Streams the continuation of `prompt`.
    public func generate(_ prompt: Prompt, parameters: GenerationParameters = GenerationParameters()) -> AsyncThrowingStream<GenerationEvent, Error> {
        AsyncThrowingStream { continuation in
            let cancelled = CancellationFlag()
            continuation.onTermination = { _ in cancelled.set() }
            let thread = Thread { [self] in
                self.lock.lock()
                defer { self.lock.unlock() }
                do {
                    try self.run(prompt, parameters: parameters, cancelled: cancelled) { continuation.yield($0) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    /// The whole continuation as text, and why it ended.
    public func respond(_ prompt: Prompt, parameters: GenerationParameters = GenerationParameters()) async throws -> (text: String, reason: StopReason) {
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

    /// The token loop (on the generator's thread, holding the lock).
    func run(_ prompt: Prompt, parameters: GenerationParameters, cancelled: CancellationFlag, emit: (GenerationEvent) -> Void) throws {
        let start = Date()
        let tokenizer = files.tokenizer
        let promptTokens = try self.promptTokens(for: prompt)
        guard !promptTokens.isEmpty else { throw ModelError.tooManyTokens(count: 0, maximum: configuration.chunkSize) }
        var statistics = GenerationStatistics()
        statistics.promptTokens = promptTokens.count
        var stops = Set(parameters.stopTokenIDs)
        if !parameters.ignoreEndOfSequence { stops.formUnion(files.eosTokenIDs) }
        var sampler = SamplerChain(temperature: parameters.temperature, topK: parameters.topK, topP: parameters.topP, minP: parameters.minP,
                                   repetitionPenalty: parameters.repetitionPenalty, frequencyPenalty: parameters.frequencyPenalty,
                                   presencePenalty: parameters.presencePenalty, penaltyWindow: parameters.penaltyWindow,
                                   logitBias: parameters.logitBias, seed: parameters.seed)
        var candidates = Candidates(capacity: tokenizer.vocabularySize)
        var history = TokenHistory(promptTokens)
        var detokenizer = tokenizer.makeStreamingDetokenizer(skipSpecialTokens: true)
        var stopper = StopStringMatcher(parameters.stopStrings)

        // The engine's state for this request; released however the loop ends.
        var mambaState: MambaState?
        var sequence: SequenceID?
        defer {
            if case let .transformer(_, cache) = engine, let sequence { try? cache.release(sequence) }
        }
        func step(_ tokens: [Int]) throws -> [Float] {
            switch engine {
            case let .transformer(model, cache):
                var logits: [Float] = []
                var start = 0
                while start < tokens.count {  // prompts longer than a step go in chunks
                    if cancelled.isSet { throw GenerationCancelled() }
                    let end = min(tokens.count, start + configuration.chunkSize)
                    logits = try model.forward(Array(tokens[start..<end]), sequence: sequence!, cache: cache)
                    forwardPasses += 1
                    start = end
                }
                return logits
            case let .mamba(model):
                var logits: [Float] = []
                var start = 0
                while start < tokens.count {
                    if cancelled.isSet { throw GenerationCancelled() }
                    let end = min(tokens.count, start + configuration.chunkSize)
                    logits = try model.forward(Array(tokens[start..<end]), state: &mambaState!)
                    forwardPasses += 1
                    start = end
                }
                return logits
            }
        }
        func finish(_ reason: StopReason) {
            let rest = stopper.flush() + (reason == .stopSequence ? "" : detokenizer.finish())
            if !rest.isEmpty { emit(.text(rest, tokens: [])) }
            let elapsed = Date().timeIntervalSince(start)
            statistics.decodeTokensPerSecond = statistics.generatedTokens > 1
                ? Double(statistics.generatedTokens - 1) / max(elapsed - statistics.timeToFirstToken, 1e-9) : 0
            emit(.finished(reason, statistics))
        }

        var logits: [Float]
        switch engine {
        case let .transformer(_, cache):
            let (reusing, reused) = cache.makeSequence(reusingPrefixOf: promptTokens)
            sequence = reusing
            statistics.reusedPromptTokens = reused
            do { logits = try step(Array(promptTokens[reused...])) } catch KVCacheError.outOfBlocks {
                return finish(.contextFull)
            } catch is GenerationCancelled {
                return finish(.cancelled)
            }
        case let .mamba(model):
            mambaState = model.makeState()
            do { logits = try step(promptTokens) } catch is GenerationCancelled { return finish(.cancelled) }
        }
        statistics.prefillTokensPerSecond = Double(promptTokens.count - statistics.reusedPromptTokens) / max(Date().timeIntervalSince(start), 1e-9)

        while true {
            if cancelled.isSet { return finish(.cancelled) }
            let next = logits.withUnsafeBufferPointer { buffer -> Int in
                candidates.reset(buffer)
                return sampler.select(&candidates, history: history)
            }
            if parameters.logprobs > 0 { emit(.logprobs(Self.logprobs(logits, chosen: next, top: parameters.logprobs))) }
            if stops.contains(next) { return finish(.endOfSequence) }
            statistics.generatedTokens += 1
            if statistics.generatedTokens == 1 { statistics.timeToFirstToken = Date().timeIntervalSince(start) }
            history.tokens.append(next)
            let (text, stopped) = stopper.feed(try detokenizer.append(next))
            if !text.isEmpty { emit(.text(text, tokens: [next])) }
            if stopped { return finish(.stopSequence) }
            if statistics.generatedTokens >= parameters.maxTokens { return finish(.maxTokens) }
            do { logits = try step([next]) } catch KVCacheError.outOfBlocks {
                return finish(.contextFull)
            } catch is GenerationCancelled {
                return finish(.cancelled)
            }
        }
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

    /// KV blocks free for new requests (all of them when nothing is running).
    public var availableKVBlocks: Int? {
        lock.lock()
        defer { lock.unlock() }
        if case let .transformer(_, cache) = engine { return cache.availableBlockCount }
        return nil
    }
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
