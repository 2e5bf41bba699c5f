// Flash-style attention, forward and backward (FlashAttention-2 algorithm), on CUDA cores in f32.
// Instantiated for f32, f16 and bf16 (`name_f32` / `name_f16` / `name_bf16`) and head dims 32, 64
// and 128 (`flash_fwd_d64_bf16`, ...). Layouts: q (batch, heads, lq, D), k/v (batch, kv_heads,
// lk, D), each with the last dim contiguous and any batch/head/row strides (in elements); query
// head h reads kv head h / (heads / kv_heads). Optional additive f32 bias with batch/head/row
// strides (0 broadcasts) and unit column stride. Causal: key j is masked for query i when
// j > i + (lk - lq). The lq×lk scores never reach global memory.
//
// Thread layout (128 threads, every kernel): a 16×8 grid, rg = tid / 8 picks rows, cg = tid % 8
// picks columns cg, cg + 8, ... of each tile; the 8 threads of a row group are adjacent lanes.
// Shared tiles are f32 with a pitch of D + 1 (or BK + 1) floats, so no access pattern conflicts.
#include "common.cuh"
#include <mma.h>

namespace {

constexpr int THREADS = 128;

// rows × D tile from `src` (row r at src + r·row_stride), zero beyond rows_valid, into dst
// (pitch floats a row).
template <typename T, int D>
__device__ __forceinline__ void load_tile(float* dst, int pitch, const T* src, long long row_stride,
                                          int rows_valid, int rows) {
  for (int idx = threadIdx.x; idx < rows * D; idx += THREADS) {
    const int r = idx / D, c = idx % D;
    dst[r * pitch + c] = r < rows_valid ? to_f(src[(long long)r * row_stride + c]) : 0.f;
  }
}

__device__ __forceinline__ float group8_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, 1));
  v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, 2));
  return fmaxf(v, __shfl_xor_sync(0xffffffff, v, 4));
}

__device__ __forceinline__ float group8_sum(float v) {
  v += __shfl_xor_sync(0xffffffff, v, 1);
  v += __shfl_xor_sync(0xffffffff, v, 2);
  return v + __shfl_xor_sync(0xffffffff, v, 4);
}

}  // namespace

// Forward. Grid (ceil(lq / 64), heads, batch); block 128; dynamic shared memory
// (64·(D+1) + BK·(D+1) + BK·D + 64·(BK+1)) floats. Writes o (batch, heads, lq, D) contiguous and,
// when lse is not null, lse (batch, heads, lq): log Σ_j exp(s_ij) of the scaled, biased scores
// (+inf for a row with every key masked, whose output is 0).
template <typename T, int D, int BK>
__device__ void flash_fwd(const T* q, const T* k, const T* v, const float* bias, T* o, float* lse,
                          int heads, int kv_heads, int lq, int lk, long long qsb, long long qsh,
                          long long qsr, long long ksb, long long ksh, long long ksr,
                          long long vsb, long long vsh, long long vsr, long long bsb,
                          long long bsh, long long bsr, float scale, int causal) {
  constexpr int BQ = 64, RQ = BQ / 16, CK = BK / 8, CD = D / 8, QP = D + 1, PP = BK + 1;
  extern __shared__ float smem[];
  float* sQ = smem;           // BQ × QP
  float* sK = sQ + BQ * QP;   // BK × QP
  float* sV = sK + BK * QP;   // BK × D
  float* sP = sV + BK * D;    // BQ × PP
  const int tid = threadIdx.x, rg = tid >> 3, cg = tid & 7;
  const int q0 = blockIdx.x * BQ, h = blockIdx.y, b = blockIdx.z;
  const int kh = h / (heads / kv_heads);
  const T* qb = q + b * qsb + h * qsh + q0 * qsr;
  const T* kb = k + b * ksb + kh * ksh;
  const T* vb = v + b * vsb + kh * vsh;
  const float* biasb = bias ? bias + b * bsb + h * bsh : nullptr;
  load_tile<T, D>(sQ, QP, qb, qsr, lq - q0, BQ);

  float m[RQ], l[RQ], acc[RQ][CD];
#pragma unroll
  for (int i = 0; i < RQ; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int c = 0; c < CD; ++c) acc[i][c] = 0.f;
  }
  const int shift = lk - lq;
  // Causal: the tile's last query row sees keys up to q0 + BQ - 1 + shift.
  const int kend = causal ? min(lk, q0 + BQ + shift) : lk;
  for (int k0 = 0; k0 < kend; k0 += BK) {
    __syncthreads();  // the previous tile's readers are done with sK / sV / sP
    load_tile<T, D>(sK, QP, kb + k0 * ksr, ksr, lk - k0, BK);
    load_tile<T, D>(sV, D, vb + k0 * vsr, vsr, lk - k0, BK);
    __syncthreads();
    float s[RQ][CK];
#pragma unroll
    for (int i = 0; i < RQ; ++i)
#pragma unroll
      for (int j = 0; j < CK; ++j) s[i][j] = 0.f;
#pragma unroll 8
    for (int kk = 0; kk < D; ++kk) {
      float a[RQ], bk[CK];
#pragma unroll
      for (int i = 0; i < RQ; ++i) a[i] = sQ[(rg * RQ + i) * QP + kk];
#pragma unroll
      for (int j = 0; j < CK; ++j) bk[j] = sK[(cg + 8 * j) * QP + kk];
#pragma unroll
      for (int i = 0; i < RQ; ++i)
#pragma unroll
        for (int j = 0; j < CK; ++j) s[i][j] = fmaf(a[i], bk[j], s[i][j]);
    }
    // Online softmax over this tile, row by row (the 8 threads of a row group share rows).
#pragma unroll
    for (int i = 0; i < RQ; ++i) {
      const int row = q0 + rg * RQ + i;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < CK; ++j) {
        const int col = k0 + cg + 8 * j;
        const bool masked = col >= lk || row >= lq || (causal && col > row + shift);
        float x = s[i][j] * scale;
        if (!masked && biasb) x += biasb[(long long)row * bsr + col];
        x = masked ? -INFINITY : x;
        s[i][j] = x;
        mx = fmaxf(mx, x);
      }
      mx = group8_max(mx);
      const float mn = fmaxf(m[i], mx);
      const float mu = mn == -INFINITY ? 0.f : mn;  // all masked so far: keep exp() at 0
      const float corr = expf(m[i] - mu);
      float rs = 0.f;
#pragma unroll
      for (int j = 0; j < CK; ++j) {
        const float p = expf(s[i][j] - mu);
        rs += p;
        sP[(rg * RQ + i) * PP + cg + 8 * j] = p;
      }
      rs = group8_sum(rs);
      l[i] = l[i] * corr + rs;
      m[i] = mn;
#pragma unroll
      for (int c = 0; c < CD; ++c) acc[i][c] *= corr;
    }
    __syncthreads();
