import FuzzSupport
import Quill

@_cdecl("LLVMFuzzerTestOneInput")
func test(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let file = MappedFile(copying: input(data, size), name: "input.gguf")
    guard let gguf = try? GGUFFile(file: file) else { return 0 }
    for name in gguf.tensorNames { _ = try? gguf.tensor(name).floats() }
    if let tokenizer = try? Tokenizer(gguf: gguf) {
        let ids = tokenizer.encode("Hello, wörld! 🙂 12345", addSpecialTokens: true)
        _ = try? tokenizer.decode(ids)
    }
    return 0
}

@_cdecl("fuzz_gguf_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 { runFuzzer(argc, argv, test) }
