import CQuillKernels

extension Kernels {
    /// Mamba's selective scan over `rows` consecutive rows of the activation buffers, for one
    /// sequence whose state is `h` ([inner × states], updated in place):
    /// step = softplus(delta + dtBias); h = exp(a·step)·h + step·B·u; y = (h·C + u·d)·silu(z).
    /// B and C are the `states` columns of `bc` starting at `bcColumn` and after them; z is
    /// `z`'s columns from `zColumn`. Parallel over channels (the recurrence runs along time
    /// within each channel).
    public static func selectiveScan(state h: inout [Float], a: [Float], dtBias: [Float], d: [Float], delta: FloatBuffer,
                                     bc: FloatBuffer, bcColumn: Int, u: FloatBuffer, z: FloatBuffer, zColumn: Int,
                                     output y: FloatBuffer, rows: Range<Int>, states: Int, context: ComputeContext) throws {
        let inner = u.columns
        let operation = "selective scan"
        guard states > 0, h.count == inner * states, a.count == inner * states, dtBias.count == inner, d.count == inner,
              delta.columns == inner, y.columns == inner, bcColumn >= 0, bcColumn + 2 * states <= bc.columns,
              zColumn >= 0, zColumn + inner <= z.columns else {
            throw TensorError.shapeMismatch(operation: operation, detail: "state \(h.count), inner \(inner), states \(states)")
        }
        guard rows.lowerBound >= 0, rows.upperBound <= min(delta.rows, bc.rows, u.rows, z.rows, y.rows) else {
            throw TensorError.shapeMismatch(operation: operation, detail: "rows \(rows) outside the buffers")
        }
        guard !rows.isEmpty else { return }
        let first = rows.lowerBound
        h.withUnsafeMutableBufferPointer { h in
            a.withUnsafeBufferPointer { a in
                dtBias.withUnsafeBufferPointer { dtBias in
                    d.withUnsafeBufferPointer { d in
                        var args = quill_mamba_scan_args(
                            h: h.baseAddress, a: a.baseAddress, dt_bias: dtBias.baseAddress, d: d.baseAddress,
                            delta: delta.row(first), bc: bc.row(first) + bcColumn, u: u.row(first), z: z.row(first) + zColumn,
                            y: y.row(first), delta_stride: Int64(delta.columns), bc_stride: Int64(bc.columns),
                            u_stride: Int64(u.columns), z_stride: Int64(z.columns), y_stride: Int64(y.columns),
                            tokens: Int64(rows.count), states: Int64(states))
                        // Channel slices of 64: enough tasks to balance two threads, few enough to be cheap.
                        let slice = 64, tasks = (inner + slice - 1) / slice
                        withUnsafePointer(to: &args) { pointer in
                            context.pool.parallelFor(tasks, job: ScanJob(arguments: pointer, inner: inner, slice: slice)) { job, task in
                                let job = job!.assumingMemoryBound(to: ScanJob.self).pointee
                                let begin = Int(task) * job.slice
                                quill_mamba_scan(job.arguments, Int64(begin), Int64(min(job.inner, begin + job.slice)))
                            }
                        }
                    }
                }
            }
        }
    }

    /// Mamba's causal depthwise convolution of `input`'s first `channels` columns over
    /// `rows`, into `output`'s: each channel's `kernel` taps (`weights`, [channels × kernel])
    /// over its kernel−1 previous inputs, kept in `window` ([channels × (kernel−1)], oldest
    /// first, advanced by every row), and the row's own input, plus `bias`.
    public static func causalConvolution(input: FloatBuffer, output: FloatBuffer, rows: Range<Int>, window: inout [Float],
                                         weights: [Float], bias: [Float], channels: Int) throws {
        guard channels > 0, weights.count % channels == 0, weights.count >= channels, bias.count == channels,
              window.count == channels * (weights.count / channels - 1), input.columns >= channels, output.columns >= channels else {
            throw TensorError.shapeMismatch(operation: "causal convolution",
                                            detail: "\(channels) channels, weights \(weights.count), bias \(bias.count), window \(window.count)")
        }
        guard rows.lowerBound >= 0, rows.upperBound <= min(input.rows, output.rows) else {
            throw TensorError.shapeMismatch(operation: "causal convolution", detail: "rows \(rows) outside the buffers")
        }
        guard !rows.isEmpty else { return }
        window.withUnsafeMutableBufferPointer { window in
            weights.withUnsafeBufferPointer { weights in
                bias.withUnsafeBufferPointer { bias in
                    quill_causal_conv(input.row(rows.lowerBound), Int64(input.columns), output.row(rows.lowerBound), Int64(output.columns),
                                      Int64(rows.count), window.baseAddress, weights.baseAddress, bias.baseAddress, Int64(channels),
                                      Int64(weights.count / channels))
                }
            }
        }
    }

    /// What a scan task reads (the task captures nothing, so nothing is allocated).
    private struct ScanJob {
        var arguments: UnsafePointer<quill_mamba_scan_args>, inner: Int, slice: Int
    }
}