#pragma unroll 4
    for (int kk = 0; kk < BK; ++kk) {
      float p[RQ], vv[CD];
#pragma unroll
      for (int i = 0; i < RQ; ++i) p[i] = sP[(rg * RQ + i) * PP + kk];
#pragma unroll
      for (int c = 0; c < CD; ++c) vv[c] = sV[kk * D + cg + 8 * c];
#pragma unroll
      for (int i = 0; i < RQ; ++i)
#pragma unroll
        for (int c = 0; c < CD; ++c) acc[i][c] = fmaf(p[i], vv[c], acc[i][c]);
    }
  }
#pragma unroll
  for (int i = 0; i < RQ; ++i) {
    const int row = q0 + rg * RQ + i;
    if (row >= lq) continue;
    const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
    const long long r = ((long long)b * heads + h) * lq + row;
    T* orow = o + r * D;
#pragma unroll
    for (int c = 0; c < CD; ++c) orow[cg + 8 * c] = from_f<T>(acc[i][c] * inv);
    if (lse && cg == 0) lse[r] = l[i] > 0.f ? m[i] + logf(l[i]) : INFINITY;
  }
}

// Backward prep: dd[row] = Σ_d dout[row, d] · o[row, d] (both contiguous, rows × d). One warp a
// row; block 128.
template <typename T>
__device__ void flash_bwd_prep(const T* o, const T* dout, float* dd, int rows, int d) {
  const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
  if (row >= rows) return;  // uniform over the warp
  const T* orow = o + (long long)row * d;
  const T* grow = dout + (long long)row * d;
  float s = 0.f;
  for (int c = lane; c < d; c += 32) s += to_f(orow[c]) * to_f(grow[c]);
  s = warp_sum(s);
  if (lane == 0) dd[row] = s;
}

