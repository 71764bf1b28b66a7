// Helpers the benchmarks need outside the library: a bandwidth probe.
#include <stdint.h>
/// Sums n floats with four AVX2 accumulators (scalar where AVX2 is missing): a streaming
/// read that measures the memory bandwidth one thread can draw.
float bench_stream_sum(const float *x, int64_t n);
/// The same read as `streams` interleaved sequential streams (the slice cut in equal
/// parts read side by side), which engages more hardware prefetchers.
float bench_stream_sum_interleaved(const float *x, int64_t n, int streams);
