// AdamW's elementwise updates on f32 parameters and moments, in place: three launches per
// parameter instead of a dozen tensor ops. The arithmetic follows torch.optim.AdamW's single-
// tensor path (and wick's CPU optimizer) step by step, in f32.
#include "common.cuh"

#define GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)(n); \
       i += (size_t)gridDim.x * blockDim.x)

// m ← m + (g − m)·(1 − β1)   (exp_avg.lerp_(grad, 1 − β1))
extern "C" __global__ void adamw_m_f32(float* m, const float* g, float one_minus_beta1, int n) {
  GRID_STRIDE(i, n) { m[i] = m[i] + (g[i] - m[i]) * one_minus_beta1; }
}

// v ← v·β2 + g²·(1 − β2)   (exp_avg_sq.mul_(β2).addcmul_(grad, grad, 1 − β2))
extern "C" __global__ void adamw_v_f32(float* v, const float* g, float beta2,
                                       float one_minus_beta2, int n) {
  GRID_STRIDE(i, n) { v[i] = v[i] * beta2 + (g[i] * g[i]) * one_minus_beta2; }
}

// p ← p·decay − (m / (√v · inv_bc2 + eps))·step, with decay = 1 − lr·weight_decay,
// inv_bc2 = 1 / √(1 − β2ᵗ) and step = lr / (1 − β1ᵗ).
extern "C" __global__ void adamw_p_f32(float* p, const float* m, const float* v, float decay,
                                       float step, float inv_bc2, float eps, int n) {
  GRID_STRIDE(i, n) {
    const float denom = sqrtf(v[i]) * inv_bc2 + eps;
    p[i] = p[i] * decay - (m[i] / denom) * step;
  }
}
