// swift-tools-version:6.0
// libFuzzer targets for Quill's parsers, kept out of the root package so the instrumented
// build never touches the library's normal one. Build and run with Scripts/fuzz.sh.
import PackageDescription

let targets = ["safetensors", "gguf", "tokenizer", "encode", "config", "chattemplate"]

let package = Package(
    name: "QuillFuzz",
    platforms: [.macOS(.v14)],
    dependencies: [.package(name: "Quill", path: "..")],
    targets: [
        .target(name: "FuzzSupport"),
    ] + targets.map { name in
        .executableTarget(name: "fuzz-\(name)", dependencies: ["FuzzSupport", .product(name: "Quill", package: "Quill")])
    },
    swiftLanguageModes: [.v6]
)
