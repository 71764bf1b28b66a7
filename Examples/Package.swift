// swift-tools-version:6.0
// Example programs for Quill. A separate package so the root exports libraries only.
import PackageDescription

let package = Package(
    name: "QuillExamples",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "Quill", path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // The command-line tool: generate, chat, logits, tokenize, detokenize, perplexity, bench.
        .executableTarget(name: "quill", dependencies: [
            .product(name: "Quill", package: "Quill"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // The smallest program that embeds Quill.
        .executableTarget(name: "embed", dependencies: [.product(name: "Quill", package: "Quill")]),
    ],
    swiftLanguageModes: [.v6]
)
