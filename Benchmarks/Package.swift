// swift-tools-version:6.0
// Quill's benchmarks. A separate package that depends on the root by path, so timing code
// never ships in the library. Run: swift run -c release tensorcore-bench
import PackageDescription

let package = Package(
    name: "QuillBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [.package(name: "Quill", path: "..")],
    targets: [
        .target(name: "CBenchSupport"),
        .target(name: "BenchKit", dependencies: ["CBenchSupport", .product(name: "Quill", package: "Quill")]),
        .systemLibrary(name: "CBenchBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .executableTarget(
            name: "tensorcore-bench",
            dependencies: [
                .product(name: "TensorCore", package: "Quill"), "CBenchSupport",
                .target(name: "CBenchBLAS", condition: .when(platforms: [.linux])),
            ],
            linkerSettings: [.linkedFramework("Accelerate", .when(platforms: [.macOS]))]
        ),
        .executableTarget(name: "files-bench", dependencies: ["BenchKit", .product(name: "Quill", package: "Quill")]),
        .executableTarget(name: "model-bench", dependencies: ["BenchKit", .product(name: "Quill", package: "Quill")]),
        .executableTarget(name: "attention-bench", dependencies: ["BenchKit", .product(name: "Quill", package: "Quill")]),
        .executableTarget(name: "compare-bench", dependencies: ["BenchKit", .product(name: "Quill", package: "Quill")]),
        .executableTarget(name: "context-bench", dependencies: ["BenchKit", .product(name: "Quill", package: "Quill")]),
        .executableTarget(name: "serving-bench", dependencies: ["BenchKit", .product(name: "Quill", package: "Quill")]),
    ],
    swiftLanguageModes: [.v6]
)
