// swift-tools-version:6.0
// Example programs for Quill. A separate package so the root exports libraries only.
import PackageDescription

let package = Package(
    name: "QuillExamples",
    platforms: [.macOS(.v14)],
    dependencies: [.package(name: "Quill", path: "..")],
    targets: [
        .executableTarget(name: "quill", dependencies: [.product(name: "Quill", package: "Quill")]),
    ],
    swiftLanguageModes: [.v6]
)
