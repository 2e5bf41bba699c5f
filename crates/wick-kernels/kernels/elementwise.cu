// Elementwise kernels on the training and embedding paths, each one pass over memory with
// 16-byte loads where the data allows (candle's generic kernels load one element per thread):
// casts, SwiGLU's and RMSNorm's backward passes, a cast-and-add, erf-GELU, and the head merge
// (b, h, s, d) -> (b, s, h, d) after attention. Arithmetic in f32.
#include "common.cuh"

#define GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)(n); \
       i += (size_t)gridDim.x * blockDim.x)

// Eight consecutive elements to/from f32 (the pointer is 16-byte aligned for 16-bit types,
// 32-byte for f32: the callers check).
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
template <typename H>
__device__ __forceinline__ void load8(const H* p, float (&v)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const H* h = reinterpret_cast<const H*>(&u);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = to_f(h[i]);
}
__device__ __forceinline__ void store8(float* p, const float (&v)[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
template <typename H>
__device__ __forceinline__ void store8(H* p, const float (&v)[8]) {
  uint4 u;
  H* h = reinterpret_cast<H*>(&u);
#pragma unroll
  for (int i = 0; i < 8; ++i) h[i] = from_f<H>(v[i]);
  *reinterpret_cast<uint4*>(p) = u;
}

template <typename S, typename D>
__device__ void cast(const S* x, D* y, size_t n) {
  GRID_STRIDE(i, n / 8) {
    float v[8];
    load8(x + 8 * i, v);
    store8(y + 8 * i, v);
  }
  GRID_STRIDE(i, n % 8) y[n / 8 * 8 + i] = from_f<D>(to_f(x[n / 8 * 8 + i]));
}

// y = a + round_T(b): a T tensor plus an f32 one rounded to T first, as `a + b.to_dtype(T)`.
template <typename T>
__device__ void add_rounded(const T* a, const float* b, T* y, size_t n) {
  GRID_STRIDE(i, n / 8) {
    float va[8], vb[8];
    load8(a + 8 * i, va);
    load8(b + 8 * i, vb);
#pragma unroll
    for (int j = 0; j < 8; ++j) va[j] += to_f(from_f<T>(vb[j]));
    store8(y + 8 * i, va);
  }
  GRID_STRIDE(i, n % 8) {
    const size_t k = n / 8 * 8 + i;
    y[k] = from_f<T>(to_f(a[k]) + to_f(from_f<T>(b[k])));
  }
}

__device__ __forceinline__ float gelu_erf_f(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }

template <typename T>
__device__ void gelu_erf(const T* x, T* y, size_t n) {
  GRID_STRIDE(i, n / 8) {
    float v[8];
    load8(x + 8 * i, v);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = gelu_erf_f(v[j]);
    store8(y + 8 * i, v);
  }
  GRID_STRIDE(i, n % 8) {
    const size_t k = n / 8 * 8 + i;
    y[k] = from_f<T>(gelu_erf_f(to_f(x[k])));
  }
}

// SwiGLU backward: with s = sigmoid(gate), d_up = g·gate·s, d_gate = g·up·s·(1 + gate·(1 − s)).
template <typename T>
__device__ void swiglu_backward(const T* gate, const T* up, const T* g, T* d_gate, T* d_up,
                                size_t n) {
  GRID_STRIDE(i, n / 8) {
    float x[8], u[8], gg[8], dg[8], du[8];
    load8(gate + 8 * i, x);
    load8(up + 8 * i, u);
    load8(g + 8 * i, gg);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float s = 1.f / (1.f + __expf(-x[j]));
      du[j] = gg[j] * (x[j] * s);
      dg[j] = gg[j] * u[j] * s * (1.f + x[j] * (1.f - s));
    }
    store8(d_gate + 8 * i, dg);
    store8(d_up + 8 * i, du);
  }
  GRID_STRIDE(i, n % 8) {
    const size_t k = n / 8 * 8 + i;
    const float x = to_f(gate[k]), u = to_f(up[k]), gg = to_f(g[k]);
    const float s = 1.f / (1.f + __expf(-x));
    d_up[k] = from_f<T>(gg * (x * s));
    d_gate[k] = from_f<T>(gg * u * s * (1.f + x * (1.f - s)));
  }
}

// RMSNorm backward for x (rows × cols): with r = 1/sqrt(mean(x²) + eps), n = x·r, gn = g·w:
// dx = r·(gn − n·mean(gn·n)). One block per row.
template <typename T>
__device__ void rms_norm_backward(const T* x, const T* w, const T* g, T* dx, int cols, float eps) {
  const size_t row = blockIdx.x;
  const T* xr = x + row * cols;
  const T* gr = g + row * cols;
  float ss = 0.f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = to_f(xr[i]);
    ss += v * v;
  }
  const float r = rsqrtf(block_sum(ss) / cols + eps);
  float dot = 0.f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    dot += to_f(gr[i]) * to_f(w[i]) * to_f(xr[i]) * r;
  }
  const float mean_dot = block_sum(dot) / cols;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    const float n = to_f(xr[i]) * r;
    dx[row * cols + i] = from_f<T>(r * (to_f(gr[i]) * to_f(w[i]) - n * mean_dot));
  }
}

