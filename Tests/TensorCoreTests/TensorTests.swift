import Foundation
import Synchronization
import Testing
@testable import TensorCore

@Suite struct TensorTests {
    @Test func viewsMappedFileWithoutCopying() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("quill-tensor-\(UUID()).bin").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let values: [Float] = (0..<48).map(Float.init)
        let header = [UInt8](repeating: 0xAB, count: 16)
        try Data(header + values.withUnsafeBytes { Array($0) }).write(to: URL(fileURLWithPath: path))
        let file = try MappedFile(path: path)
        let storage = TensorStorage(file: file)
        let tensor = try Tensor(name: "t", elementType: .f32, shape: [6, 8], storage: storage, byteOffset: 16)
        #expect(tensor.rawPointer == file.baseAddress! + 16)  // a view, not a copy
        #expect(tensor.floats() == values)
        #expect(tensor.rows == 6 && tensor.columns == 8 && tensor.rowStride == 32)
        let slice = try tensor.slice(2..<4)
        #expect(slice.shape == [2, 8] && slice.floats() == Array(values[16..<32]))
        // Past the end of the file: a typed error, not an out-of-bounds read.
        #expect(throws: TensorError.self) { try Tensor(name: "t", elementType: .f32, shape: [6, 8], storage: storage, byteOffset: 20) }
        #expect(throws: TensorError.self) { try Tensor(name: "t", elementType: .f32, shape: [7, 8], storage: storage, byteOffset: 16) }
    }

    @Test func mappingErrorsNameTheFile() {
        #expect {
            try MappedFile(path: "/nonexistent/quill/model.safetensors")
        } throws: { error in
            "\(error)".contains("/nonexistent/quill/model.safetensors")
        }
        #expect(throws: TensorError.self) { try MappedFile(path: FileManager.default.temporaryDirectory.path) }
    }

    @Test func invalidShapesThrow() throws {
        let storage = try TensorStorage(byteCount: 1024) { _ in }
        #expect(throws: TensorError.self) { try Tensor(name: "q", elementType: .q8_0, shape: [2, 33], storage: storage) }
        #expect(throws: TensorError.self) { try Tensor(name: "n", elementType: .f32, shape: [-1, 4], storage: storage) }
        #expect(throws: TensorError.self) { try Tensor(name: "o", elementType: .f32, shape: [Int.max / 2, 4], storage: storage) }
        #expect(throws: TensorError.self) { try Tensor(name: "off", elementType: .f32, shape: [4], storage: storage, byteOffset: -4) }
        #expect(throws: TensorError.self) { try Tensor(name: "v", shape: [2, 2], values: [1, 2, 3]) }
        #expect(throws: TensorError.self) { try Tensor(name: "b", elementType: .q4_0, shape: [32], bytes: [UInt8](repeating: 0, count: 17)) }
        let t = try Tensor(name: "t", shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        #expect(throws: TensorError.self) { try t.slice(1..<3) }
        #expect(throws: TensorError.self) { try t.reshaped([4]) }
        #expect(try t.reshaped([3, 2]).floats() == [1, 2, 3, 4, 5, 6])
    }

    @Test(arguments: ElementType.allCases)
    func conversionsRoundTrip(type: ElementType) throws {
        let rows = type.isInterleaved ? 16 : 4  // interleaved in groups of 8 rows
        let values = randomFloats(rows * 64, seed: 3)
        let tensor = try Tensor(name: "w", shape: [rows, 64], values: values)
        let pool = try ThreadPool(threads: 2)
        let converted = try tensor.converted(to: type, pool: pool)
        #expect(converted.elementType == type && converted.shape == [rows, 64])
        #expect(converted.byteCount == rows * (try type.byteCount(elements: 64)))
        // Q4_0x8 holds Q4_0's values, Q8_0x8 Q8_0's (the layouts have no one-dimensional encoding).
        let plain = type.rowMajor
        let expected = try Quantization.decode(try Quantization.encode(values, as: plain), as: plain, count: values.count)
        #expect(converted.floats() == expected)
        // Converting back to F32 gives exactly the decoded values.
        #expect(try converted.converted(to: .f32).floats() == expected)
    }

    /// Q4_0x8 and Q8_0x8 hold exactly Q4_0's and Q8_0's values with eight rows interleaved;
    /// shapes and slices that would split a group of eight are refused, and only Q4_0 and
    /// Q8_0 matrices are interleaved.
    @Test(arguments: [ElementType.q4_0, .q8_0])
    func interleavedHoldsRowMajorValues(type: ElementType) throws {
        let values = randomFloats(24 * 96, seed: 8)
        let plain = try Tensor(name: "w", shape: [24, 96], values: values).converted(to: type)
        let x8 = try plain.interleavedForMatmul()
        #expect(x8.elementType.isInterleaved && x8.elementType.rowMajor == type)
        #expect(x8.byteCount == plain.byteCount && x8.floats() == plain.floats())
        #expect(x8.bytes.elementsEqual(plain.bytes) == false)  // the bytes moved
        var row = [Float](repeating: 0, count: 96)
        try x8.dequantizeRow(13, into: &row)
        #expect(row == Array(plain.floats()[13 * 96..<14 * 96]))
        #expect(try x8.slice(8..<16).floats() == Array(plain.floats()[8 * 96..<16 * 96]))
        #expect(throws: TensorError.self) { try x8.slice(4..<12) }
        #expect(throws: TensorError.self) { try x8.reshaped([48, 48]) }
        #expect(try x8.reshaped([3, 8, 96]).slice(1..<2).floats() == Array(plain.floats()[8 * 96..<16 * 96]))
        let twelveRows = try Tensor(name: "w", shape: [12, 96], values: randomFloats(12 * 96, seed: 9))
        #expect(throws: TensorError.self) { try twelveRows.converted(to: x8.elementType) }
        #expect(throws: TensorError.self) { try Quantization.encode(values, as: x8.elementType) }
        // Rows that do not fill groups of eight, or a float matrix: unchanged.
        #expect(try plain.slice(0..<12).interleavedForMatmul().elementType == type)
        #expect(try Tensor(name: "f", shape: [8, 32], values: randomFloats(256, seed: 1)).interleavedForMatmul().elementType == .f32)
    }

    @Test func byteCounts() throws {
        #expect(try ElementType.q8_0.byteCount(elements: 64) == 68)
        #expect(try ElementType.q4_0.byteCount(elements: 64) == 36)
        #expect(try ElementType.bf16.byteCount(elements: 3) == 6)
        #expect(throws: TensorError.self) { try ElementType.q4_0.byteCount(elements: 31) }
        #expect(throws: TensorError.self) { try ElementType.f32.byteCount(elements: Int.max) }
    }
}

