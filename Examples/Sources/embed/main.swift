// The smallest Swift program that embeds Quill: load a model, stream a reply.
//
//   swift run --package-path Examples -c release embed [MODEL]
import Foundation
import Quill

let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()
let model = CommandLine.arguments.dropFirst().first
    ?? repository.appendingPathComponent("Examples/Models/quill-license").path

let generator = try Generator(modelPath: model)        // a Hugging Face folder or a .gguf file
var parameters = GenerationParameters()
parameters.maxTokens = 80
parameters.temperature = 0.7
parameters.seed = 42

let conversation: [ChatMessage] = [ChatMessage(role: "user", content: "Permission is hereby granted")]
for try await event in generator.generate(.chat(conversation), parameters: parameters) {
    switch event {
    case let .text(piece, _):
        print(piece, terminator: "")
    case let .finished(reason, statistics):
        print(String(format: "\n[%@, %d tokens, %.0f tok/s]", "\(reason)", statistics.generatedTokens,
                     statistics.decodeTokensPerSecond))
    case .logprobs:
        break
    }
}
