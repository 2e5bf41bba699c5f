// y (rows × n) = x (rows × k) · Wᵀ (W n × k, row-major) [+ bias] [+ c], for few rows (≤ 8):
// the decode-time GEMM, bound by reading W once. One warp per output column: 16-byte loads of
// W's row, the rows of x read through the cache (tiny and shared by every block), f32 sums.
#include "common.cuh"

constexpr int MAX_ROWS = 8;

// V elements of T per 16-byte vector.
template <typename T> struct Vec { static constexpr int N = 16 / sizeof(T); };

template <typename T>
__device__ void gemv(const T* x, const T* w, const T* bias, const T* c, T* y, int rows, int n,
                     int k) {
  const int lane = threadIdx.x & 31;
  const int j = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (j >= n) return;
  constexpr int V = Vec<T>::N;
  const T* wr = w + (size_t)j * k;
  float acc[MAX_ROWS];
#pragma unroll
  for (int r = 0; r < MAX_ROWS; ++r) acc[r] = 0.f;
  const bool vec = (k % V == 0) && ((reinterpret_cast<uintptr_t>(w) & 15) == 0) &&
                   ((reinterpret_cast<uintptr_t>(x) & 15) == 0);
  if (vec) {
    for (int i = lane * V; i < k; i += 32 * V) {
      const uint4 wv = *reinterpret_cast<const uint4*>(wr + i);
      const T* we = reinterpret_cast<const T*>(&wv);
#pragma unroll
      for (int r = 0; r < MAX_ROWS; ++r) {
        if (r < rows) {
          const uint4 xv = *reinterpret_cast<const uint4*>(x + (size_t)r * k + i);
          const T* xe = reinterpret_cast<const T*>(&xv);
#pragma unroll
          for (int e = 0; e < V; ++e) acc[r] += to_f(we[e]) * to_f(xe[e]);
        }
      }
    }
  } else {
    for (int i = lane; i < k; i += 32) {
      const float wv = to_f(wr[i]);
#pragma unroll
      for (int r = 0; r < MAX_ROWS; ++r)
        if (r < rows) acc[r] += wv * to_f(x[(size_t)r * k + i]);
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

#define GEMV(T, S)                                                                         \
  extern "C" __global__ void __launch_bounds__(256)                                        \
      gemv_##S(const T* x, const T* w, const T* bias, const T* c, T* y, int rows, int n,   \
               int k) {                                                                    \
    gemv<T>(x, w, bias, c, y, rows, n, k);                                                 \
  }

GEMV(float, f32)
GEMV(__half, f16)
GEMV(__nv_bfloat16, bf16)
