import CQuillKernels

extension Kernels {
    /// Up to eight (weight, output, activation rows) parts of one GEMV job, stored inline so
    /// that the job, passed by value to the pool, needs no heap storage. (`@unchecked
    /// Sendable`: raw pointers the pool's threads read; without it Swift 6.3's region
    /// analysis crashes on this job.)
    struct GemvParts: @unchecked Sendable {
        struct Part {
            var weights: UnsafeRawPointer, stride: Int64, rows: Int
            /// Activation row i of `activationRows` writes output + (i - lowerBound) · rows.
            var output: UnsafeMutablePointer<Float>
            /// The rows of the job's activations this matrix multiplies.
            var activationRows: Range<Int>
            /// Weight rows per task, and tasks (set by `divide`).
            var chunk = 0, tasks = 0
        }
        /// Eight: a mixture-of-experts layer's gate and up matrices for four experts.
        static let capacity = 8
        private var storage: (Part?, Part?, Part?, Part?, Part?, Part?, Part?, Part?) = (nil, nil, nil, nil, nil, nil, nil, nil)
        private(set) var count = 0
        private(set) var totalTasks = 0

        /// Adds `weight`, multiplying `activationRows` of the job's input into `output`
        /// (which receives the first of those rows). count < capacity.
        mutating func append(_ weight: Tensor, _ output: UnsafeMutablePointer<Float>, activationRows: Range<Int>) {
            count += 1
            self[count - 1] = Part(weights: weight.rawPointer, stride: Int64(weight.rowStride), rows: weight.rows, output: output,
                                   activationRows: activationRows)
        }

        /// Chunks per thread when `rows` activation rows meet `type` weights. Quantized
        /// decode rows take 2: each chunk starts a new memory stream whose first lines no
        /// prefetch covers, and with 16 chunks those starts cost the integer kernels 5-20% of
        /// decode (quill bench, 2 threads, alternating: 1.1B Q8_0 24.4 -> 29.5 tok/s, MoE
        /// Q4_0 186-208 -> 235-241, Mamba Q8_0 154-169 -> 178-189). Float weights keep 16
        /// (no gain measured), as do prompts, where balancing the threads matters more.
        static func chunksPerThread(type: ElementType, rows: Int) -> Int {
            type.isQuantized && rows < Kernels.gemmThreshold ? 2 : 16
        }

        /// Splits each matrix into `chunksPerThread` chunks per thread for its own activation
        /// rows (of a multiple of 8 rows, at least 16: interleaved groups never straddle two
        /// chunks). Each matrix is split as if it ran alone: a row's result depends on where
        /// its chunk starts, so results equal separate calls.
        mutating func divide(threads: Int, type: ElementType) {
            totalTasks = 0
            for index in 0..<count {
                var part = self[index]
                let n = part.rows, per = Self.chunksPerThread(type: type, rows: part.activationRows.count)
                part.chunk = max(16, ((n + threads * per - 1) / (threads * per) + 7) / 8 * 8)
                part.tasks = (n + part.chunk - 1) / part.chunk
                totalTasks += part.tasks
                self[index] = part
            }
        }

        /// Part `index` (< count).
        subscript(index: Int) -> Part {
            get {
                switch index {
                case 0: return storage.0!
                case 1: return storage.1!
                case 2: return storage.2!
                case 3: return storage.3!
                case 4: return storage.4!
                case 5: return storage.5!
                case 6: return storage.6!
                default: return storage.7!
                }
            }
            set {
                switch index {
                case 0: storage.0 = newValue
                case 1: storage.1 = newValue
                case 2: storage.2 = newValue
                case 3: storage.3 = newValue
                case 4: storage.4 = newValue
                case 5: storage.5 = newValue
                case 6: storage.6 = newValue
                default: storage.7 = newValue
                }
            }
        }
    }

    /// What a GEMV task reads: everything by value, so the task captures nothing.
    struct GemvJob: @unchecked Sendable {
        var parts: GemvParts, type: ElementType
        /// Float activations [rows, k], and the same quantized for Q8_0/interleaved (blocks)
        /// or Q4_0 (pairs of blocks) weights.
        var input: UnsafeMutablePointer<Float>
        var rows: Int, k: Int
        var blockActivations: UnsafeMutablePointer<quill_activation_block>?
        var pairActivations: UnsafeMutablePointer<quill_activation_pair>?
    }
}