// Backward main kernel (FlashAttention-2). Grid (ceil(lk / BK), kv_heads · hsplit, batch); block
// 128; dynamic shared memory (2·BK·(D+1) + 2·BQ·(D+1) + 2·BQ·(BK+1) + 2·BQ) floats. Each block
// owns one key tile of one kv head and loops over n_rep / hsplit query heads of its GQA group
// and over the query tiles that see the key tile, recomputing P = exp(S − LSE) and
// accumulating dV = Pᵀ·dO and dK = scale·dSᵀ·Q in registers (dS = P∘(dP − D), dP = dO·Vᵀ);
// dQ += scale·dS·K goes by f32 atomicAdd into dq (batch, heads, lq, D), zeroed by the caller.
// hsplit == 1: dk/dv (batch, kv_heads, lk, D) in T. hsplit > 1: f32 partials into dkp/dvp
// (batch, kv_heads, hsplit, lk, D), summed by flash_bwd_reduce. dout is contiguous
// (batch, heads, lq, D); lse and dd are (batch, heads, lq).
template <typename T, int D, int BQ, int BK>
__device__ void flash_bwd(const T* q, const T* k, const T* v, const T* dout, const float* lse,
                          const float* dd, const float* bias, float* dq, T* dk, T* dv, float* dkp,
                          float* dvp, int heads, int kv_heads, int hsplit, int lq, int lk,
                          long long qsb, long long qsh, long long qsr, long long ksb,
                          long long ksh, long long ksr, long long vsb, long long vsh,
                          long long vsr, long long bsb, long long bsh, long long bsr, float scale,
                          int causal) {
  constexpr int RQ = BQ / 16, CK = BK / 8, RK = BK / 16, CD = D / 8, DP = D + 1, PP = BK + 1;
  extern __shared__ float smem[];
  float* sK = smem;            // BK × DP
  float* sV = sK + BK * DP;    // BK × DP
  float* sQ = sV + BK * DP;    // BQ × DP
  float* sG = sQ + BQ * DP;    // BQ × DP (dO)
  float* sP = sG + BQ * DP;    // BQ × PP
  float* sS = sP + BQ * PP;    // BQ × PP (dS)
  float* sL = sS + BQ * PP;    // BQ (LSE)
  float* sD = sL + BQ;         // BQ (D_i)
  const int tid = threadIdx.x, rg = tid >> 3, cg = tid & 7;
  const int k0 = blockIdx.x * BK, b = blockIdx.z;
  const int kh = blockIdx.y / hsplit, split = blockIdx.y % hsplit;
  const int n_rep = heads / kv_heads, per = n_rep / hsplit;
  load_tile<T, D>(sK, DP, k + b * ksb + kh * ksh + k0 * ksr, ksr, lk - k0, BK);
  load_tile<T, D>(sV, DP, v + b * vsb + kh * vsh + k0 * vsr, vsr, lk - k0, BK);

  float adk[RK][CD], adv[RK][CD];
#pragma unroll
  for (int r = 0; r < RK; ++r)
#pragma unroll
    for (int c = 0; c < CD; ++c) adk[r][c] = adv[r][c] = 0.f;
  const int shift = lk - lq;
  // Causal: query row i sees key k0 when i ≥ k0 − shift; earlier tiles see none of this tile.
  const int qfirst = causal ? max(0, k0 - shift) : 0;
  const int qstart = (qfirst / BQ) * BQ;

  for (int hr = 0; hr < per; ++hr) {
    const int h = kh * n_rep + split * per + hr;
    const long long bh = (long long)b * heads + h;
    const T* qb = q + b * qsb + h * qsh;
    const T* gb = dout + bh * lq * D;
    const float* lb = lse + bh * lq;
    const float* db = dd + bh * lq;
    float* dqb = dq + bh * lq * D;
    const float* biasb = bias ? bias + b * bsb + h * bsh : nullptr;
    for (int q0 = qstart; q0 < lq; q0 += BQ) {
      __syncthreads();  // the previous tile's readers are done
      load_tile<T, D>(sQ, DP, qb + q0 * qsr, qsr, lq - q0, BQ);
      load_tile<T, D>(sG, DP, gb + (long long)q0 * D, D, lq - q0, BQ);
      for (int i = tid; i < BQ; i += THREADS) {
        const int r = q0 + i;
        sL[i] = r < lq ? lb[r] : INFINITY;
        sD[i] = r < lq ? db[r] : 0.f;
      }
      __syncthreads();
      float s[RQ][CK], dp[RQ][CK];
#pragma unroll
      for (int i = 0; i < RQ; ++i)
#pragma unroll
        for (int j = 0; j < CK; ++j) s[i][j] = dp[i][j] = 0.f;
#pragma unroll 4
      for (int kk = 0; kk < D; ++kk) {
        float a[RQ], g[RQ], bk[CK], bv[CK];
#pragma unroll
        for (int i = 0; i < RQ; ++i) {
          a[i] = sQ[(rg * RQ + i) * DP + kk];
          g[i] = sG[(rg * RQ + i) * DP + kk];
        }
#pragma unroll
        for (int j = 0; j < CK; ++j) {
          bk[j] = sK[(cg + 8 * j) * DP + kk];
          bv[j] = sV[(cg + 8 * j) * DP + kk];
        }
#pragma unroll
        for (int i = 0; i < RQ; ++i)
#pragma unroll
          for (int j = 0; j < CK; ++j) {
            s[i][j] = fmaf(a[i], bk[j], s[i][j]);
            dp[i][j] = fmaf(g[i], bv[j], dp[i][j]);
          }
      }
#pragma unroll
      for (int i = 0; i < RQ; ++i) {
        const int ri = rg * RQ + i, row = q0 + ri;
        const float lrow = sL[ri], drow = sD[ri];
#pragma unroll
        for (int j = 0; j < CK; ++j) {
          const int col = k0 + cg + 8 * j;
          const bool masked = col >= lk || row >= lq || (causal && col > row + shift);
          float x = s[i][j] * scale;
          if (!masked && biasb) x += biasb[(long long)row * bsr + col];
          const float p = masked ? 0.f : expf(x - lrow);
          sP[ri * PP + cg + 8 * j] = p;
          sS[ri * PP + cg + 8 * j] = p * (dp[i][j] - drow);
        }
      }
      __syncthreads();
      // dV += Pᵀ·dO, dK += dSᵀ·Q over this tile's query rows.
#pragma unroll 2
      for (int i = 0; i < BQ; ++i) {
        float pr[RK], sr[RK], go[CD], qq[CD];
#pragma unroll
        for (int r = 0; r < RK; ++r) {
          pr[r] = sP[i * PP + rg * RK + r];
          sr[r] = sS[i * PP + rg * RK + r];
        }
#pragma unroll
        for (int c = 0; c < CD; ++c) {
          go[c] = sG[i * DP + cg + 8 * c];
          qq[c] = sQ[i * DP + cg + 8 * c];
        }
#pragma unroll
        for (int r = 0; r < RK; ++r)
#pragma unroll
          for (int c = 0; c < CD; ++c) {
            adv[r][c] = fmaf(pr[r], go[c], adv[r][c]);
            adk[r][c] = fmaf(sr[r], qq[c], adk[r][c]);
          }
      }
      // dQ += scale·dS·K for this tile's query rows.
      float aq[RQ][CD];
#pragma unroll
      for (int i = 0; i < RQ; ++i)
#pragma unroll
        for (int c = 0; c < CD; ++c) aq[i][c] = 0.f;
#pragma unroll 4
      for (int j = 0; j < BK; ++j) {
        float ds[RQ], kv[CD];
#pragma unroll
        for (int i = 0; i < RQ; ++i) ds[i] = sS[(rg * RQ + i) * PP + j];
#pragma unroll
        for (int c = 0; c < CD; ++c) kv[c] = sK[j * DP + cg + 8 * c];
#pragma unroll
        for (int i = 0; i < RQ; ++i)
#pragma unroll
          for (int c = 0; c < CD; ++c) aq[i][c] = fmaf(ds[i], kv[c], aq[i][c]);
      }
#pragma unroll
      for (int i = 0; i < RQ; ++i) {
        const int row = q0 + rg * RQ + i;
        if (row >= lq) continue;
#pragma unroll
        for (int c = 0; c < CD; ++c) atomicAdd(dqb + (long long)row * D + cg + 8 * c, aq[i][c] * scale);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < RK; ++r) {
    const int key = k0 + rg * RK + r;
    if (key >= lk) continue;
    const long long g = (long long)b * kv_heads + kh;
    if (hsplit == 1) {
      T* dkr = dk + (g * lk + key) * D;
      T* dvr = dv + (g * lk + key) * D;
#pragma unroll
      for (int c = 0; c < CD; ++c) {
        dkr[cg + 8 * c] = from_f<T>(adk[r][c] * scale);
        dvr[cg + 8 * c] = from_f<T>(adv[r][c]);
      }
    } else {
      const long long at = ((g * hsplit + split) * lk + key) * D;
#pragma unroll
      for (int c = 0; c < CD; ++c) {
        dkp[at + cg + 8 * c] = adk[r][c] * scale;
        dvp[at + cg + 8 * c] = adv[r][c];
      }
    }
  }
}


// ---------------------------------------------------------------------------------------------
// Tensor-core versions for f16 / bf16 (WMMA 16×16×16, f32 accumulators): the same algorithms,
// BQ = BK = 64, 4 warps; warp w owns query rows 16w..16w+15 of the S/P work (and key rows
// 16w..16w+15 of dK/dV in the backward), so the softmax between the two matrix products needs
// only the warp. P and dS are rounded to T before their products (as FlashAttention does);
// softmax statistics, O, dK, dV and dQ accumulate in f32.

namespace {

using namespace nvcuda;

// rows × D tile of T into shared T (pitch elements a row), zero beyond rows_valid; 16-byte
// vector loads when `vec` (addresses and strides 8-element aligned).
template <typename T, int D>
__device__ __forceinline__ void load_tile_h(T* dst, int pitch, const T* src, long long stride,
                                            int rows_valid, int rows, int vec) {
  if (vec) {
    constexpr int C8 = D / 8;
    for (int idx = threadIdx.x; idx < rows * C8; idx += THREADS) {
      const int r = idx / C8, c = (idx % C8) * 8;
      uint4 val = make_uint4(0u, 0u, 0u, 0u);
      if (r < rows_valid) val = *reinterpret_cast<const uint4*>(src + r * stride + c);
      *reinterpret_cast<uint4*>(dst + r * pitch + c) = val;
    }
  } else {
    for (int idx = threadIdx.x; idx < rows * D; idx += THREADS) {
      const int r = idx / D, c = idx % D;
      dst[r * pitch + c] = r < rows_valid ? src[r * stride + c] : from_f<T>(0.f);
    }
  }
}

template <typename T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragAc = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major>;
template <typename T>
using FragBr = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBc = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

}  // namespace

// Forward on tensor cores. Grid (ceil(lq / 64), heads, batch); block 128; dynamic shared memory
// 3·64·(D+8)·2 + 64·68·4 + 64·72·2 + 4·16·20·4 bytes. Same outputs as flash_fwd. O stays in
// WMMA accumulators across key tiles; the per-row online-softmax factors reach them through a
// 16×16 matrix of row factors loaded as an accumulator fragment of the same layout (fragments of
// one type map elements alike, so the product is element-wise by row).
template <typename T, int D>
__device__ void flash_fwd_tc(const T* q, const T* k, const T* v, const float* bias, T* o,
                             float* lse, int heads, int kv_heads, int lq, int lk, long long qsb,
                             long long qsh, long long qsr, long long ksb, long long ksh,
                             long long ksr, long long vsb, long long vsh, long long vsr,
                             long long bsb, long long bsh, long long bsr, float scale, int causal,
                             int vec) {
  constexpr int BQ = 64, BK = 64, XP = D + 8, SP = BK + 4, PP = BK + 8, CP = 20;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + BQ * XP;
  T* sV = sK + BK * XP;
  float* sS = reinterpret_cast<float*>(sV + BK * XP);
  T* sP = reinterpret_cast<T*>(sS + BQ * SP);
  float* sC = reinterpret_cast<float*>(sP + BQ * PP);  // 4 warps × 16 × CP
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int q0 = blockIdx.x * BQ, h = blockIdx.y, b = blockIdx.z;
  const int kh = h / (heads / kv_heads);
  const T* qb = q + b * qsb + h * qsh + q0 * qsr;
  const T* kb = k + b * ksb + kh * ksh;
  const T* vb = v + b * vsb + kh * vsh;
  const float* biasb = bias ? bias + b * bsb + h * bsh : nullptr;
  float* sCw = sC + warp * 16 * CP;
  load_tile_h<T, D>(sQ, XP, qb, qsr, lq - q0, BQ, vec);
  FragC acc[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) wmma::fill_fragment(acc[n], 0.f);
  // Softmax ownership: lane pair per row, each half of the tile's columns.
  const int rw = lane >> 1, rl = warp * 16 + rw, half = lane & 1, row = q0 + rl;
  float m = -INFINITY, l = 0.f;
  const int shift = lk - lq;
  const int kend = causal ? min(lk, q0 + BQ + shift) : lk;
  for (int k0 = 0; k0 < kend; k0 += BK) {
    __syncthreads();
    load_tile_h<T, D>(sK, XP, kb + k0 * ksr, ksr, lk - k0, BK, vec);
    load_tile_h<T, D>(sV, XP, vb + k0 * vsr, vsr, lk - k0, BK, vec);
    __syncthreads();
    // S = Q·Kᵀ for this warp's 16 rows.
#pragma unroll
    for (int n = 0; n < BK / 16; ++n) {
      FragC sacc;
      wmma::fill_fragment(sacc, 0.f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        FragA<T> a;
        FragBc<T> bf;
        wmma::load_matrix_sync(a, sQ + warp * 16 * XP + kk * 16, XP);
        wmma::load_matrix_sync(bf, sK + n * 16 * XP + kk * 16, XP);
        wmma::mma_sync(sacc, a, bf, sacc);
      }
      wmma::store_matrix_sync(sS + warp * 16 * SP + n * 16, sacc, SP, wmma::mem_row_major);
    }
    __syncwarp();
    float corr;
    {
      float* srow = sS + rl * SP + half * (BK / 2);
      float mx = -INFINITY;
#pragma unroll 8
      for (int j = 0; j < BK / 2; ++j) {
        const int col = k0 + half * (BK / 2) + j;
        const bool masked = col >= lk || row >= lq || (causal && col > row + shift);
        float x = srow[j] * scale;
        if (!masked && biasb) x += biasb[(long long)row * bsr + col];
        x = masked ? -INFINITY : x;
        srow[j] = x;
        mx = fmaxf(mx, x);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
      const float mn = fmaxf(m, mx);
      const float mu = mn == -INFINITY ? 0.f : mn;
      corr = expf(m - mu);
      float rs = 0.f;
      T* prow = sP + rl * PP + half * (BK / 2);
#pragma unroll 8
      for (int j = 0; j < BK / 2; ++j) {
        const float p = expf(srow[j] - mu);
        rs += p;
        prow[j] = from_f<T>(p);
      }
      rs += __shfl_xor_sync(0xffffffff, rs, 1);
      l = l * corr + rs;
      m = mn;
    }
    // Rescale O's rows (skipped when no row maximum moved).
    if (__any_sync(0xffffffff, corr != 1.f)) {
#pragma unroll
      for (int c = 0; c < 8; ++c) sCw[rw * CP + half * 8 + c] = corr;
      __syncwarp();
      FragC cf;
      wmma::load_matrix_sync(cf, sCw, CP, wmma::mem_row_major);
#pragma unroll
      for (int n = 0; n < D / 16; ++n)
#pragma unroll
        for (int i = 0; i < cf.num_elements; ++i) acc[n].x[i] *= cf.x[i];
    }
    __syncwarp();
    // O += P·V for this warp's rows.
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      FragA<T> a;
      wmma::load_matrix_sync(a, sP + warp * 16 * PP + kk * 16, PP);
#pragma unroll
      for (int n = 0; n < D / 16; ++n) {
        FragBr<T> bf;
        wmma::load_matrix_sync(bf, sV + kk * 16 * XP + n * 16, XP);
        wmma::mma_sync(acc[n], a, bf, acc[n]);
      }
    }
  }
  // O / l, staged per 16×16 block through this warp's sC.
  const float inv = l > 0.f ? 1.f / l : 0.f;
  __syncwarp();
#pragma unroll
  for (int c = 0; c < 8; ++c) sCw[rw * CP + half * 8 + c] = inv;
  __syncwarp();
  {
    FragC cf;
    wmma::load_matrix_sync(cf, sCw, CP, wmma::mem_row_major);
#pragma unroll
    for (int n = 0; n < D / 16; ++n)
#pragma unroll
      for (int i = 0; i < cf.num_elements; ++i) acc[n].x[i] *= cf.x[i];
  }
  const long long rbase = ((long long)b * heads + h) * lq;
#pragma unroll
  for (int n = 0; n < D / 16; ++n) {
    __syncwarp();
    wmma::store_matrix_sync(sCw, acc[n], CP, wmma::mem_row_major);
    __syncwarp();
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      if (row < lq) o[(rbase + row) * D + n * 16 + half * 8 + c] = from_f<T>(sCw[rw * CP + half * 8 + c]);
    }
  }
  if (row < lq && lse && half == 0) lse[rbase + row] = l > 0.f ? m + logf(l) : INFINITY;
}

// Backward main kernel on tensor cores: as flash_bwd (same arguments plus `vec`), BQ = BK = 64.
// Dynamic shared memory 4·64·(D+8)·2 + 2·64·68·4 + 2·64·72·2 + 2·64·4 bytes.
template <typename T, int D>
__device__ void flash_bwd_tc(const T* q, const T* k, const T* v, const T* dout, const float* lse,
                             const float* dd, const float* bias, float* dq, T* dk, T* dv,
                             float* dkp, float* dvp, int heads, int kv_heads, int hsplit, int lq,
                             int lk, long long qsb, long long qsh, long long qsr, long long ksb,
                             long long ksh, long long ksr, long long vsb, long long vsh,
                             long long vsr, long long bsb, long long bsh, long long bsr,
                             float scale, int causal, int vec) {
  constexpr int BQ = 64, BK = 64, XP = D + 8, SP = BK + 4, PP = BK + 8, OP = D + 4;
  static_assert(2 * BQ * SP >= BQ * OP, "dQ scratch must fit over S and dP");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + BK * XP;
  T* sQ = sV + BK * XP;
  T* sG = sQ + BQ * XP;
  float* sS = reinterpret_cast<float*>(sG + BQ * XP);
  float* sdP = sS + BQ * SP;
  T* sP = reinterpret_cast<T*>(sdP + BQ * SP);
  T* sdS = sP + BQ * PP;
  float* sL = reinterpret_cast<float*>(sdS + BQ * PP);
  float* sD = sL + BQ;
  float* scratch = sS;  // BQ × OP f32 over S and dP once they are consumed
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int k0 = blockIdx.x * BK, b = blockIdx.z;
  const int kh = blockIdx.y / hsplit, split = blockIdx.y % hsplit;
  const int n_rep = heads / kv_heads, per = n_rep / hsplit;
  load_tile_h<T, D>(sK, XP, k + b * ksb + kh * ksh + k0 * ksr, ksr, lk - k0, BK, vec);
  load_tile_h<T, D>(sV, XP, v + b * vsb + kh * vsh + k0 * vsr, vsr, lk - k0, BK, vec);
  FragC adk[D / 16], adv[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) {
    wmma::fill_fragment(adk[n], 0.f);
    wmma::fill_fragment(adv[n], 0.f);
  }
  const int shift = lk - lq;
  const int qfirst = causal ? max(0, k0 - shift) : 0;
  const int qstart = (qfirst / BQ) * BQ;
  const int rl = warp * 16 + (lane >> 1), half = lane & 1;

  for (int hr = 0; hr < per; ++hr) {
    const int h = kh * n_rep + split * per + hr;
    const long long bh = (long long)b * heads + h;
    const T* qb = q + b * qsb + h * qsh;
    const T* gb = dout + bh * lq * D;
    const float* lb = lse + bh * lq;
    const float* db = dd + bh * lq;
    float* dqb = dq + bh * lq * D;
    const float* biasb = bias ? bias + b * bsb + h * bsh : nullptr;
    for (int q0 = qstart; q0 < lq; q0 += BQ) {
      __syncthreads();
      load_tile_h<T, D>(sQ, XP, qb + q0 * qsr, qsr, lq - q0, BQ, vec);
      load_tile_h<T, D>(sG, XP, gb + (long long)q0 * D, D, lq - q0, BQ, 1);
      for (int i = tid; i < BQ; i += THREADS) {
        const int r = q0 + i;
        sL[i] = r < lq ? lb[r] : INFINITY;
        sD[i] = r < lq ? db[r] : 0.f;
      }
      __syncthreads();
      // S = Q·Kᵀ and dP = dO·Vᵀ for this warp's 16 query rows.
#pragma unroll
      for (int n = 0; n < BK / 16; ++n) {
        FragC as, ap;
        wmma::fill_fragment(as, 0.f);
        wmma::fill_fragment(ap, 0.f);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          FragA<T> a;
          FragBc<T> bf;
          wmma::load_matrix_sync(a, sQ + warp * 16 * XP + kk * 16, XP);
          wmma::load_matrix_sync(bf, sK + n * 16 * XP + kk * 16, XP);
          wmma::mma_sync(as, a, bf, as);
          wmma::load_matrix_sync(a, sG + warp * 16 * XP + kk * 16, XP);
          wmma::load_matrix_sync(bf, sV + n * 16 * XP + kk * 16, XP);
          wmma::mma_sync(ap, a, bf, ap);
        }
        wmma::store_matrix_sync(sS + warp * 16 * SP + n * 16, as, SP, wmma::mem_row_major);
        wmma::store_matrix_sync(sdP + warp * 16 * SP + n * 16, ap, SP, wmma::mem_row_major);
      }
      __syncwarp();
      {
        const int row = q0 + rl;
        const float lrow = sL[rl], drow = sD[rl];
        const float* srow = sS + rl * SP + half * (BK / 2);
        const float* dprow = sdP + rl * SP + half * (BK / 2);
        T* prow = sP + rl * PP + half * (BK / 2);
        T* dsrow = sdS + rl * PP + half * (BK / 2);
#pragma unroll 8
        for (int j = 0; j < BK / 2; ++j) {
          const int col = k0 + half * (BK / 2) + j;
          const bool masked = col >= lk || row >= lq || (causal && col > row + shift);
          float x = srow[j] * scale;
          if (!masked && biasb) x += biasb[(long long)row * bsr + col];
          const float p = masked ? 0.f : expf(x - lrow);
          prow[j] = from_f<T>(p);
          dsrow[j] = from_f<T>(p * (dprow[j] - drow));
        }
      }
      __syncthreads();
      // dV += Pᵀ·dO and dK += dSᵀ·Q for this warp's 16 keys.
#pragma unroll
      for (int kk = 0; kk < BQ / 16; ++kk) {
        FragAc<T> pt, st;
        wmma::load_matrix_sync(pt, sP + kk * 16 * PP + warp * 16, PP);
        wmma::load_matrix_sync(st, sdS + kk * 16 * PP + warp * 16, PP);
#pragma unroll
        for (int n = 0; n < D / 16; ++n) {
          FragBr<T> bf;
          wmma::load_matrix_sync(bf, sG + kk * 16 * XP + n * 16, XP);
          wmma::mma_sync(adv[n], pt, bf, adv[n]);
          wmma::load_matrix_sync(bf, sQ + kk * 16 * XP + n * 16, XP);
          wmma::mma_sync(adk[n], st, bf, adk[n]);
        }
      }
      // dQ (this warp's 16 query rows) = dS·K, staged in f32 over S/dP, then atomics.
#pragma unroll
      for (int n = 0; n < D / 16; ++n) {
        FragC acc;
        wmma::fill_fragment(acc, 0.f);
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
          FragA<T> a;
          FragBr<T> bf;
          wmma::load_matrix_sync(a, sdS + warp * 16 * PP + kk * 16, PP);
          wmma::load_matrix_sync(bf, sK + kk * 16 * XP + n * 16, XP);
          wmma::mma_sync(acc, a, bf, acc);
        }
        wmma::store_matrix_sync(scratch + warp * 16 * OP + n * 16, acc, OP, wmma::mem_row_major);
      }
      __syncwarp();
      for (int idx = lane; idx < 16 * D; idx += 32) {
        const int r = idx / D, c = idx % D, row = q0 + warp * 16 + r;
        if (row < lq) atomicAdd(dqb + (long long)row * D + c, scratch[(warp * 16 + r) * OP + c] * scale);
      }
    }
  }
  __syncthreads();
  // dK, dV out through the scratch (this warp's 16 keys).
  const long long g = (long long)b * kv_heads + kh;
