// wick's fused kernels. Each is instantiated for f32, f16 and bf16 as `name_f32` / `name_f16` /
// `name_bf16`; arithmetic is in f32 and every kernel writes each element of its output once.
#include "common.cuh"

// RMSNorm over rows of `cols`, as transformers computes it: normalise in f32, round to T, then
// multiply by the weight in T. One block per row.
template <typename T>
__device__ void rms_norm(const T* x, const T* w, T* y, int cols, float eps) {
  const T* xr = x + (size_t)blockIdx.x * cols;
  T* yr = y + (size_t)blockIdx.x * cols;
  float ss = 0.f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    float v = to_f(xr[i]);
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss) / cols + eps);
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    yr[i] = from_f<T>(to_f(from_f<T>(to_f(xr[i]) * inv)) * to_f(w[i]));
  }
}

// silu(gate) · up, with gate and up the two halves of each row of `gu` (rows × 2·cols), as the
// fused gate/up projection writes them; y is rows × cols.
template <typename T>
__device__ void swiglu_halves(const T* gu, T* y, int rows, int cols) {
  const size_t n = (size_t)rows * cols;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t r = i / cols, c = i % cols;
    const float g = to_f(gu[r * 2 * cols + c]);
    const float u = to_f(gu[r * 2 * cols + cols + c]);
    // Rounded like the reference: silu(g) in T, then times up in T.
    y[i] = from_f<T>(to_f(from_f<T>(g / (1.f + expf(-g)))) * u);
  }
}

// Rotary embedding (half-split layout) of one decode step, reading the fused q/k/v projection
// row (heads·D | kv_heads·D | kv_heads·D) and writing rotated q to `q_out` (rows, heads, D) and
// rotated k / plain v into the caches (rows, kv_heads, max_len, D) at column pos[row].
// cos/sin are computed in f32 from inv_freq and rounded to T, as the reference's cos_sin does.
// Grid: (rows, heads + kv_heads); block: D/2 threads.
template <typename T>
__device__ void rope_append(const T* qkv, T* q_out, T* k_cache, T* v_cache, const int* pos,
                            const float* inv_freq, int heads, int kv_heads, int d, int max_len) {
  const int row = blockIdx.x, h = blockIdx.y, i = threadIdx.x, half = d / 2;
  const int width = (heads + 2 * kv_heads) * d;
  const int p = pos[row];
  float s, c;
  sincosf((float)p * inv_freq[i], &s, &c);
  const float cr = to_f(from_f<T>(c)), sr = to_f(from_f<T>(s));
  const T* src = qkv + (size_t)row * width + (size_t)h * d;
  const float x1 = to_f(src[i]), x2 = to_f(src[i + half]);
  // Reference: x·cos + rotate_half(x)·sin, each product rounded to T, then the sum.
  const float o1 = to_f(from_f<T>(x1 * cr)) + to_f(from_f<T>(-x2 * sr));
  const float o2 = to_f(from_f<T>(x2 * cr)) + to_f(from_f<T>(x1 * sr));
  if (h < heads) {
    T* dst = q_out + ((size_t)row * heads + h) * d;
    dst[i] = from_f<T>(o1);
    dst[i + half] = from_f<T>(o2);
  } else {
    const int kh = h - heads;
    const size_t at = (((size_t)row * kv_heads + kh) * max_len + p) * d;
    k_cache[at + i] = from_f<T>(o1);
    k_cache[at + i + half] = from_f<T>(o2);
    const T* vsrc = qkv + (size_t)row * width + (size_t)(heads + kv_heads + kh) * d;
    v_cache[at + i] = vsrc[i];
    v_cache[at + i + half] = vsrc[i + half];
  }
}

// Attention of one query token per row over the first len[row] (or fixed_len when len is null)
// cached keys, grouped-query:
// query head h reads kv head h / (heads / kv_heads). Scores and softmax in f32 (online
// softmax per warp, merged across warps). Grid: (rows, heads); block: 128 threads (4 warps),
// D ≤ 256 and a multiple of 32.
template <typename T>
__device__ void decode_attention(const T* q, const T* k_cache, const T* v_cache, T* out,
                                 const int* len, int fixed_len, int heads, int kv_heads, int d,
                                 int max_len, float scale) {
  constexpr int WARPS = 4, MAXD = 256;
  const int row = blockIdx.x, h = blockIdx.y, kh = h / (heads / kv_heads);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, per = d / 32;
  const int n = len ? len[row] : fixed_len;
  const T* qr = q + ((size_t)row * heads + h) * d;
  const T* kb = k_cache + ((size_t)row * kv_heads + kh) * max_len * d;
  const T* vb = v_cache + ((size_t)row * kv_heads + kh) * max_len * d;
  float qv[MAXD / 32], acc[MAXD / 32];
#pragma unroll
  for (int j = 0; j < MAXD / 32; ++j) {
    qv[j] = j < per ? to_f(qr[lane + 32 * j]) * scale : 0.f;
    acc[j] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int t = warp; t < n; t += WARPS) {
    const T* kt = kb + (size_t)t * d;
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < MAXD / 32; ++j)
      if (j < per) s += qv[j] * to_f(kt[lane + 32 * j]);
    s = warp_sum(s);
    const float mn = fmaxf(m, s), corr = expf(m - mn), e = expf(s - mn);
    l = l * corr + e;
    const T* vt = vb + (size_t)t * d;
#pragma unroll
    for (int j = 0; j < MAXD / 32; ++j)
      if (j < per) acc[j] = acc[j] * corr + e * to_f(vt[lane + 32 * j]);
    m = mn;
  }
  __shared__ float sm[WARPS], sl[WARPS], sacc[WARPS][MAXD];
  if (lane == 0) { sm[warp] = m; sl[warp] = l; }
