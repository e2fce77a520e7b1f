// Streams up to three byte ranges from DRAM into L2, for the kernels that will read them next.
//
// Batch-1 decode leaves DRAM nearly idle while latency-bound kernels run (attention over a short context:
// ~8 us per layer on an H100). Launched on a side stream beside attention, this fills that time with the
// weights of the projections that follow, so they read part of their bytes from L2 (kernels/l2_prefetch.py).
//
// Each thread issues one prefetch per CHUNK bytes, strided over the grid. On sm_90 that is one TMA bulk
// prefetch (`cp.async.bulk.prefetch.L2`): fire and forget, nothing lands in registers or shared memory, and the
// kernel ends as soon as the requests are issued. Older GPUs issue one `prefetch.global.L2` per 128-byte line.
// A prefetch never changes memory, so a range that is not read afterwards costs bandwidth, never correctness.
// Byte counts must be multiples of 16 (the bulk prefetch's granule); the caller rounds down.

__global__ void l2_prefetch(const char* p0, long long n0, const char* p1, long long n1, const char* p2,
                            long long n2, int chunk) {
    const long long c0 = (n0 + chunk - 1) / chunk;
    const long long c1 = (n1 + chunk - 1) / chunk;
    const long long c2 = (n2 + chunk - 1) / chunk;
    const long long total = c0 + c1 + c2;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const char* base;
        long long n, j;
        if (i < c0) {
            base = p0, n = n0, j = i;
        } else if (i < c0 + c1) {
            base = p1, n = n1, j = i - c0;
        } else {
            base = p2, n = n2, j = i - c0 - c1;
        }
        const long long offset = j * chunk;
        const unsigned bytes = (unsigned)(n - offset < chunk ? n - offset : chunk);
#if __CUDA_ARCH__ >= 900
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(base + offset), "r"(bytes) : "memory");
#else
        for (unsigned b = 0; b < bytes; b += 128) {
            asm volatile("prefetch.global.L2 [%0];" ::"l"(base + offset + b));
        }
#endif
    }
}