#pragma unroll
  for (int which = 0; which < 2; ++which) {
#pragma unroll
    for (int n = 0; n < D / 16; ++n)
      wmma::store_matrix_sync(scratch + warp * 16 * OP + n * 16, which ? adv[n] : adk[n], OP,
                              wmma::mem_row_major);
    __syncwarp();
    const float mul = which ? 1.f : scale;
    for (int idx = lane; idx < 16 * D; idx += 32) {
      const int r = idx / D, c = idx % D, key = k0 + warp * 16 + r;
      if (key >= lk) continue;
      const float val = scratch[(warp * 16 + r) * OP + c] * mul;
      if (hsplit == 1) {
        (which ? dv : dk)[(g * lk + key) * D + c] = from_f<T>(val);
      } else {
        (which ? dvp : dkp)[((g * hsplit + split) * lk + key) * D + c] = val;
      }
    }
    __syncwarp();
  }
}

// out[g, i] = Σ_s part[g, s, i] for g < groups, i < n (part is groups × splits × n, f32).
template <typename T>
__device__ void flash_bwd_reduce(const float* part, T* out, int splits, long long n,
                                 long long total) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
       i += (long long)gridDim.x * blockDim.x) {
    const long long g = i / n, r = i % n;
    float s = 0.f;
    for (int p = 0; p < splits; ++p) s += part[(g * splits + p) * n + r];
    out[i] = from_f<T>(s);
  }
}

