// Serving benchmark: what continuous batching, prefix caching and speculative decoding buy.
// Every figure is a ratio against a baseline measured in the same run.
//
//   swift run -c release serving-bench [--threads 2] [--models small,billion] [--type q4_0|q8_0|f16]
//       [--streams 1,2,4,8,16] [--decode 32] [--history 1000] [--only overhead|batch|prefix|speculative]
//       [--work /tmp/quill-model-bench] [--json results/serving.json] [--rounds 11]
//
// overhead:    Generator greedy decode tokens/s ÷ a bare loop of TransformerModel.step and
//              argmax on the same model (what the scheduler, sampler chain, detokenizer and
//              async stream cost per token), alternating --rounds rounds over two pairs
//              loaded in opposite orders; and, within each
//              Generator run, the share of decode time spent outside the model's forward.
// batch:       aggregate decode tokens/s of N concurrent greedy streams on one Generator,
//              ÷ one stream (random-weight Llama 110M and 1.1B, quantized at load).
// prefix:      time to first token of a second chat turn after --history tokens, with the
//              first turn's blocks cached ÷ a cold generator (110M model).
// speculative: greedy decode tokens/s on the bundled model with each draft source ÷ plain
//              greedy, and the fraction of drafts accepted.
import BenchKit
import Foundation
import Quill

let threads = Int(option("--threads", "2"))!
let models = option("--models", "small,billion").split(separator: ",").map(String.init)
// The benchmark models are written in F16: `--type f16` keeps them so (no conversion at load).
let type = ElementType(rawValue: option("--type", "q4_0")).flatMap { $0 == .f16 ? nil : $0 }
let streamCounts = option("--streams", "1,2,4,8,16").split(separator: ",").compactMap { Int($0) }
let decodeLength = Int(option("--decode", "32"))!
let historyLength = Int(option("--history", "1000"))!
let only = option("--only", "")
let overheadRounds = Int(option("--rounds", "11"))!
let work = URL(fileURLWithPath: option("--work", "/tmp/quill-model-bench"))
let jsonPath = option("--json", "")
let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()
var report: [String: Any] = ["threads": threads]

func generator(_ path: String, draft: DraftSource? = nil, quantization: ElementType? = nil, budget: Int = 1 << 30) throws -> Generator {
    var configuration = GeneratorConfiguration()
    configuration.threads = threads
    configuration.kvMemoryBudget = budget
    configuration.quantization = quantization
    configuration.draft = draft
    return try Generator(modelPath: path, configuration: configuration)
}

/// Runs the prompts concurrently; returns (generated tokens after each stream's first, seconds
/// from the last stream's first token to the last stream's end) and the streams' statistics.
func run(_ generator: Generator, prompts: [[Int]], parameters: GenerationParameters) async throws -> (tokens: Int, seconds: Double, statistics: [GenerationStatistics]) {
    let start = seconds()
    let results = try await withThrowingTaskGroup(of: (Double, Double, GenerationStatistics).self) { group in
        for prompt in prompts {
            group.addTask {
                var first = 0.0, statistics = GenerationStatistics()
                for try await event in generator.generate(.tokens(prompt), parameters: parameters) {
                    if case .text = event, first == 0 { first = seconds() }
                    if case let .finished(_, s) = event { statistics = s }
                }
                return (start + statistics.timeToFirstToken, seconds(), statistics)
            }
        }
        var all: [(Double, Double, GenerationStatistics)] = []
        for try await result in group { all.append(result) }
        return all
    }
    let tokens = results.reduce(0) { $0 + max($1.2.generatedTokens - 1, 0) }
    let firstTokens: Double = results.map { $0.0 }.max()!, end: Double = results.map { $0.1 }.max()!
    let elapsed: Double = end - firstTokens
    return (tokens: tokens, seconds: elapsed, statistics: results.map { $0.2 })
}

var greedy = GenerationParameters()
greedy.maxTokens = decodeLength
greedy.ignoreEndOfSequence = true
var random = SystemRandomNumberGenerator()

