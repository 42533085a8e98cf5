// CUDA twins of kernels/norm.h (float). Row ops (LayerNorm) use one warp per row; per-channel ops
// over [N x C] (BatchNorm1d, Dice and the LayerNorm parameter gradients) use 32-column tiles with
// a fixed-order reduction, so results are deterministic.
#include <cmath>

#include "kernels/cuda/dense_cuda.h"
#include "kernels/cuda/dense_util.cuh"
#include "kernels/cuda/launch.cuh"

namespace ips::kernels {
namespace {

using dense_cuda::ColumnSum;
using dense_cuda::kTile;
using dense_cuda::WarpSum;

constexpr unsigned kThreads = 256;
constexpr unsigned kWarpsPerBlock = kThreads / 32;

dim3 ColumnGrid(int64_t cols) { return dim3(static_cast<unsigned>((cols + kTile - 1) / kTile)); }
unsigned RowWarpGrid(int64_t rows) {
  return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

// ---- LayerNorm ----------------------------------------------------------------------------------

__global__ void LayerNormForwardKernel(LayerNormArgs<float> a) {
  const int64_t r = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= a.rows) return;
  const float* x = a.x + r * a.dim;
  float* y = a.y + r * a.dim;
  float s = 0.f;
  for (int64_t j = lane; j < a.dim; j += 32) s += x[j];
  const float mean = WarpSum(s) / static_cast<float>(a.dim);
  float v = 0.f;
  for (int64_t j = lane; j < a.dim; j += 32) v += (x[j] - mean) * (x[j] - mean);
  const float var = WarpSum(v) / static_cast<float>(a.dim);
  const float rstd = rsqrtf(var + a.eps);
  if (lane == 0) {
    a.mean[r] = mean;
    a.rstd[r] = rstd;
  }
  for (int64_t j = lane; j < a.dim; j += 32) y[j] = (x[j] - mean) * rstd * a.gamma[j] + a.beta[j];
}

__global__ void LayerNormBackwardDxKernel(LayerNormArgs<float> a) {
  const int64_t r = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= a.rows) return;
  const float* x = a.x + r * a.dim;
  const float* dy = a.dy + r * a.dim;
  float* dx = a.dx + r * a.dim;
  const float mean = a.mean[r], rstd = a.rstd[r];
  float sg = 0.f, sgx = 0.f;
  for (int64_t j = lane; j < a.dim; j += 32) {
    const float g = dy[j] * a.gamma[j];
    sg += g;
    sgx += g * (x[j] - mean) * rstd;
  }
  const float inv_d = 1.f / static_cast<float>(a.dim);
  sg = WarpSum(sg) * inv_d;
  sgx = WarpSum(sgx) * inv_d;
  for (int64_t j = lane; j < a.dim; j += 32) {
    const float xhat = (x[j] - mean) * rstd;
    dx[j] = rstd * (dy[j] * a.gamma[j] - sg - xhat * sgx);
  }
}

__global__ void LayerNormBackwardParamKernel(LayerNormArgs<float> a) {
  __shared__ float sh[kTile][kTile + 1];
  const int64_t c = blockIdx.x * int64_t{kTile} + threadIdx.x;
  float dg = 0.f, db = 0.f;
  if (c < a.dim)
    for (int64_t r = threadIdx.y; r < a.rows; r += kTile) {
      const float dy = a.dy[r * a.dim + c];
      dg += dy * (a.x[r * a.dim + c] - a.mean[r]) * a.rstd[r];
      db += dy;
    }
  dg = ColumnSum(dg, sh);
  db = ColumnSum(db, sh);
  if (c < a.dim && threadIdx.y == 0) {
    if (a.dgamma != nullptr) a.dgamma[c] = dg;
    if (a.dbeta != nullptr) a.dbeta[c] = db;
  }
}

// ---- Batch statistics shared by BatchNorm1d and Dice ------------------------------------------

struct StatsArgs {
  int64_t n, c;
  bool training;
  float eps, momentum;
  const float* x;
  float* running_mean;
  float* running_var;
  float* save_mean;
  float* save_rstd;
};

__global__ void ColumnStatsKernel(StatsArgs a) {
  __shared__ float sh[kTile][kTile + 1];
  const int64_t c = blockIdx.x * int64_t{kTile} + threadIdx.x;
  if (!a.training) {
    if (c < a.c && threadIdx.y == 0) {
      a.save_mean[c] = a.running_mean[c];
      a.save_rstd[c] = rsqrtf(a.running_var[c] + a.eps);
    }
    return;
  }
  float s = 0.f;
  if (c < a.c)
    for (int64_t r = threadIdx.y; r < a.n; r += kTile) s += a.x[r * a.c + c];
  const float mean = ColumnSum(s, sh) / static_cast<float>(a.n);
  float v = 0.f;
  if (c < a.c)
    for (int64_t r = threadIdx.y; r < a.n; r += kTile) {
      const float d = a.x[r * a.c + c] - mean;
      v += d * d;
    }
  const float sq = ColumnSum(v, sh);
  if (c < a.c && threadIdx.y == 0) {
    a.save_mean[c] = mean;
    a.save_rstd[c] = rsqrtf(sq / static_cast<float>(a.n) + a.eps);
    if (a.running_mean != nullptr)
      a.running_mean[c] = (1.f - a.momentum) * a.running_mean[c] + a.momentum * mean;
    if (a.running_var != nullptr)
      a.running_var[c] =
          (1.f - a.momentum) * a.running_var[c] + a.momentum * (sq / static_cast<float>(a.n - 1));
  }
}

template <typename Args>
Status ColumnStats(const Context& ctx, const Args& a) {
  StatsArgs s{a.n,           a.c,         a.training, a.eps, a.momentum, a.x, a.running_mean,
              a.running_var, a.save_mean, a.save_rstd};
  return cuda::Launch("column_stats", ColumnStatsKernel, ColumnGrid(a.c), dim3(kTile, kTile), 0,
                      cuda::StreamOf(ctx), s);
}

// ---- BatchNorm1d ------------------------------------------------------------------------------

__global__ void BatchNormApplyKernel(BatchNormArgs<float> a) {
  const int64_t n = a.n * a.c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = i % a.c;
    const float xhat = (a.x[i] - a.save_mean[j]) * a.save_rstd[j];
    a.y[i] = (a.gamma ? a.gamma[j] : 1.f) * xhat + (a.beta ? a.beta[j] : 0.f);
  }
}

