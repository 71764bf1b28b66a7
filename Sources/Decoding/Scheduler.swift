import Foundation

/// One request inside the scheduler: its tokens so far, its sequence in the model and its
/// decoding state. Touched only on the scheduler's thread.
final class Request {
    let id: Int
    let parameters: GenerationParameters
    let cancelled: CancellationFlag
    let yield: (GenerationEvent) -> Void
    let end: (Error?) -> Void
    let submitted = Date()
    var prefillStarted: Date?
    /// The prompt, then every generated token.
    var tokens: [Int]
    let promptCount: Int
    var slot: ModelSequence?
    /// Leading tokens of `tokens` that the model's sequence holds.
    var computed = 0
    var admittedBefore = false
    var sampler: SamplerChain
    var candidates: Candidates
    var history: TokenHistory
    var detokenizer: StreamingDetokenizer
    var stopper: StopStringMatcher
    /// Generated tokens whose text is still held back (an incomplete UTF-8 sequence or a
    /// possible stop string); they travel with the next text event.
    var unsentTokens: [Int] = []
    var statistics = GenerationStatistics()
    let stops: Set<Int>
    var speculation: Speculation?
    /// The draft model's chain: the same parameters, its own random stream.
    var draftSampler: SamplerChain
    var draftCandidates: Candidates

    init(id: Int, prompt: [Int], parameters: GenerationParameters, tokenizer: Tokenizer, endOfSequence: [Int], speculate: Bool,
         cancelled: CancellationFlag, yield: @escaping (GenerationEvent) -> Void, end: @escaping (Error?) -> Void) {
        self.id = id
        self.parameters = parameters
        self.cancelled = cancelled
        self.yield = yield
        self.end = end
        tokens = prompt
        promptCount = prompt.count
        func chain(seed: UInt64) -> SamplerChain {
            SamplerChain(temperature: parameters.temperature, topK: parameters.topK, topP: parameters.topP, minP: parameters.minP,
                         repetitionPenalty: parameters.repetitionPenalty, frequencyPenalty: parameters.frequencyPenalty,
                         presencePenalty: parameters.presencePenalty, penaltyWindow: parameters.penaltyWindow,
                         logitBias: parameters.logitBias, seed: seed)
        }
        sampler = chain(seed: parameters.seed)
        draftSampler = chain(seed: parameters.seed ^ 0x5EED_D4AF_7000_0001)
        candidates = Candidates(capacity: tokenizer.vocabularySize)
        draftCandidates = Candidates(capacity: speculate ? tokenizer.vocabularySize : 0)
        history = TokenHistory(prompt)
        detokenizer = tokenizer.makeStreamingDetokenizer(skipSpecialTokens: true)
        stopper = StopStringMatcher(parameters.stopStrings)
        var stops = Set(parameters.stopTokenIDs)
        if !parameters.ignoreEndOfSequence { stops.formUnion(endOfSequence) }
        self.stops = stops
        statistics.promptTokens = prompt.count
        speculation = speculate && parameters.draftTokens > 0 ? Speculation(draftTokens: parameters.draftTokens) : nil
    }
}

/// Continuous batching, as vLLM schedules on GPUs, here on the CPU. One thread owns the
/// model. Every step runs one batched forward over the running requests: all their decode
/// rows (with any draft tokens to verify) and at most one prompt chunk, so the weights are
/// read once per step for every stream while running streams keep flowing during a long
/// prefill. New requests join at the next step and finished ones leave. Admission waits
/// for free KV blocks; when a step cannot get blocks, the newest request is preempted (its
/// blocks freed, its tokens recomputed when it is readmitted) instead of failing others.
///
/// `@unchecked Sendable`: `condition` guards `incoming`, `shuttingDown` and `forwardPasses`;
/// everything else belongs to the scheduler's thread.
final class Scheduler: @unchecked Sendable {
    let target: any LanguageModel
    let draft: (any LanguageModel)?
    let draftSource: DraftSource?
    let tokenizer: Tokenizer
    let chunkSize: Int
    /// Positions a request may use; it ends with `contextFull` when its tokens need more.
    let contextLength: Int
    let maximumBatch: Int
    private let condition = NSCondition()
    private var incoming: [Request] = []
    /// Work to run on the thread between steps (scoring, evaluation).
    private var jobs: [() -> Void] = []
    private var shuttingDown = false
    private var nextID = 0
    private var counter = 0
    private var waiting: [Request] = []
    private var running: [Request] = []
    private var available: Int?
    private var preempted = 0