@Suite struct ThreadPoolTests {
    @Test(arguments: [1, 2, 3])
    func everyIndexRunsExactlyOnce(threads: Int) throws {
        let pool = try ThreadPool(threads: threads)
        for count in [0, 1, 2, 7, 100, 10_000] {
            let hits = UnsafeMutablePointer<Int32>.allocate(capacity: max(count, 1))
            hits.initialize(repeating: 0, count: max(count, 1))
            defer { hits.deallocate() }
            pool.parallelFor(count) { index in hits[index] += 1 }
            #expect((0..<count).allSatisfy { hits[$0] == 1 }, "threads=\(threads) count=\(count)")
        }
    }

    @Test func nestedCallsRunInlineInsteadOfDeadlocking() throws {
        let pool = try ThreadPool(threads: 2)
        let total = Atomic<Int>(0)
        pool.parallelFor(8) { _ in
            pool.parallelFor(4) { _ in total.add(1, ordering: .relaxed) }
        }
        #expect(total.load(ordering: .relaxed) == 32)
    }

    final class Counter: Sendable { let value = Atomic<Int>(0) }

    @Test func concurrentCallersAreSerialized() async throws {
        let pool = try ThreadPool(threads: 2)
        let total = Counter()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask { for _ in 0..<50 { pool.parallelFor(16) { _ in total.value.add(1, ordering: .relaxed) } } }
            }
        }
        #expect(total.value.load(ordering: .relaxed) == 8 * 50 * 16)
    }

    /// Job tasks see a thread index below the running pool's thread count, also when a
    /// worker of a larger pool runs a smaller pool's job (its scratch has that many entries).
    @Test func jobThreadIndicesStayWithinTheRunningPool() throws {
        let outer = try ThreadPool(threads: 3), inner = try ThreadPool(threads: 1), pair = try ThreadPool(threads: 2)
        struct Job { var seen: UnsafeMutablePointer<Int32> }
        // One slot per (pool, outer task, inner task): tasks of one job run on different
        // threads, so they must not share a slot.
        let seen = UnsafeMutablePointer<Int32>.allocate(capacity: 2 * 32 * 4)
        seen.initialize(repeating: 0, count: 2 * 32 * 4)
        defer { seen.deallocate() }
        for (index, pool) in [inner, pair].enumerated() {
            outer.parallelFor(32) { task in
                // Record (index + 1) for each task, through the job form.
                pool.parallelFor(4, job: Job(seen: seen + (index * 32 + task) * 4)) { job, innerTask in
                    let job = job!.assumingMemoryBound(to: Job.self).pointee
                    job.seen[Int(innerTask)] = Int32(ThreadPool.currentThreadIndex) + 1
                }
            }
        }
        #expect((0..<128).allSatisfy { seen[$0] == 1 }, "a 1-thread pool's tasks must all see index 0")
        #expect((128..<256).allSatisfy { seen[$0] >= 1 && seen[$0] <= 2 })
        #expect(ThreadPool.currentThreadIndex == 0)
    }

    @Test func invalidThreadCountsThrow() {
        #expect(throws: TensorError.self) { try ThreadPool(threads: 0) }
        #expect(throws: TensorError.self) { try ThreadPool(threads: -3) }
    }
}
