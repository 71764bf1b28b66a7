import FuzzSupport
import Quill

/// A template from arbitrary bytes, rendered with a small conversation: parse errors and
/// template exceptions are fine, a trap, a hang or unbounded memory is not.
@_cdecl("LLVMFuzzerTestOneInput")
func test(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let source = String(decoding: input(data, size), as: UTF8.self)
    guard let template = try? ChatTemplate(source) else { return 0 }
    let messages = [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi 🙂"),
                    ChatMessage(role: "assistant", content: "Hello."), ChatMessage(role: "user", content: "Bye")]
    _ = try? template.render(messages, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
    return 0
}

@_cdecl("fuzz_chattemplate_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 { runFuzzer(argc, argv, test) }