    init(target: any LanguageModel, draft: (any LanguageModel)?, draftSource: DraftSource?, tokenizer: Tokenizer, chunkSize: Int, maximumBatch: Int,
         contextLength: Int) {
        self.target = target
        self.draft = draft
        self.draftSource = draftSource
        self.tokenizer = tokenizer
        self.chunkSize = chunkSize
        self.contextLength = contextLength
        self.maximumBatch = maximumBatch
        available = target.kvBlocks?.available
        let thread = Thread { [self] in loop() }  // holds the scheduler until `shutDown`
        thread.stackSize = 8 << 20
        thread.name = "quill-scheduler"
        thread.start()
    }

    /// Forward passes of the target run so far.
    var forwardPasses: Int {
        condition.lock()
        defer { condition.unlock() }
        return counter
    }

    /// KV blocks free or evictable after the last release (nil for Mamba).
    var availableBlocks: Int? {
        condition.lock()
        defer { condition.unlock() }
        return available
    }

    /// Requests preempted so far (their blocks freed, to be recomputed).
    var preemptions: Int {
        condition.lock()
        defer { condition.unlock() }
        return preempted
    }

    /// Queues a request; it joins the running batch at the next step.
    func submit(_ make: (Int) -> Request) {
        condition.lock()
        incoming.append(make(nextID))
        nextID += 1
        condition.signal()
        condition.unlock()
    }