__global__ void BatchNormBackwardKernel(BatchNormArgs<float> a) {
  __shared__ float sh[kTile][kTile + 1];
  const int64_t c = blockIdx.x * int64_t{kTile} + threadIdx.x;
  const bool valid = c < a.c;
  const float mean = valid ? a.save_mean[c] : 0.f, rstd = valid ? a.save_rstd[c] : 0.f;
  float sg = 0.f, sgx = 0.f;
  if (valid)
    for (int64_t r = threadIdx.y; r < a.n; r += kTile) {
      const float dy = a.dy[r * a.c + c];
      sg += dy;
      sgx += dy * (a.x[r * a.c + c] - mean) * rstd;
    }
  sg = ColumnSum(sg, sh);
  sgx = ColumnSum(sgx, sh);
  if (!valid) return;
  if (threadIdx.y == 0) {
    if (a.dgamma != nullptr) a.dgamma[c] = sgx;
    if (a.dbeta != nullptr) a.dbeta[c] = sg;
  }
  const float scale = (a.gamma ? a.gamma[c] : 1.f) * rstd;
  const float inv_n = 1.f / static_cast<float>(a.n);
  for (int64_t r = threadIdx.y; r < a.n; r += kTile) {
    const int64_t i = r * a.c + c;
    if (!a.training) {
      a.dx[i] = scale * a.dy[i];
    } else {
      const float xhat = (a.x[i] - mean) * rstd;
      a.dx[i] = scale * (a.dy[i] - sg * inv_n - xhat * sgx * inv_n);
    }
  }
}

// ---- Dice -------------------------------------------------------------------------------------

__global__ void DiceApplyKernel(DiceArgs<float> a) {
  const int64_t n = a.n * a.c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = i % a.c;
    const float x = a.x[i];
    const float p = StableSigmoid((x - a.save_mean[j]) * a.save_rstd[j]);
    a.y[i] = p * x + (1.f - p) * a.alpha[j] * x;
  }
}

