import Foundation
import FuzzSupport
import Quill

/// Inputs are arbitrary bytes, taken as text (repaired to UTF-8) and encoded and decoded by
/// the fixture tokenizers of both families, from tokenizer.json and from GGUF.
let tokenizers: [Tokenizer] = {
    let root = "/" + #filePath.split(separator: "/").dropLast(4).joined(separator: "/") + "/Tests/Fixtures/tokenizers/"
    var result: [Tokenizer] = []
    for kind in ["byte-level", "sentencepiece"] {
        if let t = try? Tokenizer(directory: URL(fileURLWithPath: root + kind)) { result.append(t) }
        if let file = try? GGUFFile(path: root + kind + ".gguf"), let t = try? Tokenizer(gguf: file) { result.append(t) }
    }
    precondition(result.count == 4, "fixture tokenizers missing")
    return result
}()

@_cdecl("LLVMFuzzerTestOneInput")
func test(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let text = String(decoding: input(data, size), as: UTF8.self)
    for tokenizer in tokenizers {
        let ids = tokenizer.encode(text)
        var stream = tokenizer.makeStreamingDetokenizer()
        var streamed = ""
        for id in ids { streamed += (try? stream.append(id)) ?? "" }
        streamed += stream.finish()
        precondition(streamed == (try? tokenizer.decode(ids)), "streaming and whole decode disagree")
    }
    return 0
}

@_cdecl("fuzz_encode_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 { runFuzzer(argc, argv, test) }