    /// Runs `body` with the target model on the scheduler's thread, between two steps.
    func perform<T: Sendable>(_ body: @escaping @Sendable (any LanguageModel) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            condition.lock()
            jobs.append { [target] in continuation.resume(with: Result { try body(target) }) }
            condition.signal()
            condition.unlock()
        }
    }

    /// Wakes the thread (a cancellation while it waits for nothing).
    func wake() {
        condition.lock()
        condition.signal()
        condition.unlock()
    }

    /// Lets the thread end once every request has finished.
    func shutDown() {
        condition.lock()
        shuttingDown = true
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while incoming.isEmpty && jobs.isEmpty && waiting.isEmpty && running.isEmpty && !shuttingDown { condition.wait() }
            if incoming.isEmpty && jobs.isEmpty && waiting.isEmpty && running.isEmpty && shuttingDown {
                condition.unlock()
                return
            }
            waiting += incoming
            incoming.removeAll()
            let work = jobs
            jobs.removeAll()
            condition.unlock()
            for job in work { job() }
            step()
        }
    }

    // MARK: - One step

    private struct Planned {
        let request: Request
        let tokens: [Int]
        /// Draft tokens at the end of `tokens`, and the draft's distributions (nil: one-hot).
        let drafts: [Int]
        let draftDistributions: [[(token: Int, probability: Double)]]?
        var isFinal: Bool
        /// Seconds spent drafting for this request this step.
        var draftSeconds = 0.0
    }

    private func step() {
        for request in waiting + running where request.cancelled.isSet { finish(request, .cancelled) }
        admit()
        guard !running.isEmpty else { return }

        // Decode rows of every request whose prompt is done, then one prompt chunk.
        var plan: [Planned] = []
        var prefill: Request?
        for request in running {
            let remaining = request.tokens.count - request.computed
            if remaining == 1 {
                let started = Date()
                let (drafts, distributions) = propose(for: request)
                plan.append(Planned(request: request, tokens: [request.tokens.last!] + drafts, drafts: drafts,
                                    draftDistributions: distributions, isFinal: true,
                                    draftSeconds: Date().timeIntervalSince(started)))
            } else if prefill == nil {
                prefill = request
            }
        }
        if let request = prefill {
            let end = min(request.tokens.count, request.computed + chunkSize)
            if request.prefillStarted == nil { request.prefillStarted = Date() }
            plan.append(Planned(request: request, tokens: Array(request.tokens[request.computed..<end]), drafts: [],
                                draftDistributions: nil, isFinal: end == request.tokens.count))
        }
        plan = reserveBlocks(plan)
        guard !plan.isEmpty else { return }

        let logits: StepLogits
        let forwardStarted = Date()
        do {
            logits = try target.step(plan.map {
                ModelInput(sequence: $0.request.slot!, tokens: $0.tokens, allLogits: !$0.drafts.isEmpty, rollbackPoints: !$0.drafts.isEmpty)
            })
        } catch {
            for item in plan { fail(item.request, error) }
            return
        }
        condition.lock()
        counter += 1
        condition.unlock()
        let forwardSeconds = Date().timeIntervalSince(forwardStarted)
        for (index, item) in plan.enumerated() { advance(item, logits: logits[index], forwardSeconds: forwardSeconds) }
    }

    /// Admits waiting requests, oldest first, while the batch has room and the KV pool has
    /// the blocks for their tokens (plus one block of headroom per running request).
    private func admit() {
        while let request = waiting.first, running.count < maximumBatch {
            if let pool = target.kvBlocks {
                let needed = (request.tokens.count + pool.size) / pool.size
                if needed > pool.total {
                    finish(request, .contextFull)
                    continue
                }
                if !running.isEmpty && needed + running.count > pool.available { return }
            }
            waiting.removeFirst()
            let (slot, reused) = target.makeSequence(reusingPrefixOf: request.tokens)
            request.slot = slot
            request.computed = reused
            if !request.admittedBefore { request.statistics.reusedPromptTokens = reused }
            request.admittedBefore = true
            running.append(request)
        }
    }

    /// Reserves KV blocks for every planned chunk, oldest request first; when the pool runs
    /// out, preempts the newest running request and tries again. A request that cannot fit
    /// even alone ends with `contextFull`.
    private func reserveBlocks(_ plan: [Planned]) -> [Planned] {
        var plan = plan
        var index = 0
        let ordered = { (a: Planned, b: Planned) in a.request.id < b.request.id }
        plan.sort(by: ordered)
        while index < plan.count {
            do {
                try target.reserve(plan[index].request.slot!, tokens: plan[index].tokens.count)
                index += 1
            } catch {
                guard let victim = running.max(by: { $0.id < $1.id }) else { return [] }
                if running.count == 1 { finish(victim, .contextFull) } else { preempt(victim) }
                plan.removeAll { $0.request === victim }
                index = 0
            }
        }
        // Decode rows first, the prompt chunk last: groups of short chunks stay together.
        return plan.filter { $0.tokens.count == 1 || !$0.drafts.isEmpty } + plan.filter { $0.tokens.count > 1 && $0.drafts.isEmpty }
    }

    private func preempt(_ request: Request) {
        condition.lock()
        preempted += 1
        condition.unlock()
        if let slot = request.slot { target.release(slot) }
        releaseDraft(request)
        request.slot = nil
        request.computed = 0
        running.removeAll { $0 === request }
        waiting.insert(request, at: waiting.firstIndex { $0.id > request.id } ?? waiting.count)
    }

    // MARK: - After the forward pass

    private func advance(_ item: Planned, logits: UnsafeBufferPointer<Float>, forwardSeconds: Double) {
        let request = item.request
        let before = request.computed
        request.computed += item.tokens.count
        guard item.isFinal else { return }
        if request.statistics.generatedTokens > 0 { request.statistics.decodeModelSeconds += forwardSeconds }
        if request.statistics.generatedTokens == 0, let started = request.prefillStarted {
            let computedPrompt = request.tokens.count - request.statistics.reusedPromptTokens
            request.statistics.prefillTokensPerSecond = Double(computedPrompt) / max(Date().timeIntervalSince(started), 1e-9)
        }
        let vocabulary = target.vocabularySize
        func row(_ i: Int) -> UnsafeBufferPointer<Float> {
            let start = (item.drafts.isEmpty ? 0 : i) * vocabulary
            return UnsafeBufferPointer(rebasing: logits[start..<start + vocabulary])
        }
        // The tokens this step yields: accepted drafts, then the target's own choice.
        var chosen: [Int] = []
        var history = request.history
        for i in 0...item.drafts.count {
            let next = { (buffer: UnsafeBufferPointer<Float>) -> Int? in
                // Plain greedy: the SIMD argmax (first of equal maxima, as the chain's rule)
                // instead of loading the candidate buffer.
                if !request.sampler.isSampling && request.sampler.processors.isEmpty, let best = Kernels.argmax(buffer) {
                    return i < item.drafts.count && best == item.drafts[i] ? nil : best
                }
                request.candidates.reset(buffer)
                if i == item.drafts.count || !request.sampler.isSampling {
                    let choice = request.sampler.select(&request.candidates, history: history)
                    return i < item.drafts.count && choice == item.drafts[i] ? nil : choice
                }
                let p = request.sampler.distribution(&request.candidates, history: history)
                return SpeculativeSampling.verify(draft: item.drafts[i], p: p, q: item.draftDistributions?[i],
                                                  uniform: { request.sampler.uniform() })
            }(row(i))
            if let next {
                chosen.append(next)
                break
            }
            chosen.append(item.drafts[i])
            history.tokens.append(item.drafts[i])
        }
        let kept = chosen.count - 1
        if item.drafts.isEmpty {
            if item.tokens.count == 1 { request.speculation?.recordPlain(seconds: forwardSeconds) }
        } else {
            keepAcceptedDrafts(request, drafted: item.drafts.count, kept: kept)
            request.speculation?.record(drafted: item.drafts.count, kept: kept, seconds: item.draftSeconds + forwardSeconds)
            request.statistics.draftTokens += item.drafts.count
            request.statistics.acceptedDraftTokens += kept
            do { try target.rollback(request.slot!, to: before + 1 + kept) } catch { return fail(request, error) }
            request.computed = before + 1 + kept
        }
        for (i, token) in chosen.enumerated() {
            if !emit(request, token: token, logits: row(i)) { return }
        }
    }

    /// Handles one chosen token: stop conditions, then text. Returns false when the request
    /// finished.
    private func emit(_ request: Request, token: Int, logits: UnsafeBufferPointer<Float>) -> Bool {
        let p = request.parameters
        if p.logprobs > 0 { request.yield(.logprobs(Generator.logprobs(Array(logits), chosen: token, top: p.logprobs))) }
        if request.stops.contains(token) {
            finish(request, .endOfSequence)
            return false
        }
        request.statistics.generatedTokens += 1
        if request.statistics.generatedTokens == 1 { request.statistics.timeToFirstToken = Date().timeIntervalSince(request.submitted) }
        request.tokens.append(token)
        request.history.tokens.append(token)
        let text: String, stopped: Bool
        // Ids past the tokenizer (models whose embedding is padded beyond the vocabulary,
        // like Qwen2's) have no text, as in transformers' decode.
        let known = token < tokenizer.vocabularySize
        do { (text, stopped) = request.stopper.feed(known ? try request.detokenizer.append(token) : "") } catch {
            fail(request, error)
            return false
        }
        request.unsentTokens.append(token)
        if !text.isEmpty {
            request.yield(.text(text, tokens: request.unsentTokens))
            request.unsentTokens.removeAll(keepingCapacity: true)
        }
        if stopped {
            finish(request, .stopSequence)
            return false
        }
        if request.statistics.generatedTokens >= p.maxTokens {
            finish(request, .maxTokens)
            return false
        }
        // The newest token is never fed back, so it may be the one past the last position.
        if request.tokens.count > contextLength {
            finish(request, .contextFull)
            return false
        }
        return true
    }

    private func remove(_ request: Request) {
        if let slot = request.slot { target.release(slot) }
        releaseDraft(request)
        request.slot = nil
        running.removeAll { $0 === request }
        waiting.removeAll { $0 === request }
        condition.lock()
        available = target.kvBlocks?.available
        condition.unlock()
    }

    private func finish(_ request: Request, _ reason: StopReason) {
        remove(request)
        let rest = request.stopper.flush() + (reason == .stopSequence ? "" : request.detokenizer.finish())
        if !rest.isEmpty || (!request.unsentTokens.isEmpty && reason != .stopSequence) {
            request.yield(.text(rest, tokens: request.unsentTokens))
        }
        var statistics = request.statistics
        let elapsed = Date().timeIntervalSince(request.submitted)
        statistics.decodeTokensPerSecond = statistics.generatedTokens > 1
            ? Double(statistics.generatedTokens - 1) / max(elapsed - statistics.timeToFirstToken, 1e-9) : 0
        request.yield(.finished(reason, statistics))
        request.end(nil)
    }

    private func fail(_ request: Request, _ error: Error) {
        remove(request)
        request.end(error)
    }

    // MARK: - Drafting

    /// Draft tokens for a request about to decode (none when it does not speculate).
    private func propose(for request: Request) -> ([Int], [[(token: Int, probability: Double)]]?) {
        guard var speculation = request.speculation, let source = draftSource else { return ([], nil) }
        let left = request.parameters.maxTokens - request.statistics.generatedTokens - 1
        let positionsLeft = contextLength - request.tokens.count  // drafts must fit the context too
        let count = min(speculation.nextLength(), left, positionsLeft)
        request.speculation = speculation
        guard count > 0 else { return ([], nil) }
        switch source {
        case let .ngram(maximumN):
            return (ngramDraft(request.tokens, maximumN: maximumN, count: count), nil)
        case .model, .quantizedSelf:
            guard let draft else { return ([], nil) }
            do { return try draftWithModel(draft, request: request, count: count) } catch {
                releaseDraft(request)  // a draft that cannot run (no KV blocks) only stops speculating
                request.speculation = nil
                return ([], nil)
            }
        }
    }

    /// Catches the draft model's sequence up with the request's tokens, then samples `count`
    /// tokens from it one by one; the draft is rolled back afterwards, so next time it is fed
    /// exactly what the target kept.
    private func draftWithModel(_ draft: any LanguageModel, request: Request, count: Int) throws -> ([Int], [[(token: Int, probability: Double)]]?) {
        if request.speculation?.slot == nil {
            let (slot, reused) = draft.makeSequence(reusingPrefixOf: request.tokens)
            request.speculation?.slot = slot
            request.speculation?.held = reused
        }
        guard let slot = request.speculation?.slot, let held = request.speculation?.held else { return ([], nil) }
        var logits: [Float] = []
        var start = held
        while start < request.tokens.count {
            let end = min(request.tokens.count, start + draft.maximumTokens)
            try draft.reserve(slot, tokens: end - start)
            logits = Array(try draft.step([ModelInput(sequence: slot, tokens: Array(request.tokens[start..<end]))])[0])
            start = end
        }
        request.speculation?.held = request.tokens.count
        draft.snapshot(slot)
        var drafts: [Int] = [], distributions: [[(token: Int, probability: Double)]] = []
        var history = request.history
        for i in 0..<count {
            let token = logits.withUnsafeBufferPointer { buffer -> Int in
                request.draftCandidates.reset(buffer)
                let q = request.draftSampler.distribution(&request.draftCandidates, history: history)
                distributions.append(q)
                let u = request.draftSampler.uniform()
                var cumulative = 0.0
                for (token, probability) in q {
                    cumulative += probability
                    if u < cumulative { return token }
                }
                return q.last?.token ?? 0
            }
            drafts.append(token)
            history.tokens.append(token)
            if i < count - 1 {
                try draft.reserve(slot, tokens: 1)
                logits = Array(try draft.step([ModelInput(sequence: slot, tokens: [token])])[0])
            }
        }
        return (drafts, request.sampler.isSampling ? distributions : nil)
    }

    /// Rolls the draft model's sequence back to what the target kept: the draft fed all but
    /// its last proposal, so it keeps the accepted ones a transformer can truncate to (Mamba
    /// returns to its snapshot from before drafting, which the model holds).
    private func keepAcceptedDrafts(_ request: Request, drafted: Int, kept: Int) {
        guard let draft, let slot = request.speculation?.slot, let held = request.speculation?.held else { return }
        var keep = held
        if draft.rollsBackToAnyLength { keep = held + min(kept, drafted - 1) }
        do {
            try draft.rollback(slot, to: keep)
            request.speculation?.held = keep
        } catch {
            releaseDraft(request)
            request.speculation = nil
        }
    }

    private func releaseDraft(_ request: Request) {
        if let slot = request.speculation?.slot { draft?.release(slot) }
        request.speculation?.slot = nil
        request.speculation?.held = 0
    }
}
