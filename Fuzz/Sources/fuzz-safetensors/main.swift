import FuzzSupport
import Quill

@_cdecl("LLVMFuzzerTestOneInput")
func test(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let file = MappedFile(copying: input(data, size), name: "input.safetensors")
    guard let checkpoint = try? SafetensorsFile(file: file) else { return 0 }
    for name in checkpoint.entries.keys { _ = try? checkpoint.tensor(name).floats() }
    return 0
}

@_cdecl("fuzz_safetensors_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 { runFuzzer(argc, argv, test) }
