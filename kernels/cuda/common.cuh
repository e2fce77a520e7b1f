// Shared by the batch-1 tensor-core GEMVs (awq_gemv.cu, fp8_gemv.cu): raw 16-bit types, the mma, streaming
// loads, warp reductions, PDL and the fused prologue. kernels/cuda_rtc.py pastes this file in place of its
// #include line (NVRTC gets no include path), so there are no CUDA headers here either.
#pragma once

typedef unsigned int u32;
typedef unsigned short u16;

template <bool BF16> struct Half;
template <> struct Half<true> {
  static constexpr u32 MAGIC2 = 0x43004300u;  // two bf16 128.0
  static __device__ __forceinline__ float f32(u16 h) { return __uint_as_float(((u32)h) << 16); }
  static __device__ __forceinline__ u16 round(float f) {
    u16 h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
  }
  static __device__ __forceinline__ void mma(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
};
template <> struct Half<false> {
  static constexpr u32 MAGIC2 = 0x64006400u;  // two fp16 1024.0
  static __device__ __forceinline__ float f32(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
  static __device__ __forceinline__ u16 round(float f) {
    u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
  }
  static __device__ __forceinline__ void mma(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
};

__device__ __forceinline__ uint4 load_stream(const uint4* p) {
  // Weights are read once: no L1 allocation.
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

__device__ __forceinline__ u32 word_of(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// PDL (sm_90+, launched with programmatic stream serialization): the weight requests go out before waiting for the
// kernel that wrote x, and the next kernel may launch once this one's K loop is done.
__device__ __forceinline__ void wait_for_prior_grid() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_next_grid() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

// The fused prologue, x' into shared memory xs [K/2 u32] rounded as the unfused ops round (PROLOGUE 0: x as it
// is; 1: RMSNorm(x) * gamma; 2: SiLU(x[:K]) * x[K:]). scratch: WARPS floats. The caller syncs the block after.
template <int PROLOGUE, int WARPS, bool BF16>
__device__ __forceinline__ void stage_x(const u16* __restrict__ x, const u16* __restrict__ gamma, u32* xs,
                                        float* scratch, int K, float eps, int warp, int lane) {
  typedef Half<BF16> H;
  const int pairs = K >> 1;
  const u32* x2 = reinterpret_cast<const u32*>(x);
  if (PROLOGUE == 1) {
    float ss = 0.f;
    for (int p = threadIdx.x; p < pairs; p += WARPS * 32) {
      const u32 v = x2[p];
      const float a = H::f32((u16)(v & 0xffffu)), b = H::f32((u16)(v >> 16));
      ss += a * a + b * b;
      xs[p] = v;
    }
    ss = warp_sum(ss);
    if (lane == 0) scratch[warp] = ss;
    __syncthreads();
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) total += scratch[w];
    const float rstd = rsqrtf(total / (float)K + eps);
    const u32* gm2 = reinterpret_cast<const u32*>(gamma);
    for (int p = threadIdx.x; p < pairs; p += WARPS * 32) {
      const u32 v = xs[p], gv = gm2[p];
      const u16 a = H::round(H::f32(H::round(H::f32((u16)(v & 0xffffu)) * rstd)) * H::f32((u16)(gv & 0xffffu)));
      const u16 b = H::round(H::f32(H::round(H::f32((u16)(v >> 16)) * rstd)) * H::f32((u16)(gv >> 16)));
      xs[p] = (u32)a | ((u32)b << 16);
    }
  } else if (PROLOGUE == 2) {
    const u32* up2 = x2 + pairs;
    for (int p = threadIdx.x; p < pairs; p += WARPS * 32) {
      const u32 gv = x2[p], uv = up2[p];
      u16 r[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float gate = H::f32((u16)((h ? gv >> 16 : gv) & 0xffffu));
        const float up = H::f32((u16)((h ? uv >> 16 : uv) & 0xffffu));
        const float act = H::f32(H::round(__fdividef(gate, 1.f + __expf(-gate))));
        r[h] = H::round(act * up);
      }
      xs[p] = (u32)r[0] | ((u32)r[1] << 16);
    }
  } else {
    for (int p = threadIdx.x; p < pairs; p += WARPS * 32) xs[p] = x2[p];
  }
}

// The GEMVs' last step, after the block's barrier: each of the first NT*16 threads sums its row's WARPS partials
// ([WARPS][NT*16] fp32, a fixed order), then (* row_scale, SCALED) (+ bias in fp32) -> 16 bits (+ residual,
// rounded again as the unfused add rounds) -> out.
template <int NT, int WARPS, bool SCALED, bool HAS_BIAS, bool ADD_RESIDUAL, bool BF16>
__device__ __forceinline__ void store_rows(const float* partial, const float* __restrict__ row_scale,
                                           const u16* __restrict__ bias, const u16* __restrict__ residual,
                                           u16* __restrict__ out, int tile0, int N) {
  typedef Half<BF16> H;
  if (threadIdx.x < NT * 16) {
    const int row = tile0 * 16 + threadIdx.x;
    if (row < N) {
      float y = 0.f;
#pragma unroll
      for (int w = 0; w < WARPS; ++w) y += partial[w * NT * 16 + threadIdx.x];
      if (SCALED) y *= row_scale[row];
      if (HAS_BIAS) y += H::f32(bias[row]);
      u16 o = H::round(y);
      if (ADD_RESIDUAL) o = H::round(H::f32(o) + H::f32(residual[row]));
      out[row] = o;
    }
  }
}
