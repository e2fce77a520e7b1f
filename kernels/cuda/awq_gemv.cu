// Batch-1 AWQ int4 GEMV on tensor cores, compiled at run time by NVRTC (kernels/cuda_rtc.py) and launched by
// kernels/awq_gemv_cuda.py, which also repacks AutoAWQ's qweight into the layout read here. No CUDA headers:
// 16-bit values travel as raw bits (u16 / u32 pairs), conversions and the mma are inline PTX.
//
// y[n] = sum_k x[k] * s[g(k), n] * (q[n, k] - z[g(k), n]) for one row x, g(k) = k / 128.
//
// Each mma.m16n8k16 takes 16 weight rows x 16 k as its A operand, straight from one packed 32-bit word per lane
// (8 nibbles; the repack puts each lane's A-fragment elements in it), and x as B (all 8 columns the same x, so
// every column of D is the answer). A nibble q becomes the 16-bit value MAGIC + q with one LOP3: 128 + q in
// bf16 (exponent 2^7, q in the mantissa), 1024 + q in fp16. The mma then sums (MAGIC + q) * x exactly in fp32,
// and the zero point and the magic go in one correction per group and row:
//     sum_k (q - z) x = sum_k (MAGIC + q) x - (MAGIC + z) * sum_k x,
// with sum_k x over the group computed once per CTA from the same rounded x. So no per-weight subtract or
// scale: ~7 integer instructions and 1/256 of an mma per weight and lane.
//
// Work split: a CTA owns NT tiles of 16 output rows (whole K), its WARPS warps split K by groups of 128 and
// sum their partials through shared memory in a fixed order (deterministic). Each warp requests its first
// DEPTH groups of weights before the prologue (RMSNorm or SiLU-and-mul of x into shared memory), so the DRAM
// round trip overlaps the prologue, then keeps DEPTH groups in flight.

#include "common.cuh"

__device__ __forceinline__ u32 nibbles(u32 q, u32 magic2) {
  // (q & 0x000F000F) | magic2 in one LOP3
  u32 r; asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(q), "r"(0x000F000Fu), "r"(magic2)); return r;
}

// Both kernels' weight requests: group G of this CTA's NT tiles into ring slot d (their own wbuf / szbuf, tile0,
// tiles, num_groups, lane, g). Past-the-end tiles load the last tile: they compute garbage that is never stored.
#define AWQ_LOAD_GROUP(d, G)                                                                   \
  _Pragma("unroll") for (int nt = 0; nt < NT; ++nt) {                                          \
    const int tile = min(tile0 + nt, tiles - 1);                                               \
    const uint4* base = qweight + ((size_t)tile * num_groups + (G)) * 64;                     \
    wbuf[d][nt][0] = load_stream(base + lane);                                                 \
    wbuf[d][nt][1] = load_stream(base + 32 + lane);                                            \
    szbuf[d][nt][0] = __ldg(scale_zero + (size_t)(G) * N + tile * 16 + g);                     \
    szbuf[d][nt][1] = __ldg(scale_zero + (size_t)(G) * N + tile * 16 + g + 8);                 \
  }

// PROLOGUE 0: x as it is; 1: RMSNorm(x) * gamma; 2: SiLU(x[:K]) * x[K:].
// Shared memory: x' [K] 16-bit (as K/2 u32), xsum [K/128] fp32, partials [WARPS][NT*16] fp32, scratch [32] fp32.
// PDL (sm_90+, launched with programmatic stream serialization): the weight requests go out before waiting for the
// kernel that wrote x, and the next kernel may launch once this one's K loop is done - or, with TRIGGER, as the
// programs start (the qkv GEMV before the early-KV decode attention, kernels/pdl.py; o, gate_up and down before the
// next GEMV, kernels/awq_gemv_cuda.py EARLY_TRIGGER), whether or not this is a PDL launch.
// SPLIT (1, 2 or 4): independent accumulators per tile and group, the k steps dealt round-robin, so a group's
// mma chain is 8 / SPLIT dependent mmas long. The warp issues in order, so its next group's weight requests (after
// the chain's last mma) otherwise wait out ~7 mma latencies per group. EARLY_REFILL: a group's words are copied out
// of their ring slot and the slot's next group requested before the group's mmas (one slot's registers more).
template <int NT, int WARPS, int DEPTH, int PROLOGUE, bool HAS_BIAS, bool ADD_RESIDUAL, bool BF16, bool PDL = false,
          bool TRIGGER = false, int SPLIT = 1, bool EARLY_REFILL = false>