__global__ void DiceBackwardKernel(DiceArgs<float> a) {
  __shared__ float sh[kTile][kTile + 1];
  const int64_t c = blockIdx.x * int64_t{kTile} + threadIdx.x;
  const bool valid = c < a.c;
  const float mean = valid ? a.save_mean[c] : 0.f, rstd = valid ? a.save_rstd[c] : 0.f;
  const float alpha = valid ? a.alpha[c] : 0.f;
  float sg = 0.f, sgx = 0.f, sa = 0.f;
  if (valid)
    for (int64_t r = threadIdx.y; r < a.n; r += kTile) {
      const float x = a.x[r * a.c + c], dy = a.dy[r * a.c + c];
      const float xhat = (x - mean) * rstd;
      const float p = StableSigmoid(xhat);
      const float g = dy * x * (1.f - alpha) * p * (1.f - p);
      sg += g;
      sgx += g * xhat;
      sa += dy * (1.f - p) * x;
    }
  sg = ColumnSum(sg, sh);
  sgx = ColumnSum(sgx, sh);
  sa = ColumnSum(sa, sh);
  if (!valid) return;
  if (threadIdx.y == 0 && a.dalpha != nullptr) a.dalpha[c] = sa;
  const float inv_n = 1.f / static_cast<float>(a.n);
  for (int64_t r = threadIdx.y; r < a.n; r += kTile) {
    const int64_t i = r * a.c + c;
    const float x = a.x[i], dy = a.dy[i];
    const float xhat = (x - mean) * rstd;
    const float p = StableSigmoid(xhat);
    const float g = dy * x * (1.f - alpha) * p * (1.f - p);
    const float direct = dy * (alpha + p * (1.f - alpha));
    const float through_bn = a.training ? rstd * (g - sg * inv_n - xhat * sgx * inv_n) : rstd * g;
    a.dx[i] = direct + through_bn;
  }
}

}  // namespace

Status LayerNormForwardCuda(const Context& ctx, const LayerNormArgs<float>& a) {
  return cuda::Launch("layer_norm_forward", LayerNormForwardKernel, RowWarpGrid(a.rows), kThreads,
                      0, cuda::StreamOf(ctx), a);
}

Status LayerNormBackwardCuda(const Context& ctx, const LayerNormArgs<float>& a) {
  // Parameter gradients first: they read dy, which dx may alias.
  if (a.dgamma != nullptr || a.dbeta != nullptr)
    IPS_RETURN_IF_ERROR(cuda::Launch("layer_norm_backward_params", LayerNormBackwardParamKernel,
                                     ColumnGrid(a.dim), dim3(kTile, kTile), 0, cuda::StreamOf(ctx),
                                     a));
  return cuda::Launch("layer_norm_backward_dx", LayerNormBackwardDxKernel, RowWarpGrid(a.rows),
                      kThreads, 0, cuda::StreamOf(ctx), a);
}

Status BatchNormForwardCuda(const Context& ctx, const BatchNormArgs<float>& a) {
  IPS_RETURN_IF_ERROR(ColumnStats(ctx, a));
  return cuda::Launch("batch_norm_apply", BatchNormApplyKernel, cuda::GridFor(a.n * a.c, kThreads),
                      kThreads, 0, cuda::StreamOf(ctx), a);
}

Status BatchNormBackwardCuda(const Context& ctx, const BatchNormArgs<float>& a) {
  return cuda::Launch("batch_norm_backward", BatchNormBackwardKernel, ColumnGrid(a.c),
                      dim3(kTile, kTile), 0, cuda::StreamOf(ctx), a);
}

Status DiceForwardCuda(const Context& ctx, const DiceArgs<float>& a) {
  IPS_RETURN_IF_ERROR(ColumnStats(ctx, a));
  return cuda::Launch("dice_apply", DiceApplyKernel, cuda::GridFor(a.n * a.c, kThreads), kThreads,
                      0, cuda::StreamOf(ctx), a);
}

Status DiceBackwardCuda(const Context& ctx, const DiceArgs<float>& a) {
  return cuda::Launch("dice_backward", DiceBackwardKernel, ColumnGrid(a.c), dim3(kTile, kTile), 0,
                      cuda::StreamOf(ctx), a);
}

}  // namespace ips::kernels
