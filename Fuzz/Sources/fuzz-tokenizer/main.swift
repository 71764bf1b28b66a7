import FuzzSupport
import Quill

/// Inputs are tokenizer.json documents; a tokenizer that loads encodes and decodes a probe.
@_cdecl("LLVMFuzzerTestOneInput")
func test(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    if let tokenizer = try? Tokenizer(tokenizerJSON: input(data, size), name: "input/tokenizer.json") {
        _ = try? tokenizer.decode(tokenizer.encode("Hello, wörld! 🙂 12345 <|im_end|>"))
    }
    return 0
}

@_cdecl("fuzz_tokenizer_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 { runFuzzer(argc, argv, test) }
