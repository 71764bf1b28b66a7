// TensorCore benchmark: GEMV throughput per element type as a fraction of the DRAM read
// bandwidth measured in the same run, and the GEMM path's GFLOPS as a fraction of plain
// OpenBLAS sgemm on the same shapes. Ratios, not absolute numbers, are what compare across
// runs on a shared, noisy machine.
//
//   swift run -c release tensorcore-bench [--threads 1,2] [--json out.json] [--quick] [--only gemv|gemm] [--shapes 4096x4096,2048x5632] [--types f16,q4_0] [--gemv-rows 8]
//       [--gemv-rows 1...8]
import CBenchSupport
import Foundation
import TensorCore
#if canImport(Accelerate)
import Accelerate
#else
import CBenchBLAS
#endif

func seconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

/// Median over `repetitions` of the time of one call of `body` (which is repeated until a
/// repetition lasts at least `minimum` seconds).
func timePerCall(repetitions: Int = 5, minimum: Double = 0.15, _ body: () throws -> Void) rethrows -> Double {
    try body()  // warm-up
    var samples: [Double] = []
    for _ in 0..<repetitions {
        var calls = 0
        let start = seconds()
        var elapsed = 0.0
        repeat {
            try body()
            calls += 1
            elapsed = seconds() - start
        } while elapsed < minimum
        samples.append(elapsed / Double(calls))
    }
    return median(samples)
}

let arguments = CommandLine.arguments
func option(_ name: String) -> String? {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}
let threadCounts = (option("--threads") ?? "1,2").split(separator: ",").compactMap { Int($0) }
let quick = arguments.contains("--quick")
let jsonPath = option("--json")
let only = option("--only")  // gemv or gemm: run one half
// Activation rows of the GEMV half (row-wise, as batched decode multiplies): weight bytes per
// second stays the figure, so 8 rows at the rate of 1 means the 8 rows cost nothing extra.
let gemvRows = max(1, min(8, Int(option("--gemv-rows") ?? "1") ?? 1))
// Weight types to run (`--types f16,q4_0`, as the rows print them); all when absent.
let types = option("--types").map { Set($0.uppercased().split(separator: ",").map(String.init)) }
let selectedTypes = ElementType.allCases.filter { types?.contains("\($0)".uppercased()) ?? true }

func randomValues(_ count: Int) -> [Float] {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in Float.random(in: -1...1, using: &generator) }
}

/// Streaming read bandwidth (GB/s) over a 1 GiB buffer split across the pool's threads:
/// the better of one sequential stream per thread and four interleaved ones (more streams
/// engage more prefetchers), so ratios are against the most this machine gave.
final class BandwidthProbe {
    let count = (quick ? 256 : 1024) << 20 / 4
    let buffer: UnsafeMutablePointer<Float>
    let sink: UnsafeMutablePointer<Float>
    let pool: ThreadPool

    init(pool: ThreadPool) {
        self.pool = pool
        buffer = .allocate(capacity: count)
        buffer.initialize(repeating: 1, count: count)
        sink = .allocate(capacity: pool.threadCount)
    }
    deinit { buffer.deallocate(); sink.deallocate() }

    func measure(repetitions: Int = 3) -> Double {
        let threads = pool.threadCount, part = count / threads
        var best = 0.0
        for streams in [1, 4] {
            let time = timePerCall(repetitions: repetitions, minimum: 0.05) {
                pool.parallelFor(threads) { t in
                    sink[t] = bench_stream_sum_interleaved(buffer + t * part, Int64(part), Int32(streams))
                }
            }
            best = max(best, Double(count * 4) / time / 1e9)
        }
        return best
    }
}

struct Row: Codable {
    var benchmark: String, threads: Int, shape: String, type: String
    var value: Double, unit: String, ratio: Double, ratioOf: String
}
var rows: [Row] = []
@MainActor func report(_ row: Row) {
    rows.append(row)
    let valueText = String(format: "%8.2f %@", row.value, row.unit)
    print("\(row.benchmark.padding(toLength: 6, withPad: " ", startingAt: 0)) t=\(row.threads) \(row.shape.padding(toLength: 16, withPad: " ", startingAt: 0)) \(row.type.padding(toLength: 5, withPad: " ", startingAt: 0)) \(valueText)   \(String(format: "%.3f", row.ratio)) of \(row.ratioOf)")
}