if only.isEmpty || only == "overhead" {
    var rows: [[String: Any]] = []
    for name in models {
        let shape: LlamaShape = name == "small" ? .small : .billion()
        let folder = try llamaFolder(shape, work: work)
        /// The bare loop's model and cache.
        struct Bare { let model: TransformerModel; let cache: PagedKVCache }
        func loadBare() throws -> Bare {
            let files = try ModelFiles.load(folder.path, options: LoadOptions(quantization: type))
            let model = try TransformerModel(files: files, context: try ComputeContext(threads: threads), maximumTokens: 8)
            return Bare(model: model, cache: try model.makeCache(memoryBudget: 256 << 20))
        }
        // Where a model's weights land depends on what was loaded before it, and that alone
        // moves the 110M's decode by about 4%: two pairs loaded in opposite orders
        // (Generator first, then bare first), their ratios combined by geometric mean.
        let g1 = try generator(folder.path, quantization: type)
        let bare1 = try loadBare(), bare2 = try loadBare()
        let g2 = try generator(folder.path, quantization: type)
        let prompt = (0..<8).map { _ in Int.random(in: 3..<shape.vocabulary, using: &random) }
        /// (decode tokens/s, seconds to the first token) of the bare loop.
        func bare(_ b: Bare) throws -> (Double, Double) {
            let sequence = b.cache.makeSequence()
            defer { try? b.cache.release(sequence) }
            // The model's own step, its logits read in place: the fastest loop there is.
            let submitted = seconds()
            var logits = try b.model.step([SequenceChunk(sequence: sequence, tokens: prompt, allLogits: false)], cache: b.cache)
            _ = Kernels.argmax(logits[0])
            let start = seconds()
            for _ in 0..<(decodeLength - 1) {
                let next = Kernels.argmax(logits[0])!
                logits = try b.model.step([SequenceChunk(sequence: sequence, tokens: [next], allLogits: false)], cache: b.cache)
            }
            return (Double(decodeLength - 1) / (seconds() - start), start - submitted)
        }
        for b in [bare1, bare2] { _ = try bare(b) }
        for g in [g1, g2] { _ = try await run(g, prompts: [prompt], parameters: greedy) }
        var ratios: [Double] = [], bareRates: [Double] = [], generatorRates: [Double] = [], outsideModel: [Double] = []
        var bareFirst: [Double] = [], generatorFirst: [Double] = []
        for _ in 0..<overheadRounds {  // this machine's round-to-round noise is ±5–10%: many short rounds
            var pairRatios: [Double] = []
            for (b, g) in [(bare1, g1), (bare2, g2)] {
                let (rate, first) = try bare(b)
                let statistics = try await run(g, prompts: [prompt], parameters: greedy).statistics[0]
                bareRates.append(rate)
                generatorRates.append(statistics.decodeTokensPerSecond)
                pairRatios.append(statistics.decodeTokensPerSecond / rate)
                // Within the same run, free of round-to-round noise: the decode time not spent
                // in the model's forward passes.
                let decodeSeconds = Double(statistics.generatedTokens - 1) / statistics.decodeTokensPerSecond
                outsideModel.append(1 - statistics.decodeModelSeconds / decodeSeconds)
                bareFirst.append(first)
                generatorFirst.append(statistics.timeToFirstToken)
            }
            ratios.append((pairRatios[0] * pairRatios[1]).squareRoot())
        }
        let ratio = median(ratios)
        print(String(format: "%@: time to first token (8-token prompt), Generator %.2f ms, bare step %.2f ms", shape.name,
                     median(generatorFirst) * 1000, median(bareFirst) * 1000))
        print(String(format: "%@ %@: Generator %.1f tok/s, bare step loop %.1f tok/s (medians, ratio %.3f); median of per-round ratios %.3f (overhead %.1f%%)",
                     shape.name, type?.description ?? "F16", median(generatorRates), median(bareRates),
                     median(generatorRates) / median(bareRates), ratio, (1 - ratio) * 100))
        let sortedRatios = ratios.sorted()
        print(String(format: "%@: per-round ratios, quartiles %.3f / %.3f / %.3f; %d of %d rounds below 0.98", shape.name,
                     sortedRatios[sortedRatios.count / 4], ratio, sortedRatios[sortedRatios.count * 3 / 4],
                     ratios.filter { $0 < 0.98 }.count, ratios.count))
        print(String(format: "%@: decode time outside the model's forward passes (same run): median %.2f%%, max %.2f%% of %d runs",
                     shape.name, median(outsideModel) * 100, outsideModel.max()! * 100, outsideModel.count))
        rows.append(["model": shape.name, "generator": median(generatorRates), "bare": median(bareRates), "ratio": ratio,
                     "outside_model": median(outsideModel),
                     "generator_first_token_ms": median(generatorFirst) * 1000, "bare_first_token_ms": median(bareFirst) * 1000])
    }
    report["overhead"] = rows
}