template <typename T>
__device__ void flash_cast(const float* x, T* y, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x)
    y[i] = from_f<T>(x[i]);
}

#define FWD_PARAMS(T)                                                                          \
  const T *q, const T *k, const T *v, const float *bias, T *o, float *lse, int heads,           \
      int kv_heads, int lq, int lk, long long qsb, long long qsh, long long qsr, long long ksb, \
      long long ksh, long long ksr, long long vsb, long long vsh, long long vsr, long long bsb,  \
      long long bsh, long long bsr, float scale, int causal
#define FWD_ARGS                                                                                \
  q, k, v, bias, o, lse, heads, kv_heads, lq, lk, qsb, qsh, qsr, ksb, ksh, ksr, vsb, vsh, vsr, \
      bsb, bsh, bsr, scale, causal
#define BWD_PARAMS(T)                                                                           \
  const T *q, const T *k, const T *v, const T *dout, const float *lse, const float *dd,          \
      const float *bias, float *dq, T *dk, T *dv, float *dkp, float *dvp, int heads,             \
      int kv_heads, int hsplit, int lq, int lk, long long qsb, long long qsh, long long qsr,     \
      long long ksb, long long ksh, long long ksr, long long vsb, long long vsh, long long vsr,   \
      long long bsb, long long bsh, long long bsr, float scale, int causal