// (b, h, s, d) contiguous -> (b, s, h, d) contiguous, moved 16 bytes at a time (d a multiple
// of 16 / sizeof(T)). Grid: (any, batch).
template <typename T>
__device__ void merge_heads(const T* x, T* y, int h, int s, int d) {
  constexpr int V = 16 / sizeof(T);
  const size_t dv = d / V, per_batch = (size_t)h * s * dv, b = blockIdx.y;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < per_batch;
       i += (size_t)gridDim.x * blockDim.x) {
    // i indexes (hi, si, c) of the source, row-major.
    const size_t c = i % dv, si = (i / dv) % s, hi = i / (dv * s);
    const uint4 v = reinterpret_cast<const uint4*>(x + ((b * h + hi) * s + si) * d)[c];
    reinterpret_cast<uint4*>(y + ((b * s + si) * h + hi) * d)[c] = v;
  }
}

#define CASTS(S, SN)                                                                        \
  extern "C" __global__ void cast_##SN##_f32(const S* x, float* y, size_t n) { cast(x, y, n); } \
  extern "C" __global__ void cast_f32_##SN(const float* x, S* y, size_t n) { cast(x, y, n); }
CASTS(__half, f16)
CASTS(__nv_bfloat16, bf16)

#define INSTANTIATE(T, S)                                                                   \
  extern "C" __global__ void add_rounded_##S(const T* a, const float* b, T* y, size_t n) {  \
    add_rounded<T>(a, b, y, n);                                                             \
  }                                                                                         \
  extern "C" __global__ void gelu_erf_##S(const T* x, T* y, size_t n) { gelu_erf<T>(x, y, n); } \
  extern "C" __global__ void swiglu_backward_##S(const T* gate, const T* up, const T* g,    \
                                                 T* d_gate, T* d_up, size_t n) {            \
    swiglu_backward<T>(gate, up, g, d_gate, d_up, n);                                       \
  }                                                                                         \
  extern "C" __global__ void rms_norm_backward_##S(const T* x, const T* w, const T* g, T* dx, \
                                                   int cols, float eps) {                   \
    rms_norm_backward<T>(x, w, g, dx, cols, eps);                                           \
  }

INSTANTIATE(float, f32)
INSTANTIATE(__half, f16)
INSTANTIATE(__nv_bfloat16, bf16)

#define MERGE(T, S)                                                                         \
  extern "C" __global__ void merge_heads_##S(const T* x, T* y, int h, int s, int d) {       \
    merge_heads<T>(x, y, h, s, d);                                                          \
  }
MERGE(__half, f16)
MERGE(__nv_bfloat16, bf16)
MERGE(float, f32)

// LayerNorm of one row held by one warp: y = (x − mean)/sqrt(var + eps)·w + b, in f32,
// rounded once. `x` is the row (already summed where the caller fuses an add).
template <typename T>
__device__ void warp_layer_norm(const float* x, const T* w, const T* b, T* y, int cols, float eps) {
  const int lane = threadIdx.x & 31;
  float s = 0.f;
  for (int i = lane; i < cols; i += 32) s += x[i];
  const float mean = warp_sum(s) / cols;
  float v = 0.f;
  for (int i = lane; i < cols; i += 32) {
    const float c = x[i] - mean;
    v += c * c;
  }
  const float rstd = rsqrtf(warp_sum(v) / cols + eps);
  for (int i = lane; i < cols; i += 32) y[i] = from_f<T>((x[i] - mean) * rstd * to_f(w[i]) + to_f(b[i]));
}

