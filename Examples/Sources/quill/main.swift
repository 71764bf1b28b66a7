// `quill`: Quill's command-line example. Until a model architecture and the bundled
// default model land, it reports what the kernels will run with and checks them on a
// quantized matrix × vector product.
import Foundation
import Quill

let context = try ComputeContext()
print("Quill: kernels \(KernelLevel.current == .avx2 ? "AVX2 + FMA + F16C" : "portable scalar"), \(context.threadCount) threads")

// A 1024 × 1024 random weight quantized to Q4_0 and Q8_0, multiplied by a random vector.
var generator = SystemRandomNumberGenerator()
let weights = (0..<1024 * 1024).map { _ in Float.random(in: -1...1, using: &generator) }
let input = try FloatBuffer(rows: 1, columns: 1024, values: (0..<1024).map { _ in Float.random(in: -1...1, using: &generator) })
let exact = try FloatBuffer(rows: 1, columns: 1024)
let f32 = try Tensor(name: "demo.weight", shape: [1024, 1024], values: weights)
try Kernels.matmul(weight: f32, input: input, rows: 1, output: exact, context: context)
for type in [ElementType.q8_0, .q4_0] {
    let quantized = try f32.converted(to: type, pool: context.pool)
    let output = try FloatBuffer(rows: 1, columns: 1024)
    try Kernels.matmul(weight: quantized, input: input, rows: 1, output: output, context: context)
    let error = zip(output.values(), exact.values()).map { abs($0 - $1) }.max() ?? 0
    print("  \(type): \(quantized.byteCount / 1024) KiB of weights, max |error| vs F32 = \(String(format: "%.4f", error))")
}
print("""
No model is bundled yet: text generation arrives with the Models and Generator issues.
Run the tests with `make test`.
""")