__global__ void __launch_bounds__(WARPS * 32) awq_gemv_mma(
    const u16* __restrict__ x, const u16* __restrict__ gamma, const uint4* __restrict__ qweight,
    const u32* __restrict__ scale_zero, const u16* __restrict__ bias, const u16* __restrict__ residual,
    u16* __restrict__ out, int N, int K, float eps) {
  typedef Half<BF16> H;
  extern __shared__ u32 smem[];
  u32* xs = smem;                                               // x' pairs
  float* xsum = reinterpret_cast<float*>(smem + (K >> 1));      // per group
  const int num_groups = K >> 7;
  float* partial = xsum + num_groups;                            // [WARPS][NT * 16]
  float* scratch = partial + WARPS * NT * 16;                    // [32]

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, c = lane & 3;
  const int tiles = N >> 4;
  const int tile0 = blockIdx.x * NT;
  const int per_warp = (num_groups + WARPS - 1) / WARPS;
  const int gbeg = min(warp * per_warp, num_groups);
  const int ng = min(gbeg + per_warp, num_groups) - gbeg;

  if (TRIGGER) allow_next_grid();
  uint4 wbuf[DEPTH][NT][2];
  u32 szbuf[DEPTH][NT][2];

#pragma unroll
  for (int d = 0; d < DEPTH; ++d) {
    if (d < ng) { AWQ_LOAD_GROUP(d, gbeg + d) }
  }

  if (PDL) wait_for_prior_grid();  // x (and the residual) come from the kernel before; the weights do not

  stage_x<PROLOGUE, WARPS, BF16>(x, gamma, xs, scratch, K, eps, warp, lane);
  __syncthreads();
  // Sum of x' per group, for this warp's groups only (no other warp reads them).
  for (int i = 0; i < ng; ++i) {
    const int p0 = ((gbeg + i) << 6) + lane * 2;
    const u32 v0 = xs[p0], v1 = xs[p0 + 1];
    float s = H::f32((u16)(v0 & 0xffffu)) + H::f32((u16)(v0 >> 16)) + H::f32((u16)(v1 & 0xffffu)) +
              H::f32((u16)(v1 >> 16));
    s = warp_sum(s);
    if (lane == 0) xsum[gbeg + i] = s;
  }
  __syncwarp();

  float total[NT][2];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) total[nt][0] = total[nt][1] = 0.f;

  for (int i0 = 0; i0 < ng; i0 += DEPTH) {
#pragma unroll
    for (int d = 0; d < DEPTH; ++d) {
      const int i = i0 + d;
      if (i < ng) {
        const int G = gbeg + i;
        uint4 w[NT][2];
        u32 sz[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          w[nt][0] = wbuf[d][nt][0];
          w[nt][1] = wbuf[d][nt][1];
          sz[nt][0] = szbuf[d][nt][0];
          sz[nt][1] = szbuf[d][nt][1];
        }
        if (EARLY_REFILL && i + DEPTH < ng) { AWQ_LOAD_GROUP(d, G + DEPTH) }
        float acc[SPLIT][NT][4];
#pragma unroll
        for (int s = 0; s < SPLIT; ++s)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) acc[s][nt][0] = acc[s][nt][1] = acc[s][nt][2] = acc[s][nt][3] = 0.f;
        const u32* xg = xs + (G << 6);
#pragma unroll
        for (int t = 0; t < 8; ++t) {
          const u32 b0 = xg[t * 8 + c], b1 = xg[t * 8 + 4 + c];  // x[16t + 2c, +1], x[16t + 8 + 2c, +1]
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            const u32 q = word_of(w[nt][t >> 2], t & 3);
            H::mma(acc[t % SPLIT][nt], nibbles(q, H::MAGIC2), nibbles(q >> 4, H::MAGIC2),
                   nibbles(q >> 8, H::MAGIC2), nibbles(q >> 12, H::MAGIC2), b0, b1);
          }
        }
#pragma unroll
        for (int s = 1; s < SPLIT; ++s)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            acc[0][nt][0] += acc[s][nt][0];
            acc[0][nt][2] += acc[s][nt][2];
          }
        const float xs_g = xsum[G];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
          for (int r = 0; r < 2; ++r) {  // rows g (d[0]) and g + 8 (d[2])
            const float s = H::f32((u16)(sz[nt][r] & 0xffffu)), zb = H::f32((u16)(sz[nt][r] >> 16));
            total[nt][r] += s * (acc[0][nt][2 * r] - zb * xs_g);
          }
        }
        if (!EARLY_REFILL && i + DEPTH < ng) { AWQ_LOAD_GROUP(d, G + DEPTH) }
      }
    }
  }
  if (PDL && !TRIGGER) allow_next_grid();

  if (c == 0) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      partial[warp * NT * 16 + nt * 16 + g] = total[nt][0];
      partial[warp * NT * 16 + nt * 16 + g + 8] = total[nt][1];
    }
  }
  __syncthreads();
  store_rows<NT, WARPS, false, HAS_BIAS, ADD_RESIDUAL, BF16>(partial, nullptr, bias, residual, out, tile0, N);
}