// LayerNorm over rows of `cols` (≤ 1024): one warp a row, the row staged in shared memory in f32.
// Block: 256 threads (8 rows).
template <typename T>
__device__ void layer_norm_rows(const T* x, const T* w, const T* b, T* y, int rows, int cols,
                                float eps) {
  __shared__ float buf[8][1024];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const size_t row = (size_t)blockIdx.x * 8 + warp;
  if (row >= (size_t)rows) return;
  for (int i = lane; i < cols; i += 32) buf[warp][i] = to_f(x[row * cols + i]);
  __syncwarp();
  warp_layer_norm(buf[warp], w, b, y + row * cols, cols, eps);
}

// BERT embeddings: y[r] = LayerNorm(word[ids[r]] + pos[r % seq] + type0), one warp a row.
template <typename T>
__device__ void embed_layer_norm(const uint32_t* ids, const T* word, const T* pos, const T* type0,
                                 const T* w, const T* b, T* y, int rows, int seq, int cols,
                                 float eps) {
  __shared__ float buf[8][1024];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const size_t row = (size_t)blockIdx.x * 8 + warp;
  if (row >= (size_t)rows) return;
  const T* wr = word + (size_t)ids[row] * cols;
  const T* pr = pos + (size_t)(row % seq) * cols;
  // Rounded to T after each add, as the composed reference adds T tensors.
  for (int i = lane; i < cols; i += 32)
    buf[warp][i] = to_f(from_f<T>(to_f(from_f<T>(to_f(wr[i]) + to_f(pr[i]))) + to_f(type0[i])));
  __syncwarp();
  warp_layer_norm(buf[warp], w, b, y + row * cols, cols, eps);
}

// Mean of hidden (batch, seq, cols) over the positions where mask (batch, seq) is non-zero, in
// f32: out (batch, cols). Grid: (cols / 128 rounded up, batch); block 128.
template <typename T>
__device__ void masked_mean(const T* h, const uint32_t* mask, float* out, int seq, int cols) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  const size_t b = blockIdx.y;
  if (c >= cols) return;
  float s = 0.f, n = 0.f;
  for (int t = 0; t < seq; ++t) {
    if (mask[b * seq + t] != 0) {
      s += to_f(h[(b * seq + t) * cols + c]);
      n += 1.f;
    }
  }
  out[b * cols + c] = s / fmaxf(n, 1e-9f);
}

#define NORMS(T, S)                                                                          \
  extern "C" __global__ void __launch_bounds__(256) layer_norm_rows_##S(                     \
      const T* x, const T* w, const T* b, T* y, int rows, int cols, float eps) {             \
    layer_norm_rows<T>(x, w, b, y, rows, cols, eps);                                         \
  }                                                                                          \
  extern "C" __global__ void __launch_bounds__(256) embed_layer_norm_##S(                    \
      const uint32_t* ids, const T* word, const T* pos, const T* type0, const T* w, const T* b, \
      T* y, int rows, int seq, int cols, float eps) {                                        \
    embed_layer_norm<T>(ids, word, pos, type0, w, b, y, rows, seq, cols, eps);               \
  }                                                                                          \
  extern "C" __global__ void masked_mean_##S(const T* h, const uint32_t* mask, float* out,   \
                                             int seq, int cols) {                            \
    masked_mean<T>(h, mask, out, seq, cols);                                                 \
  }
NORMS(float, f32)
NORMS(__half, f16)
NORMS(__nv_bfloat16, bf16)

// Rows of x (f32) divided by their L2 norm (at least 1e-12): one warp a row, 8 rows a block.
extern "C" __global__ void __launch_bounds__(256)
    l2_normalize_rows_f32(const float* x, float* y, int rows, int cols) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const size_t row = (size_t)blockIdx.x * 8 + warp;
  if (row >= (size_t)rows) return;
  const float* xr = x + row * cols;
  float ss = 0.f;
  for (int i = lane; i < cols; i += 32) ss += xr[i] * xr[i];
  const float inv = 1.f / fmaxf(sqrtf(warp_sum(ss)), 1e-12f);
  for (int i = lane; i < cols; i += 32) y[row * cols + i] = xr[i] * inv;
}