#define BWD_ARGS                                                                                \
  q, k, v, dout, lse, dd, bias, dq, dk, dv, dkp, dvp, heads, kv_heads, hsplit, lq, lk, qsb, qsh, \
      qsr, ksb, ksh, ksr, vsb, vsh, vsr, bsb, bsh, bsr, scale, causal

// Tiles (keep in step with crates/wick/src/ops/cuda/flash.rs): forward BQ = 64 and BK = 64 (32 for
// D = 128); backward BQ = BK = 64 (32 for D = 128).
#define INSTANTIATE_D(T, S, D, FBK, BBQ, BBK)                                                    \
  extern "C" __global__ void __launch_bounds__(128) flash_fwd_d##D##_##S(FWD_PARAMS(T)) {        \
    flash_fwd<T, D, FBK>(FWD_ARGS);                                                              \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(128) flash_bwd_d##D##_##S(BWD_PARAMS(T)) {        \
    flash_bwd<T, D, BBQ, BBK>(BWD_ARGS);                                                         \
  }

#define INSTANTIATE_TC(T, S, D)                                                                \
  extern "C" __global__ void __launch_bounds__(128) flash_fwd_tc_d##D##_##S(FWD_PARAMS(T),       \
                                                                           int vec) {           \
    flash_fwd_tc<T, D>(FWD_ARGS, vec);                                                           \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(128) flash_bwd_tc_d##D##_##S(BWD_PARAMS(T),       \
                                                                           int vec) {           \
    flash_bwd_tc<T, D>(BWD_ARGS, vec);                                                           \
  }

