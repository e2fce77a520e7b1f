// Batch-1 FP8 (e4m3) weight-only GEMV on tensor cores, compiled at run time by NVRTC (kernels/cuda_rtc.py) and
// launched by kernels/fp8_gemv_cuda.py. It reads the checkpoint's own [N, K] row-major e4m3 weight (the tensor
// `_scaled_mm` uses for prefill): no second copy and no repack.
//
// y[n] = w_scale[n] * sum_k q[n, k] * x[k] (+ bias[n]) (+ residual[n]) for one row x.
//
// mma.m16n8k16 (fp16 in, fp32 accumulate) with 16 weight rows as A and x as B (all 8 columns the same x). A
// dot product does not care which k goes to which mma slot, so the slots follow the memory instead of the other
// way round: lane l (g = l / 4, c = l % 4) loads 16 contiguous bytes of rows g and g + 8 at k = 64 C + 16 c, and
// its 32-bit word s (bytes 4s .. 4s+3) feeds mma s of the chunk: the low two bytes as the A-fragment pair of
// k 2c, 2c+1, the high two as k 2c+8, 2c+9. B then takes x at the same physical k: one 64-bit shared-memory load
// at 64 C + 16 c + 4 s gives both B registers. e4m3 -> f16 is exact, one cvt per two weights (sm_89+).
//
// x in fp16: the prologue rounds x' as the unfused ops do (bf16 for a bf16 model) into shared memory. For a bf16
// model each warp then rescales its own K range by a power of two 2^sh (its largest |x'| lands in [2^14, 2^15))
// and converts it to fp16: exact for every value down to 2^-29 of the largest (smaller ones lose bits in fp16
// subnormals, far below fp32 accumulation error), with no overflow whatever the range. The warp's partial sums
// are multiplied by 2^-sh before they meet the other warps'.
//
// Work split: a CTA owns NT tiles of 16 output rows (whole K); its WARPS warps split K by chunks of 64 and sum
// their partials through shared memory in a fixed order (deterministic). Each warp requests its first DEPTH
// chunks before the prologue, so the DRAM round trip overlaps it, then keeps DEPTH chunks in flight.

#include "common.cuh"

