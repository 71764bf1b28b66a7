import CQuillKernels
import Foundation

/// A persistent pool of threads that splits kernel work by rows. It runs outside Swift's
/// cooperative pool on purpose: the token loop must not hop through tasks or `await`.
///
/// `@unchecked Sendable`: the C pool serializes `run` calls behind its own mutex, and the
/// pointer is immutable for the pool's lifetime.
public final class ThreadPool: @unchecked Sendable {
    private let pool: OpaquePointer
    /// Threads doing work in each job, the caller included.
    public let threadCount: Int

    /// Creates a pool of `threads` threads (default: the active processor count).
    public init(threads: Int? = nil) throws {
        let count = threads ?? ProcessInfo.processInfo.activeProcessorCount
        guard count >= 1, count <= 1024 else {
            throw TensorError.invalidArgument(operation: "ThreadPool", detail: "thread count \(count) must be between 1 and 1024")
        }
        guard let pool = quill_pool_create(Int32(count)) else {
            throw TensorError.invalidArgument(operation: "ThreadPool", detail: "could not start \(count) threads")
        }
        self.pool = pool
        self.threadCount = count
    }

    deinit { quill_pool_destroy(pool) }

    /// A task of `parallelFor(_:job:_:)`: called with a pointer to the job and a task index.
    /// A C function pointer, so it cannot capture (and allocate) anything.
    public typealias Task = @convention(c) (_ job: UnsafeMutableRawPointer?, _ index: Int64) -> Void

    /// The calling thread's index in the `parallelFor(_:job:_:)` job it runs: 0 for the
    /// thread that called it (and for any thread outside a job), 1..<threadCount for the
    /// pool's workers; always below the running pool's `threadCount`. Tasks use it to pick
    /// per-thread scratch memory.
    public static var currentThreadIndex: Int { Int(quill_pool_thread_index()) }

    /// Calls `task(&job, i)` for every i in 0..<count, spread over the pool, and returns when
    /// all calls are done. Unlike the closure form it allocates nothing (a closure passed
    /// through the C pool is copied to the heap on every call), so the token loop uses it:
    /// `job` carries everything the task needs, and the task reads it through the pointer.
    public func parallelFor<Job>(_ count: Int, job: Job, _ task: Task) {
        guard count > 0 else { return }
        var job = job
        // Always through the C pool, even for one thread or one task: it sets the thread
        // index that tasks use to pick their scratch.
        withUnsafeMutableBytes(of: &job) { quill_pool_run(pool, task, $0.baseAddress, Int64(count)) }
    }

    /// Calls `body(i)` for every i in 0..<count, spread over the pool, and returns when all
    /// calls are done. `body` runs concurrently on several threads: it must only write
    /// memory that no other index writes.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        guard count > 0 else { return }
        if threadCount == 1 || count == 1 {
            for index in 0..<count { body(index) }
            return
        }
        withoutActuallyEscaping(body) { body in
            var job = body
            withUnsafeMutablePointer(to: &job) { pointer in
                quill_pool_run(pool, { context, task in
                    context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(task))
                }, pointer, Int64(count))
            }
        }
    }
}
