// swift-tools-version:6.0
// Quill: CPU inference for large language models, as an embeddable Swift package.
// The root package exports libraries only; example programs and benchmarks are separate
// packages under Examples/ and Benchmarks/ that depend on this one by path. No target
// sets unsafe compiler flags, so Quill works as a versioned dependency: the AVX2 kernels
// get their instruction set from per-function target attributes in CQuillKernels.
import PackageDescription

let package = Package(
    name: "Quill",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "Quill", targets: ["Quill"]),
        .library(name: "TensorCore", targets: ["TensorCore"]),
        .library(name: "Attention", targets: ["Attention"]),
        .library(name: "Tokenization", targets: ["Tokenization"]),
        .library(name: "Models", targets: ["Models"]),
        .library(name: "Decoding", targets: ["Decoding"]),
    ],
    targets: [
        .target(name: "CQuillKernels"),
        .systemLibrary(
            name: "CQuillBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .target(
            name: "TensorCore",
            dependencies: [
                "CQuillKernels",
                .target(name: "CQuillBLAS", condition: .when(platforms: [.linux])),
            ],
            linkerSettings: [.linkedFramework("Accelerate", .when(platforms: [.macOS]))]
        ),
        // The layers, dependencies pointing one way: TensorCore ← Attention ← Models ← Decoding.
        .target(name: "Attention", dependencies: ["TensorCore", "CQuillKernels"]),
        .target(name: "Tokenization", dependencies: ["TensorCore"]),
        .target(name: "Models", dependencies: ["Attention", "Tokenization"]),
        .target(name: "Decoding", dependencies: ["Models"]),
        .target(name: "Quill", dependencies: ["Decoding"]),
        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore", "CQuillKernels"], exclude: ["Fixtures"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models"], exclude: ["Fixtures"]),
        .testTarget(name: "AttentionTests", dependencies: ["Attention"]),
        // Test support: counts Swift allocations (does decoding allocate per token?).
        .target(name: "CAllocationCounter", path: "Tests/CAllocationCounter"),
        .testTarget(name: "DecodingTests", dependencies: ["Decoding", "CAllocationCounter"], exclude: ["Fixtures"]),
        .testTarget(name: "TokenizationTests", dependencies: ["Tokenization", "TensorCore"]),
    ],
    swiftLanguageModes: [.v6]
)