#define INSTANTIATE(T, S)                                                                        \
  INSTANTIATE_D(T, S, 32, 64, 64, 64)                                                            \
  INSTANTIATE_D(T, S, 64, 64, 64, 64)                                                            \
  INSTANTIATE_D(T, S, 128, 32, 32, 32)                                                           \
  extern "C" __global__ void __launch_bounds__(128)                                             \
      flash_bwd_prep_##S(const T* o, const T* dout, float* dd, int rows, int d) {               \
    flash_bwd_prep<T>(o, dout, dd, rows, d);                                                     \
  }                                                                                              \
  extern "C" __global__ void flash_bwd_reduce_##S(const float* part, T* out, int splits,         \
                                                  long long n, long long total) {                \
    flash_bwd_reduce<T>(part, out, splits, n, total);                                            \
  }                                                                                              \
  extern "C" __global__ void flash_cast_##S(const float* x, T* y, long long n) {                 \
    flash_cast<T>(x, y, n);                                                                      \
  }

INSTANTIATE(float, f32)
INSTANTIATE(__half, f16)
INSTANTIATE(__nv_bfloat16, bf16)
INSTANTIATE_TC(__half, f16, 32)
INSTANTIATE_TC(__half, f16, 64)
INSTANTIATE_TC(__half, f16, 128)
INSTANTIATE_TC(__nv_bfloat16, bf16, 32)
INSTANTIATE_TC(__nv_bfloat16, bf16, 64)
INSTANTIATE_TC(__nv_bfloat16, bf16, 128)