if only.isEmpty || only == "batch" {
    var rows: [[String: Any]] = []
    for name in models {
        let shape: LlamaShape = name == "small" ? .small : .billion()
        let folder = try llamaFolder(shape, work: work)
        let g = try generator(folder.path, quantization: type)
        _ = try await run(g, prompts: [[5, 6, 7, 8]], parameters: greedy)  // warm-up: weights paged in
        var single = 0.0
        print("\(shape.name) \(type?.description ?? "F16"), \(threads) threads, \(decodeLength) tokens per stream")
        for count in streamCounts {
            // Short distinct prompts, so the runs measure decoding (and share no prefix).
            let prompts = (0..<count).map { _ in (0..<8).map { _ in Int.random(in: 3..<shape.vocabulary, using: &random) } }
            var rates: [Double] = []
            for _ in 0..<3 {
                let result = try await run(g, prompts: prompts, parameters: greedy)
                rates.append(Double(result.tokens) / result.seconds)
            }
            let rate = median(rates)
            if count == 1 { single = rate }
            // Without 1 in --streams there is no baseline to divide by.
            print(String(format: "  %2d streams: %7.1f tok/s aggregate", count, rate)
                  + (single > 0 ? String(format: " = %.2f × one stream", rate / single) : ""))
            var row: [String: Any] = ["model": shape.name, "streams": count, "tokens_per_second": rate]
            if single > 0 { row["ratio"] = rate / single }
            rows.append(row)
        }
    }
    report["batch"] = rows
}

if only.isEmpty || only == "prefix" {
    let folder = try llamaFolder(.small, work: work)
    let history = (0..<historyLength).map { _ in Int.random(in: 3..<32000, using: &random) }
    let turn = history + (0..<24).map { _ in Int.random(in: 3..<32000, using: &random) }
    var one = greedy
    one.maxTokens = 1
    var warmTimes: [Double] = [], coldTimes: [Double] = [], reused = 0
    for _ in 0..<3 {
        let cold = try generator(folder.path, quantization: type)
        _ = try await run(cold, prompts: [[5, 6, 7]], parameters: one)  // pages the weights in, caches nothing of `turn`
        coldTimes.append(try await run(cold, prompts: [turn], parameters: one).statistics[0].timeToFirstToken)
        let warm = try generator(folder.path, quantization: type)
        _ = try await run(warm, prompts: [history], parameters: one)  // the first turn
        let second = try await run(warm, prompts: [turn], parameters: one).statistics[0]
        warmTimes.append(second.timeToFirstToken)
        reused = second.reusedPromptTokens
    }
    let (cold, warm) = (median(coldTimes), median(warmTimes))
    print(String(format: "second turn after %d tokens (110M %@): time to first token %.1f ms cold, %.1f ms reusing %d tokens = %.1f× faster",
                 historyLength, type?.description ?? "F16", cold * 1000, warm * 1000, reused, cold / warm))
    report["prefix"] = ["history": historyLength, "cold_seconds": cold, "reused_seconds": warm, "reused_tokens": reused, "speedup": cold / warm]
}

if only.isEmpty || only == "speculative" {
    let target = repository.appendingPathComponent("Examples/Models/quill-license").path
    let draftModel = repository.appendingPathComponent("Examples/Models/quill-license-draft").path
    let base = try generator(target)
    let prompts = ["The GNU General Public License is", "Permission is hereby granted", "This License applies to"]
    var parameters = greedy
    parameters.maxTokens = 200
    parameters.ignoreEndOfSequence = false
    func rate(_ g: Generator) async throws -> (Double, Int, Int, [Int]) {
        var times: [Double] = [], proposed = 0, accepted = 0, tokens: [Int] = []
        for prompt in prompts {
            let ids = try g.promptTokens(for: .text(prompt))
            let t0 = seconds()
            var generated = 0
            for try await event in g.generate(.tokens(ids), parameters: parameters) {
                if case let .text(_, t) = event { tokens += t }
                if case let .finished(_, s) = event { generated = s.generatedTokens; proposed += s.draftTokens; accepted += s.acceptedDraftTokens }
            }
            times.append(Double(generated) / (seconds() - t0))
        }
        return (times.reduce(0, +) / Double(times.count), proposed, accepted, tokens)
    }
    _ = try await rate(base)
    var rows: [[String: Any]] = []
    let sources: [(String, DraftSource)] = [("draft model", .model(path: draftModel)), ("self Q4_0", .quantizedSelf(.q4_0)),
                                            ("n-gram", .ngram(maximumN: 3))]
    for (name, source) in sources {
        let g = try generator(target, draft: source)
        _ = try await rate(g)
        var ratios: [Double] = [], acceptance = 0.0, same = true
        for _ in 0..<3 {
            let (plain, _, _, plainTokens) = try await rate(base)
            let (speculative, proposed, accepted, tokens) = try await rate(g)
            ratios.append(speculative / plain)
            acceptance = Double(accepted) / Double(max(proposed, 1))
            same = same && tokens == plainTokens
        }
        let ratio = median(ratios)
        print(String(format: "speculative greedy, %@: %.2f× plain greedy tok/s, %.0f%% of drafts accepted, output identical: %@",
                     name, ratio, acceptance * 100, same ? "yes" : "NO"))
        rows.append(["source": name, "speedup": ratio, "acceptance": acceptance, "identical": same])
    }
    report["speculative"] = rows
}

if !jsonPath.isEmpty {
    let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
    try data.write(to: URL(fileURLWithPath: jsonPath))
}