// Up to 8 * MG rows of x at once (small-batch decode): rows 8 j .. 8 j + 7 of x are the 8 columns of the B
// operand of the j-th of MG mmas that share one decoded A fragment, so the weights are streamed (and decoded) once
// per launch for up to 8 * MG rows. No prologue here (the engine's batched path runs its norms as their own
// kernels), and x is read straight from global memory (L1 / L2: it is small) instead of shared memory, which could
// not hold the rows of a long K. sum_k x[m, k] per group, for the zero-point correction, is one more mma per k
// step and column group with an all-ones A.
// SPLIT: as in awq_gemv_mma, the k steps dealt round-robin over SPLIT accumulators (and x-sums) per column group.
template <int NT, int WARPS, int DEPTH, bool BF16, int MG = 1, int SPLIT = 1>
__global__ void __launch_bounds__(WARPS * 32) awq_gemm_small(
    const u16* __restrict__ x, const uint4* __restrict__ qweight, const u32* __restrict__ scale_zero,
    u16* __restrict__ out, int M, int N, int K) {
  typedef Half<BF16> H;
  __shared__ float partial[WARPS][NT * 16][8 * MG];
  const int num_groups = K >> 7;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, c = lane & 3;
  const int tiles = N >> 4;
  const int tile0 = blockIdx.x * NT;
  const int per_warp = (num_groups + WARPS - 1) / WARPS;
  const int gbeg = min(warp * per_warp, num_groups);
  const int ng = min(gbeg + per_warp, num_groups) - gbeg;
  const u32 ones2 = BF16 ? 0x3F803F80u : 0x3C003C00u;  // two 1.0
  // this lane's B column in group j is x row 8 j + g: rows past M read nothing and stay 0
  const u32* xrow[MG];
  bool live[MG];
#pragma unroll
  for (int j = 0; j < MG; ++j) {
    xrow[j] = reinterpret_cast<const u32*>(x + (size_t)min(8 * j + g, M - 1) * K);
    live[j] = 8 * j + g < M;
  }

  uint4 wbuf[DEPTH][NT][2];
  u32 szbuf[DEPTH][NT][2];

#pragma unroll
  for (int d = 0; d < DEPTH; ++d) {
    if (d < ng) { AWQ_LOAD_GROUP(d, gbeg + d) }
  }

  float total[NT][MG][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int j = 0; j < MG; ++j) total[nt][j][0] = total[nt][j][1] = total[nt][j][2] = total[nt][j][3] = 0.f;

  for (int i0 = 0; i0 < ng; i0 += DEPTH) {
#pragma unroll
    for (int d = 0; d < DEPTH; ++d) {
      const int i = i0 + d;
      if (i < ng) {
        const int G = gbeg + i;
        float acc[SPLIT][NT][MG][4], xsum[SPLIT][MG][4];
#pragma unroll
        for (int sp = 0; sp < SPLIT; ++sp)
#pragma unroll
          for (int j = 0; j < MG; ++j) {
            xsum[sp][j][0] = xsum[sp][j][1] = xsum[sp][j][2] = xsum[sp][j][3] = 0.f;
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
              acc[sp][nt][j][0] = acc[sp][nt][j][1] = acc[sp][nt][j][2] = acc[sp][nt][j][3] = 0.f;
          }
#pragma unroll
        for (int t = 0; t < 8; ++t) {
          u32 b0[MG], b1[MG];
#pragma unroll
          for (int j = 0; j < MG; ++j) {
            const u32* xg = xrow[j] + (G << 6);
            b0[j] = live[j] ? __ldg(xg + t * 8 + c) : 0u;
            b1[j] = live[j] ? __ldg(xg + t * 8 + 4 + c) : 0u;
            H::mma(xsum[t % SPLIT][j], ones2, ones2, ones2, ones2, b0[j], b1[j]);  // D[., m]: x row m over 16 k
          }
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            const u32 q = word_of(wbuf[d][nt][t >> 2], t & 3);
            const u32 a0 = nibbles(q, H::MAGIC2), a1 = nibbles(q >> 4, H::MAGIC2), a2 = nibbles(q >> 8, H::MAGIC2),
                      a3 = nibbles(q >> 12, H::MAGIC2);
#pragma unroll
            for (int j = 0; j < MG; ++j) H::mma(acc[t % SPLIT][nt][j], a0, a1, a2, a3, b0[j], b1[j]);
          }
        }
#pragma unroll
        for (int sp = 1; sp < SPLIT; ++sp)
#pragma unroll
          for (int j = 0; j < MG; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              xsum[0][j][e] += xsum[sp][j][e];
#pragma unroll
              for (int nt = 0; nt < NT; ++nt) acc[0][nt][j][e] += acc[sp][nt][j][e];
            }
          }
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
          for (int r = 0; r < 2; ++r) {  // rows g (d[0], d[1]) and g + 8 (d[2], d[3]); columns 2c, 2c + 1
            const u32 sz = szbuf[d][nt][r];
            const float s = H::f32((u16)(sz & 0xffffu)), zb = H::f32((u16)(sz >> 16));
#pragma unroll
            for (int j = 0; j < MG; ++j) {
              total[nt][j][2 * r] += s * (acc[0][nt][j][2 * r] - zb * xsum[0][j][0]);
              total[nt][j][2 * r + 1] += s * (acc[0][nt][j][2 * r + 1] - zb * xsum[0][j][1]);
            }
          }
        }
        if (i + DEPTH < ng) { AWQ_LOAD_GROUP(d, G + DEPTH) }
      }
    }
  }

#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int j = 0; j < MG; ++j) {
      partial[warp][nt * 16 + g][8 * j + 2 * c] = total[nt][j][0];
      partial[warp][nt * 16 + g][8 * j + 2 * c + 1] = total[nt][j][1];
      partial[warp][nt * 16 + g + 8][8 * j + 2 * c] = total[nt][j][2];
      partial[warp][nt * 16 + g + 8][8 * j + 2 * c + 1] = total[nt][j][3];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < NT * 16 * 8 * MG; e += WARPS * 32) {
    const int m = e / (NT * 16), r = e % (NT * 16);  // consecutive threads: consecutive rows of one x row
    const int row = tile0 * 16 + r;
    if (m < M && row < N) {
      float y = 0.f;
#pragma unroll
      for (int w = 0; w < WARPS; ++w) y += partial[w][r][m];
      out[(size_t)m * N + row] = H::round(y);
    }
  }
}