__device__ __forceinline__ void e4m3x4_to_f16x2x2(u32 w, u32& lo, u32& hi) {
  // bytes 0, 1 -> lo (k 2c, 2c+1 of the fragment), bytes 2, 3 -> hi (k 2c+8, 2c+9)
  asm("{\n\t.reg .b16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.rn.f16x2.e4m3x2 %0, l;\n\tcvt.rn.f16x2.e4m3x2 %1, h;\n\t}"
      : "=r"(lo), "=r"(hi) : "r"(w));
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Chunk C (64 k) of this CTA's NT tiles into ring slot d. Past-the-end tiles load the last tile: they compute
// garbage that is never stored.
#define FP8_LOAD_CHUNK(d, C)                                                                  \
  _Pragma("unroll") for (int nt = 0; nt < NT; ++nt) {                                         \
    const int tile = min(tile0 + nt, tiles - 1);                                              \
    const uint4* base = w + (size_t)(tile * 16 + g) * row_vecs + (C) * 4 + c;                \
    wbuf[d][nt][0] = load_stream(base);                                                       \
    wbuf[d][nt][1] = load_stream(base + 8 * (size_t)row_vecs);                                \
  }

// Shared memory: x' [K] 16-bit (as K/2 u32), partials [WARPS][NT*16] fp32, scratch [32] fp32.
template <int NT, int WARPS, int DEPTH, int PROLOGUE, bool HAS_BIAS, bool ADD_RESIDUAL, bool BF16>
__global__ void __launch_bounds__(WARPS * 32) fp8_gemv_mma(
    const u16* __restrict__ x, const u16* __restrict__ gamma, const uint4* __restrict__ w,
    const float* __restrict__ w_scale, const u16* __restrict__ bias, const u16* __restrict__ residual,
    u16* __restrict__ out, int N, int K, float eps) {
  typedef Half<BF16> H;
  extern __shared__ u32 smem[];
  u32* xs = smem;                                                    // x' pairs
  float* partial = reinterpret_cast<float*>(smem + (K >> 1));        // [WARPS][NT * 16]
  float* scratch = partial + WARPS * NT * 16;                        // [32]

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, c = lane & 3;
  const int tiles = N >> 4;
  const int tile0 = blockIdx.x * NT;
  const int row_vecs = K >> 4;  // 16-byte vectors per weight row
  const int num_chunks = K >> 6;
  const int per_warp = (num_chunks + WARPS - 1) / WARPS;
  const int cbeg = min(warp * per_warp, num_chunks);
  const int nc = min(cbeg + per_warp, num_chunks) - cbeg;

  uint4 wbuf[DEPTH][NT][2];  // rows g, g + 8
#pragma unroll
  for (int d = 0; d < DEPTH; ++d) {
    if (d < nc) { FP8_LOAD_CHUNK(d, cbeg + d) }
  }

  stage_x<PROLOGUE, WARPS, BF16>(x, gamma, xs, scratch, K, eps, warp, lane);
  __syncthreads();

  // This warp's K range to fp16 (bf16 models), scaled by 2^sh; only this warp reads it from here on.
  float unscale = 1.f;
  if (BF16) {
    const int p0 = cbeg * 32, p1 = (cbeg + nc) * 32;
    float amax = 0.f;
    for (int p = p0 + lane; p < p1; p += 32) {
      const u32 v = xs[p];
      amax = fmaxf(amax, fmaxf(fabsf(H::f32((u16)(v & 0xffffu))), fabsf(H::f32((u16)(v >> 16)))));
    }
    amax = warp_max(amax);
    // amax in [2^(e-127), 2^(e-126)): 2^(141-e) puts it in [2^14, 2^15). e = 0 (zero or fp32-subnormal): 2^126.
    const int e = (int)((__float_as_uint(amax) >> 23) & 0xffu);
    const int sh = min(141 - e, 126);
    const float scale = __uint_as_float((u32)(sh + 127) << 23);
    unscale = __uint_as_float((u32)(127 - sh) << 23);
    for (int p = p0 + lane; p < p1; p += 32) {
      const u32 v = xs[p];
      u32 h;
      asm("cvt.rn.f16x2.f32 %0, %1, %2;"
          : "=r"(h) : "f"(H::f32((u16)(v >> 16)) * scale), "f"(H::f32((u16)(v & 0xffffu)) * scale));
      xs[p] = h;
    }
    __syncwarp();
  }

  float acc[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;

  const uint2* x4 = reinterpret_cast<const uint2*>(xs);  // x' in 4-element (8-byte) steps
  for (int i0 = 0; i0 < nc; i0 += DEPTH) {
#pragma unroll
    for (int d = 0; d < DEPTH; ++d) {
      const int i = i0 + d;
      if (i < nc) {
        const int C = cbeg + i;
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          const uint2 b = x4[C * 16 + c * 4 + s];  // x[64 C + 16 c + 4 s .. + 3]
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            u32 a0, a1, a2, a3;
            e4m3x4_to_f16x2x2(word_of(wbuf[d][nt][0], s), a0, a2);  // row g
            e4m3x4_to_f16x2x2(word_of(wbuf[d][nt][1], s), a1, a3);  // row g + 8
            Half<false>::mma(acc[nt], a0, a1, a2, a3, b.x, b.y);
          }
        }
        if (i + DEPTH < nc) { FP8_LOAD_CHUNK(d, C + DEPTH) }
      }
    }
  }

  if (c == 0) {  // column 0 of D: rows g (acc[0]) and g + 8 (acc[2])
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      partial[warp * NT * 16 + nt * 16 + g] = acc[nt][0] * unscale;
      partial[warp * NT * 16 + nt * 16 + g + 8] = acc[nt][2] * unscale;
    }
  }
  __syncthreads();
  store_rows<NT, WARPS, true, HAS_BIAS, ADD_RESIDUAL, BF16>(partial, w_scale, bias, residual, out, tile0, N);
}
