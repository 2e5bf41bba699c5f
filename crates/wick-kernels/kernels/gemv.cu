// y (rows × n) = x (rows × k) · Wᵀ (W n × k, row-major) [+ bias] [+ c], for few rows: the
// decode-time GEMM, bound by reading W once. One warp per output column, 16-byte loads of W's
// row, the rows of x read through the cache (tiny and shared by every block), f32 sums.
// Variants fuse the op that produces x, saving a launch and a round trip per layer:
//   gemv_rms:    x = RMSNorm(xr) · nw, rounded as rms_norm does (xr rows × k, nw k);
//   gemv_swiglu: x = silu(g) · u with g, u the halves of each row of gu (rows × 2k).
#include "common.cuh"

constexpr int MAX_ROWS = 8;
constexpr int WARPS = 8;

enum Mode { PLAIN = 0, RMS = 1, SWIGLU = 2 };

template <typename T> struct Vec { static constexpr int N = 16 / sizeof(T); };

template <typename T>
__device__ __forceinline__ void load_vec(const T* p, float* out) {
  const uint4 v = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
  for (int j = 0; j < Vec<T>::N; ++j) out[j] = to_f(e[j]);
}

// Elements i..i+V of row r of the (fused) input, as the unfused ops would have stored them.
template <typename T, int MODE>
__device__ __forceinline__ void load_x(const T* x, const T* nw, const float* inv, int r, int i,
                                       int k, float* out) {
  constexpr int V = Vec<T>::N;
  if (MODE == SWIGLU) {
    float g[V], u[V];
    load_vec(x + (size_t)r * 2 * k + i, g);
    load_vec(x + (size_t)r * 2 * k + k + i, u);
#pragma unroll
    for (int j = 0; j < V; ++j)
      out[j] = to_f(from_f<T>(to_f(from_f<T>(g[j] / (1.f + expf(-g[j])))) * u[j]));
  } else {
    load_vec(x + (size_t)r * k + i, out);
    if (MODE == RMS) {
      float w[V];
      load_vec(nw + i, w);
#pragma unroll
      for (int j = 0; j < V; ++j) out[j] = to_f(from_f<T>(to_f(from_f<T>(out[j] * inv[r])) * w[j]));
    }
  }
}

template <typename T, int MODE>
__device__ void gemv(const T* x, const T* w, const T* bias, const T* c, T* y, int rows, int n,
                     int k, const T* nw, float eps) {
  constexpr int V = Vec<T>::N;
  __shared__ float inv[MAX_ROWS];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (MODE == RMS) {
    // Each row's 1/rms, once per block (warp r sums row r).
    for (int r = warp; r < rows; r += WARPS) {
      float ss = 0.f;
      for (int i = lane; i < k; i += 32) {
        const float v = to_f(x[(size_t)r * k + i]);
        ss += v * v;
      }
      ss = warp_sum(ss);
      if (lane == 0) inv[r] = rsqrtf(ss / k + eps);
    }
    __syncthreads();
  }
  const int j = blockIdx.x * WARPS + warp;
  if (j >= n) return;
  const T* wr = w + (size_t)j * k;
  float acc[MAX_ROWS];
#pragma unroll
  for (int r = 0; r < MAX_ROWS; ++r) acc[r] = 0.f;
  for (int i = lane * V; i < k; i += 32 * V) {
    float wv[V];
    load_vec(wr + i, wv);
#pragma unroll
    for (int r = 0; r < MAX_ROWS; ++r) {
      if (r < rows) {
        float xv[V];
        load_x<T, MODE>(x, nw, inv, r, i, k, xv);
#pragma unroll
        for (int e = 0; e < V; ++e) acc[r] += wv[e] * xv[e];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < MAX_ROWS; ++r) acc[r] = warp_sum(acc[r]);
  if (lane == 0) {
    for (int r = 0; r < rows; ++r) {
      // Rounded like the reference: the product in T, then + bias in T, then + c in T.
      float v = to_f(from_f<T>(acc[r]));
      if (bias) v = to_f(from_f<T>(v + to_f(bias[j])));
      if (c) v += to_f(c[(size_t)r * n + j]);
      y[(size_t)r * n + j] = from_f<T>(v);
    }
  }
}

// Scalar fallback for any k and alignment (plain x only).
template <typename T>
__device__ void gemv_scalar(const T* x, const T* w, const T* bias, const T* c, T* y, int rows,
                            int n, int k) {
  const int lane = threadIdx.x & 31;
  const int j = blockIdx.x * WARPS + (threadIdx.x >> 5);
  if (j >= n) return;
  const T* wr = w + (size_t)j * k;
  float acc[MAX_ROWS];
#pragma unroll
  for (int r = 0; r < MAX_ROWS; ++r) acc[r] = 0.f;
  for (int i = lane; i < k; i += 32) {
    const float wv = to_f(wr[i]);
#pragma unroll
    for (int r = 0; r < MAX_ROWS; ++r)
      if (r < rows) acc[r] += wv * to_f(x[(size_t)r * k + i]);
  }
#pragma unroll
  for (int r = 0; r < MAX_ROWS; ++r) acc[r] = warp_sum(acc[r]);
  if (lane == 0) {
    for (int r = 0; r < rows; ++r) {
      float v = to_f(from_f<T>(acc[r]));
      if (bias) v = to_f(from_f<T>(v + to_f(bias[j])));
      if (c) v += to_f(c[(size_t)r * n + j]);
      y[(size_t)r * n + j] = from_f<T>(v);
    }
  }
}

#define GEMV(T, S)                                                                           \
  extern "C" __global__ void __launch_bounds__(256)                                          \
      gemv_##S(const T* x, const T* w, const T* bias, const T* c, T* y, int rows, int n,     \
               int k) {                                                                      \
    const bool vec = (k % Vec<T>::N == 0) && ((reinterpret_cast<uintptr_t>(w) & 15) == 0) && \
                     ((reinterpret_cast<uintptr_t>(x) & 15) == 0);                           \
    if (vec)                                                                                 \
      gemv<T, PLAIN>(x, w, bias, c, y, rows, n, k, nullptr, 0.f);                            \
    else                                                                                     \
      gemv_scalar<T>(x, w, bias, c, y, rows, n, k);                                          \
  }                                                                                          \
  /* Vector paths only: k a multiple of 16 bytes' worth, 16-byte aligned operands. */        \
  extern "C" __global__ void __launch_bounds__(256)                                          \
      gemv_rms_##S(const T* x, const T* w, const T* bias, const T* c, T* y, int rows, int n, \
                   int k, const T* nw, float eps) {                                          \
    gemv<T, RMS>(x, w, bias, c, y, rows, n, k, nw, eps);                                     \
  }                                                                                          \
  extern "C" __global__ void __launch_bounds__(256)                                          \
      gemv_swiglu_##S(const T* gu, const T* w, const T* bias, const T* c, T* y, int rows,    \
                      int n, int k) {                                                        \
    gemv<T, SWIGLU>(gu, w, bias, c, y, rows, n, k, nullptr, 0.f);                            \
  }

GEMV(float, f32)
GEMV(__half, f16)
GEMV(__nv_bfloat16, bf16)