#pragma unroll
  for (int j = 0; j < MAXD / 32; ++j)
    if (j < per) sacc[warp][lane + 32 * j] = acc[j];
  __syncthreads();
  float gm = -INFINITY;
  for (int w = 0; w < WARPS; ++w) gm = fmaxf(gm, sm[w]);
  float gl = 0.f;
  for (int w = 0; w < WARPS; ++w) gl += sm[w] == -INFINITY ? 0.f : sl[w] * expf(sm[w] - gm);
  T* o = out + ((size_t)row * heads + h) * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float v = 0.f;
    for (int w = 0; w < WARPS; ++w)
      if (sm[w] != -INFINITY) v += sacc[w][i] * expf(sm[w] - gm);
    o[i] = from_f<T>(gl > 0.f ? v / gl : 0.f);
  }
}

// Rows of the embedding table for `ids` (one block per row).
template <typename T>
__device__ void embed_rows(const uint32_t* ids, const T* table, T* out, int cols) {
  const T* src = table + (size_t)ids[blockIdx.x] * cols;
  T* dst = out + (size_t)blockIdx.x * cols;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = src[i];
}

// Greedy pick: the first index of each row's maximum (as argmax on the host path), written to
// `ids` (the next step's input); then every sequence's position and length advance by one.
// One block of 1024 threads per row.
template <typename T>
__device__ void argmax_advance(const T* logits, uint32_t* ids, int* pos, int* len, int cols) {
  const T* r = logits + (size_t)blockIdx.x * cols;
  float best = -INFINITY;
  int arg = 0x7fffffff;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = to_f(r[i]);
    if (v > best) { best = v; arg = i; }
  }
  __shared__ float bv[1024];
  __shared__ int bi[1024];
  bv[threadIdx.x] = best;
  bi[threadIdx.x] = arg;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float ov = bv[threadIdx.x + s];
      const int oi = bi[threadIdx.x + s];
      if (ov > bv[threadIdx.x] || (ov == bv[threadIdx.x] && oi < bi[threadIdx.x])) {
        bv[threadIdx.x] = ov;
        bi[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    ids[blockIdx.x] = (uint32_t)bi[0];
    pos[blockIdx.x] += 1;
    len[blockIdx.x] += 1;
  }
}

#define INSTANTIATE(T, S)                                                                     \
  extern "C" __global__ void rms_norm_##S(const T* x, const T* w, T* y, int cols, float eps) { \
    rms_norm<T>(x, w, y, cols, eps);                                                          \
  }                                                                                           \
  extern "C" __global__ void swiglu_halves_##S(const T* gu, T* y, int rows, int cols) {       \
    swiglu_halves<T>(gu, y, rows, cols);                                                      \
  }                                                                                           \
  extern "C" __global__ void rope_append_##S(const T* qkv, T* q_out, T* k_cache, T* v_cache,   \
                                             const int* pos, const float* inv_freq, int heads, \
                                             int kv_heads, int d, int max_len) {              \
    rope_append<T>(qkv, q_out, k_cache, v_cache, pos, inv_freq, heads, kv_heads, d, max_len); \
  }                                                                                           \
  extern "C" __global__ void __launch_bounds__(128)                                           \
      decode_attention_##S(const T* q, const T* k, const T* v, T* out, const int* len,        \
                           int fixed_len, int heads, int kv_heads, int d, int max_len,        \
                           float scale) {                                                     \
    decode_attention<T>(q, k, v, out, len, fixed_len, heads, kv_heads, d, max_len, scale);    \
  }                                                                                           \
  extern "C" __global__ void embed_rows_##S(const uint32_t* ids, const T* table, T* out,      \
                                            int cols) {                                       \
    embed_rows<T>(ids, table, out, cols);                                                     \
  }                                                                                           \
  extern "C" __global__ void __launch_bounds__(1024)                                          \
      argmax_advance_##S(const T* logits, uint32_t* ids, int* pos, int* len, int cols) {      \
    argmax_advance<T>(logits, ids, pos, len, cols);                                           \
  }

INSTANTIATE(float, f32)
INSTANTIATE(__half, f16)
INSTANTIATE(__nv_bfloat16, bf16)
