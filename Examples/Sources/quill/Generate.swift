import ArgumentParser
import Foundation
import Quill

/// Sampling options shared by `generate` and `chat`.
struct SamplingOptions: ParsableArguments {
    @Option(help: "Temperature (0: greedy).") var temperature: Float = 0
    @Option(name: .customLong("top-k"), help: "Keep the k most likely tokens.") var topK: Int?
    @Option(name: .customLong("top-p"), help: "Keep the most likely tokens up to this total probability.") var topP: Double?
    @Option(name: .customLong("min-p"), help: "Keep tokens at least this fraction as likely as the best.") var minP: Double?
    @Option(help: "Random seed (the same seed and prompt give the same text).") var seed: UInt64 = 0
    @Option(name: .customLong("max-tokens"), help: "Most tokens to generate.") var maxTokens: Int = 200
    @Option(help: "Stop when this text appears (repeatable; it is not printed).") var stop: [String] = []

    func validate() throws {
        do { try parameters.validate() } catch { throw ValidationError("\(error)") }
    }

    var parameters: GenerationParameters {
        var p = GenerationParameters()
        p.temperature = temperature
        p.topK = topK
        p.topP = topP
        p.minP = minP
        p.seed = seed
        p.maxTokens = maxTokens
        p.stopStrings = stop
        return p
    }
}

struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stream the continuation of a prompt.")

    @OptionGroup var model: ModelOptions
    @OptionGroup var sampling: SamplingOptions
    @Argument(help: "The prompt.") var prompt: String = "The licenses for most software are designed"
    @Option(help: "The prompt as token ids (1,2,3) instead of text.") var tokens: String?
    @Flag(help: "Print one JSON object at the end instead of streaming.") var json = false

    func run() async throws {
        try await reportingErrors {
            let generator = try model.makeGenerator()
            let input: Prompt = try tokens.map { .tokens(try tokenList($0)) } ?? .text(prompt)
            var generated: [Int] = [], text = ""
            if !json, tokens == nil { write(prompt) }
            for try await event in generator.generate(input, parameters: sampling.parameters) {
                switch event {
                case let .text(piece, ids):
                    generated += ids
                    text += piece
                    if !json { write(piece) }
                case let .finished(reason, statistics):
                    if json {
                        var stats = statistics.json
                        stats["stop_reason"] = "\(reason)"
                        print(try jsonText(["tokens": generated, "text": text, "stats": stats] as [String: Any]))
                    } else {
                        write("\n")
                        FileHandle.standardError.write(Data((statistics.line(reason) + "\n").utf8))
                    }
                case .logprobs: break
                }
            }
        }
    }
}

struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chat in turns with the model's chat template; each turn reuses the cached conversation.")

    @OptionGroup var model: ModelOptions
    @OptionGroup var sampling: SamplingOptions
    @Option(help: "A system message to start the conversation with.") var system: String?

    func run() async throws {
        try await reportingErrors {
            let generator = try model.makeGenerator()
            var messages: [ChatMessage] = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
            FileHandle.standardError.write(Data("Type a message and press return; an empty line or end of input quits.\n".utf8))
            while true {
                write("> ")
                guard let line = readLine(), !line.isEmpty else { break }
                messages.append(ChatMessage(role: "user", content: line))
                var reply = ""
                for try await event in generator.generate(.chat(messages), parameters: sampling.parameters) {
                    switch event {
                    case let .text(piece, _):
                        reply += piece
                        write(piece)
                    case let .finished(reason, statistics):
                        write("\n")
                        FileHandle.standardError.write(Data((statistics.line(reason) + "\n").utf8))
                    case .logprobs: break
                    }
                }
                messages.append(ChatMessage(role: "assistant", content: reply))
            }
        }
    }
}
