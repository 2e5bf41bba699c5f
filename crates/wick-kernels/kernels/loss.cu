// Cross-entropy over rows of logits (the training loss), reading the logits in their own dtype:
// no f32 copy of the (tokens × vocab) matrix. Arithmetic in f32. One block per row.
#include "common.cuh"

// Merges two (max, Σ exp(v − max)) pairs.
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;  // both empty
  s = s * __expf(m - mx) + s2 * __expf(m2 - mx);
  m = mx;
}

// out[r] = (logsumexp(x[r]) − x[r][t[r]], logsumexp(x[r])): the row's loss and, for the
// backward pass, its logsumexp.
template <typename T>
__device__ void ce_rows(const T* x, const uint32_t* t, float* out, int vocab) {
  const T* row = x + (size_t)blockIdx.x * vocab;
  float m = -INFINITY, s = 0.f;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = to_f(row[i]);
    if (v > m) {
      s = s * __expf(m - v) + 1.f;
      m = v;
    } else {
      s += __expf(v - m);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffff, m, o), s2 = __shfl_xor_sync(0xffffffff, s, o);
    lse_merge(m, s, m2, s2);
  }
  __shared__ float pm[32], ps[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    pm[warp] = m;
    ps[warp] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < (int)(blockDim.x >> 5); ++w) lse_merge(m, s, pm[w], ps[w]);
    const float lse = m + logf(s);
    out[2 * blockIdx.x] = lse - to_f(row[t[blockIdx.x]]);
    out[2 * blockIdx.x + 1] = lse;
  }
}

// dx[r][i] = g[r] · (exp(x[r][i] − lse[r]) − [i = t[r]]), with (g[r], lse[r]) = gl[2r], gl[2r+1]:
// the loss's upstream gradient and the forward's logsumexp, rows × 2.
template <typename T>
__device__ void ce_rows_backward(const T* x, const uint32_t* t, const float* gl, T* dx,
                                 int vocab) {
  const size_t r = blockIdx.x;
  const T* row = x + r * vocab;
  T* out = dx + r * vocab;
  const float g = gl[2 * r], lse = gl[2 * r + 1];
  const uint32_t target = t[r];
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float p = __expf(to_f(row[i]) - lse);
    out[i] = from_f<T>(g * (p - (i == (int)target ? 1.f : 0.f)));
  }
}

#define INSTANTIATE(T, S)                                                                   \
  extern "C" __global__ void __launch_bounds__(1024)                                        \
      ce_rows_##S(const T* x, const uint32_t* t, float* out, int vocab) {                  \
    ce_rows<T>(x, t, out, vocab);                                                           \
  }                                                                                         \
  extern "C" __global__ void __launch_bounds__(1024) ce_rows_backward_##S(                  \
      const T* x, const uint32_t* t, const float* gl, T* dx, int vocab) {                   \
    ce_rows_backward<T>(x, t, gl, dx, vocab);                                               \
  }

INSTANTIATE(float, f32)
INSTANTIATE(__half, f16)
INSTANTIATE(__nv_bfloat16, bf16)