// --shapes NxK,... (weight rows × columns); the 1.1B's are 2048x2048 (q, o), 256x2048 (k, v),
// 5632x2048 (gate, up) and 2048x5632 (down).
let shapes = (option("--shapes") ?? "4096x4096,2048x5632").split(separator: ",").compactMap { text -> (rows: Int, columns: Int)? in
    let parts = text.split(separator: "x").compactMap { Int($0) }
    return parts.count == 2 ? (rows: parts[0], columns: parts[1]) : nil
}
let targetBytes = (quick ? 128 : 320) << 20  // cycle through copies so weights come from DRAM, not the 32 MiB L3

for threads in threadCounts {
    let context = try ComputeContext(threads: threads)
    let probe = BandwidthProbe(pool: context.pool)
    let bandwidth = probe.measure(repetitions: 5)
    print(String(format: "DRAM read bandwidth, %d thread(s): %.1f GB/s", threads, bandwidth))
    rows.append(Row(benchmark: "stream", threads: threads, shape: "1 GiB", type: "F32", value: bandwidth, unit: "GB/s", ratio: 1, ratioOf: "itself"))

    for shape in shapes {
        let f32 = try Tensor(name: "bench.weight", shape: [shape.rows, shape.columns], values: randomValues(shape.rows * shape.columns))
        let label = "\(shape.rows)x\(shape.columns)"
        let input = try FloatBuffer(rows: 512, columns: shape.columns, values: randomValues(512 * shape.columns))
        let output = try FloatBuffer(rows: 512, columns: shape.rows)

        // GEMV: --gemv-rows activation rows, weights streamed from memory.
        for type in selectedTypes where only != "gemm" {
            let first = try f32.converted(to: type, pool: context.pool)
            let copies = max(1, targetBytes / first.byteCount)
            var weights = [first]
            for _ in 1..<copies {
                // Converting F32 to F32 returns the same storage: copy it so every copy is real.
                let copy = type == .f32 ? try Tensor(name: f32.name, shape: f32.shape, values: f32.floats()) : f32
                weights.append(try copy.converted(to: type, pool: context.pool))
            }
            // Alternate bandwidth probe and kernel, five rounds, and take the median ratio:
            // the shared machine's bandwidth drifts by 20% between minutes.
            var next = 0
            var rates: [Double] = [], ratios: [Double] = []
            for _ in 0..<5 {
                let available = probe.measure()
                let time = try timePerCall(repetitions: 1, minimum: 0.2) {
                    try Kernels.matmul(weight: weights[next], input: input, rows: 0..<gemvRows, output: output,
                                       path: .rowwise, context: context)
                    next = (next + 1) % weights.count
                }
                rates.append(Double(first.byteCount) / time / 1e9)
                ratios.append(rates.last! / available)
            }
            report(Row(benchmark: gemvRows == 1 ? "gemv" : "gemv, \(gemvRows) rows", threads: threads, shape: label,
                       type: "\(type)", value: median(rates), unit: "GB/s", ratio: median(ratios), ratioOf: "bandwidth"))
        }

        // GEMM: many activation rows against plain OpenBLAS sgemm with its own threads.
        for m in [128, 512] where only != "gemv" {
            let flops = 2.0 * Double(m * shape.rows * shape.columns)
            #if !canImport(Accelerate)
            openblas_set_num_threads(Int32(threads))
            #endif
            let w = f32.rawPointer.assumingMemoryBound(to: Float.self)
            let baselineTime = timePerCall(repetitions: 3, minimum: 0.2) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(shape.rows), Int32(shape.columns),
                            1, input.pointer, Int32(shape.columns), w, Int32(shape.columns), 0, output.pointer, Int32(shape.rows))
            }
            #if !canImport(Accelerate)
            openblas_set_num_threads(1)
            #endif
            let baseline = flops / baselineTime / 1e9
            report(Row(benchmark: "sgemm", threads: threads, shape: "\(m)x\(label)", type: "F32", value: baseline, unit: "GFLOPS",
                       ratio: 1, ratioOf: "itself"))
            for type in selectedTypes {
                let weight = try f32.converted(to: type, pool: context.pool)
                let time = try timePerCall(repetitions: 3, minimum: 0.2) {
                    try Kernels.matmul(weight: weight, input: input, rows: m, output: output, context: context)
                }
                let gflops = flops / time / 1e9
                report(Row(benchmark: "gemm", threads: threads, shape: "\(m)x\(label)", type: "\(type)", value: gflops, unit: "GFLOPS",
                           ratio: gflops / baseline, ratioOf: "sgemm"))
            }
        }
    }
}

if let jsonPath {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(rows).write(to: URL(fileURLWithPath: jsonPath))
    print("wrote \(jsonPath)")
}
