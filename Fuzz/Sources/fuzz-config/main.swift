import Foundation
import FuzzSupport
import Quill

@_cdecl("LLVMFuzzerTestOneInput")
func test(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = input(data, size)
    if let configuration = try? ModelConfiguration(json: Data(bytes), path: "input/config.json"),
       case let .transformer(c) = configuration {
        _ = try? c.rotaryEmbedding()
    }
    return 0
}

@_cdecl("fuzz_config_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 { runFuzzer(argc, argv, test) }
