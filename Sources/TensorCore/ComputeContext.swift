import CQuillKernels
#if canImport(Accelerate)
import Accelerate
#else
import CQuillBLAS
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Which instruction set the kernels run with.
public enum KernelLevel: Int32, Sendable {
    /// Portable C.
    case scalar = 0
    /// AVX2 + FMA + F16C (x86-64).
    case avx2 = 1

    /// The level in use (chosen once from the CPU's features).
    public static var current: KernelLevel { KernelLevel(rawValue: quill_kernel_level()) ?? .scalar }
    /// The best level this CPU supports.
    public static var best: KernelLevel { KernelLevel(rawValue: quill_kernel_best_level()) ?? .scalar }
    /// Forces a level, clamped to what the CPU supports (tests use it to check both paths).
    public static func force(_ level: KernelLevel) { quill_set_kernel_level(level.rawValue) }

    /// Runs `body` with the calling thread's kernels pinned to `level` (other threads, the
    /// pool's workers included, are unaffected).
    public static func withThreadLevel<T>(_ level: KernelLevel, _ body: () throws -> T) rethrows -> T {
        quill_set_thread_kernel_level(level.rawValue)
        defer { quill_set_thread_kernel_level(-1) }
        return try body()
    }
}

// OpenBLAS must not start threads of its own: the pool already occupies every core and
// calls sgemm from each of its threads on separate column slices.
private let blasConfigured: Void = {
    #if !canImport(Accelerate)
    openblas_set_num_threads(1)
    #endif
}()

/// Grow-only scratch memory. Once a model has run its largest step, nothing is allocated.
final class Scratch {
    private(set) var pointer: UnsafeMutableRawPointer?
    private(set) var capacity = 0

    /// At least `bytes` bytes, 64-byte aligned; contents are not preserved across growth.
    func reserve(_ bytes: Int) throws -> UnsafeMutableRawPointer {
        if let pointer, bytes <= capacity { return pointer }
        free(pointer)
        pointer = nil
        capacity = 0
        var raw: UnsafeMutableRawPointer?
        let size = max(bytes, 64)
        guard posix_memalign(&raw, 64, size) == 0, let raw else {
            throw TensorError.invalidArgument(operation: "scratch", detail: "cannot allocate \(size) bytes")
        }
        pointer = raw
        capacity = size
        return raw
    }

    deinit { free(pointer) }
}

/// What a forward pass needs to run kernels: the thread pool and reusable scratch memory.
/// One context serves one forward pass at a time (it is not thread-safe); create one per
/// model instance.
public final class ComputeContext {
    /// The pool kernels split their work over.
    public let pool: ThreadPool
    let quantizedInput = Scratch()
    /// One scratch per pool thread: GEMM's dequantized weight tiles, other kernels' work
    /// space (`perThreadScratch`).
    let tiles: [Scratch]
    /// The tiles' addresses, indexed by `ThreadPool.currentThreadIndex`.
    private let tilePointers: UnsafeMutablePointer<UnsafeMutableRawPointer?>

    /// A context with its own pool of `threads` threads (default: active processors).
    public convenience init(threads: Int? = nil) throws {
        try self.init(pool: ThreadPool(threads: threads))
    }

    /// A context sharing an existing pool.
    public init(pool: ThreadPool) {
        _ = blasConfigured
        self.pool = pool
        self.tiles = (0..<pool.threadCount).map { _ in Scratch() }
        tilePointers = .allocate(capacity: pool.threadCount)
        tilePointers.initialize(repeating: nil, count: pool.threadCount)
    }

    deinit { tilePointers.deallocate() }

    /// At least `bytes` of scratch memory for each pool thread, for kernels in other
    /// modules: reserve it before a `parallelFor` job, and in each task use entry
    /// `ThreadPool.currentThreadIndex`. Grow-only, so the token loop allocates nothing once
    /// the largest step has run; the memory is shared with other kernels, so it holds
    /// nothing across calls.
    public func perThreadScratch(bytes: Int) throws -> UnsafePointer<UnsafeMutableRawPointer?> {
        for (index, tile) in tiles.enumerated() { tilePointers[index] = try tile.reserve(bytes) }
        return UnsafePointer(tilePointers)
    }

    /// At least `bytes` of scratch memory shared by a kernel's tasks (each writing its own
    /// part), for kernels in other modules. Grow-only; holds nothing across calls.
    public func sharedScratch(bytes: Int) throws -> UnsafeMutableRawPointer { try shared.reserve(bytes) }
    private let shared = Scratch()

    /// Threads available to each kernel.
    public var threadCount: Int { pool.threadCount }
}

/// Single-precision GEMM on row-major operands: C[m×n] = A[m×k] · B[n×k]ᵀ.
@inline(__always)
func sgemmTransposedB(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                      b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k),
                1, a, Int32(lda), b, Int32(ldb), 0, c, Int32(ldc))
}
