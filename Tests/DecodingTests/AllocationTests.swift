import CAllocationCounter
import Foundation
import Testing
@testable import Decoding
import Attention
import TensorCore

#if DEBUG
let isReleaseBuild = false
#else
let isReleaseBuild = true
#endif

/// Heap allocations in the token loop, counted with the malloc counter of the
/// `CAllocationCounter` test target. Each test runs in a child process (an exit test), so
/// no other test's allocations are counted. Release builds only (`make test-release`): a
/// debug build allocates for generic thunks and small arrays the optimizer would keep on
/// the stack, so its counts say nothing about the shipped code.
@Suite(.enabled(if: isReleaseBuild && quill_allocation_counting_available(), "release builds without sanitizers only"))
struct AllocationTests {
    /// Allocations of each of `steps` decode steps of a model forward, after a prompt of
    /// `prompt` tokens.
    static func decodeStepAllocations(_ name: String, prompt: Int, steps: Int) async throws -> [Int64] {
        let generator = try SchedulerTests.generator(name)
        return try await generator.scheduler.perform { runner -> [Int64] in
            let (slot, _) = runner.makeSequence(reusingPrefixOf: [])
            try runner.reserve(slot, tokens: prompt + steps)  // the KV blocks, reserved up front
            for start in stride(from: 0, to: prompt, by: 16) {  // the prompt in chunks, as the scheduler feeds it
                let chunk = (start..<min(prompt, start + 16)).map { 3 + $0 % 300 }
                _ = try runner.step([ModelInput(sequence: slot, tokens: chunk)])
            }
            var counts = [Int64](repeating: 0, count: steps)
            var items = [ModelInput(sequence: slot, tokens: [5])]
            for step in 0..<steps {
                items[0].tokens[0] = 3 + step % 300
                let before = quill_allocation_count()
                _ = try runner.step(items)
                counts[step] = quill_allocation_count() - before
            }
            return counts
        }
    }

    /// The token loop's kernels allocate nothing once their scratch has grown: matrix ×
    /// vector and matrix × matrix for every weight type, and paged attention, each with two
    /// threads (a closure handed to the pool used to be copied to the heap on every call).
    @Test func kernelsAllocateNothing() async throws {
        let result = try #require(await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            let context = try ComputeContext(threads: 2)
            let k = 256, n = 512
            let f32 = try Tensor(name: "w", shape: [n, k], values: (0..<n * k).map { Float($0 % 13) / 13 - 0.5 })
            let weights = [f32, try f32.converted(to: .f16), try f32.converted(to: .bf16), try f32.converted(to: .q8_0),
                           try f32.converted(to: .q4_0)]
            let rowCounts = [1, 3, Kernels.gemmThreshold]
            let input = try FloatBuffer(rows: 8, columns: k), output = try FloatBuffer(rows: 8, columns: n)
            let cache = try PagedKVCache(configuration: KVCacheConfiguration(layers: 1, keyValueHeads: 2, headDimension: 64,
                                                                             memoryBudget: 1 << 20))
            let sequence = cache.makeSequence()
            try cache.reserve(sequence, tokens: 40)
            for position in 0..<40 { try cache.write(sequence, layer: 0, position: position, keys: input.pointer, values: input.pointer) }
            let queries = try FloatBuffer(rows: 8, columns: 8 * 64), attended = try FloatBuffer(rows: 8, columns: 8 * 64)
            func run() throws {
                for weight in weights {
                    for rows in rowCounts {
                        try Kernels.matmul(weight: weight, input: input, rows: 0..<rows, output: output, path: .automatic, context: context)
                    }
                }
                for rows in 1...8 {
                    try PagedAttention.attend(queries: queries, rows: rows, firstPosition: 32 - rows, cache: cache, sequence: sequence,
                                              layer: 0, output: attended, context: context)
                }
            }
            try run()  // grows the scratch
            // Ten counts: another thread of the process (the test harness) may allocate
            // during one, but a kernel that allocates would show in every count.
            var counts: [Int64] = []
            counts.reserveCapacity(10)
            for _ in 0..<10 {
                let before = quill_allocation_count()
                try run()
                counts.append(quill_allocation_count() - before)
            }
            print(counts.sorted()[5])
        })
        let allocations = Int(String(decoding: result.standardOutputContent, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        print("allocations in 15 matrix products + 8 attention calls (median of 10): \(allocations.map(String.init) ?? "?")")
        #expect(allocations == 0)
    }

    /// A decode step of a model allocates nothing, after 20 tokens as after 100: the
    /// kernels, the attention, the output head and the step's layout reuse their buffers,
    /// and the logits stay in the model's buffer for the sampler to read.
    @Test func decodeStepAllocationsDoNotGrowWithTheContext() async throws {
        // The child prints one line per model: the name, then each step's count.
        let result = try #require(await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            for name in ["llama-gqa", "mixtral-moe", "mamba"] {
                let short = try await AllocationTests.decodeStepAllocations(name, prompt: 20, steps: 6)
                let long = try await AllocationTests.decodeStepAllocations(name, prompt: 100, steps: 6)
                print(([name] + (short + long).map(String.init)).joined(separator: " "))
            }
        })
        let lines = String(decoding: result.standardOutputContent, as: UTF8.self).split(separator: "\n")
        #expect(lines.count == 3)
        for line in lines {
            let fields = line.split(separator: " ")
            let counts = fields.dropFirst().compactMap { Int($0) }
            print("\(fields[0]): allocations per decode step after 20 and 100 tokens: \(counts)")
            // Nothing, after 20 tokens as after 100; a step may allocate once when the
            // sequence's token array doubles its capacity or a KV block fills (amortized).
            #expect(counts.count == 12 && counts.sorted()[6] == 0 && counts.max()! <= 2, "\(line)")
        }
    }
}
