// CPU paths (and device dispatch) of kernels/norm.h. Statistics accumulate in double for both
// element types, so the float path is as close to the float64 reference as its storage allows.
#include "kernels/norm.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "kernels/activation.h"
#include "kernels/cpu/dense_util.h"

namespace ips::kernels {
namespace {

using dense_internal::MinRows;
using dense_internal::NoCuda;
using dense_internal::NonNegative;
using dense_internal::ParallelRows;
using dense_internal::Required;

// Column blocks for [N x C] reductions: each task owns whole columns, so sums have a fixed order.
constexpr int64_t kColumnBlock = 32;

// fn(c0, c1) for every block of at most kColumnBlock columns of [0, c), blocks spread over the
// pool (fn's per-block accumulators are fixed-size arrays).
template <typename F>
void ForColumnBlocks(const Context& ctx, int64_t c, const F& fn) {
  const int64_t blocks = (c + kColumnBlock - 1) / kColumnBlock;
  ParallelRows(ctx, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) fn(b * kColumnBlock, std::min(c, (b + 1) * kColumnBlock));
  });
}

// Fills save_mean/save_rstd from the batch (training, also updating the running statistics) or
// from the running statistics (inference).
template <typename T>
void ColumnStats(const Context& ctx, int64_t n, int64_t c, bool training, double eps,
                 double momentum, const T* x, T* running_mean, T* running_var, T* save_mean,
                 T* save_rstd) {
  ForColumnBlocks(ctx, c, [&](int64_t c0, int64_t c1) {
    if (!training) {
      for (int64_t j = c0; j < c1; ++j) {
        save_mean[j] = running_mean[j];
        save_rstd[j] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var[j]) + eps));
      }
      return;
    }
    double sum[kColumnBlock] = {}, sq[kColumnBlock] = {};
    for (int64_t i = 0; i < n; ++i) {
      const T* row = x + i * c;
      for (int64_t j = c0; j < c1; ++j) sum[j - c0] += row[j];
    }
    for (int64_t j = c0; j < c1; ++j) sum[j - c0] /= static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) {  // two passes: no cancellation in E[x^2] - E[x]^2
      const T* row = x + i * c;
      for (int64_t j = c0; j < c1; ++j) {
        const double d = row[j] - sum[j - c0];
        sq[j - c0] += d * d;
      }
    }
    for (int64_t j = c0; j < c1; ++j) {
      const double mean = sum[j - c0], var = sq[j - c0] / static_cast<double>(n);
      save_mean[j] = static_cast<T>(mean);
      save_rstd[j] = static_cast<T>(1.0 / std::sqrt(var + eps));
      if (running_mean != nullptr)
        running_mean[j] = static_cast<T>((1 - momentum) * running_mean[j] + momentum * mean);
      if (running_var != nullptr) {
        const double unbiased = sq[j - c0] / static_cast<double>(n - 1);
        running_var[j] = static_cast<T>((1 - momentum) * running_var[j] + momentum * unbiased);
      }
    }
  });
}

template <typename Args>
Status CheckBatchStats(const char* op, const Args& a) {
  IPS_RETURN_IF_ERROR(NonNegative(op, a.n, a.c));
  if (!(a.eps > 0.f)) return InvalidArgumentError(std::string(op) + ": eps must be > 0");
  if (a.training && a.n == 1)
    return InvalidArgumentError(std::string(op) +
                                ": training needs more than 1 row per channel (got N = 1)");
  if (a.n * a.c == 0) return Status::Ok();
  if (!a.training) {
    IPS_RETURN_IF_ERROR(Required(op, "running_mean (inference)", a.running_mean));
    IPS_RETURN_IF_ERROR(Required(op, "running_var (inference)", a.running_var));
  }
  IPS_RETURN_IF_ERROR(Required(op, "x", a.x));
  IPS_RETURN_IF_ERROR(Required(op, "save_mean", a.save_mean));
  return Required(op, "save_rstd", a.save_rstd);
}

}  // namespace

// ---- LayerNorm ----------------------------------------------------------------------------------

template <typename T>
Status LayerNormForward(const Context& ctx, const LayerNormArgs<T>& a) {
  constexpr const char* kOp = "LayerNormForward";
  IPS_RETURN_IF_ERROR(NonNegative(kOp, a.rows, a.dim));
  if (!(a.eps > 0.f)) return InvalidArgumentError("LayerNormForward: eps must be > 0");
  if (a.rows == 0) return Status::Ok();
  if (a.dim == 0) return InvalidArgumentError("LayerNormForward: dim must be > 0");
  for (auto [name, p] : {std::pair<const char*, const void*>{"x", a.x},
                         {"gamma", a.gamma},
                         {"beta", a.beta},
                         {"y", a.y},
                         {"mean", a.mean},
                         {"rstd", a.rstd}})
    IPS_RETURN_IF_ERROR(Required(kOp, name, p));
  if (ctx.device == Device::kCpu) {
    ParallelRows(ctx, a.rows, MinRows(a.dim), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* x = a.x + r * a.dim;
        T* y = a.y + r * a.dim;
        double mean = 0, var = 0;
        for (int64_t j = 0; j < a.dim; ++j) mean += x[j];
        mean /= static_cast<double>(a.dim);
        for (int64_t j = 0; j < a.dim; ++j) var += (x[j] - mean) * (x[j] - mean);
        var /= static_cast<double>(a.dim);
        const double rstd = 1.0 / std::sqrt(var + a.eps);
        a.mean[r] = static_cast<T>(mean);
        a.rstd[r] = static_cast<T>(rstd);
        const T m = static_cast<T>(mean), s = static_cast<T>(rstd);
        for (int64_t j = 0; j < a.dim; ++j) y[j] = (x[j] - m) * s * a.gamma[j] + a.beta[j];
      }
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, LayerNormForwardCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

template <typename T>
Status LayerNormBackward(const Context& ctx, const LayerNormArgs<T>& a) {
  constexpr const char* kOp = "LayerNormBackward";
  IPS_RETURN_IF_ERROR(NonNegative(kOp, a.rows, a.dim));
  if (a.dim == 0) return Status::Ok();
  if (a.rows > 0) {
    for (auto [name, p] : {std::pair<const char*, const void*>{"x", a.x},
                           {"gamma", a.gamma},
                           {"dy", a.dy},
                           {"dx", a.dx},
                           {"mean", a.mean},
                           {"rstd", a.rstd}})
      IPS_RETURN_IF_ERROR(Required(kOp, name, p));
  }
  if (ctx.device == Device::kCpu) {
    // Parameter gradients first, over column blocks (fixed order), then dx per row.
    if (a.dgamma != nullptr || a.dbeta != nullptr) {
      ForColumnBlocks(ctx, a.dim, [&](int64_t c0, int64_t c1) {
        double dg[kColumnBlock] = {}, db[kColumnBlock] = {};
        for (int64_t r = 0; r < a.rows; ++r) {
          const T* x = a.x + r * a.dim;
          const T* dy = a.dy + r * a.dim;
          for (int64_t j = c0; j < c1; ++j) {
            dg[j - c0] += static_cast<double>(dy[j]) * (x[j] - a.mean[r]) * a.rstd[r];
            db[j - c0] += dy[j];
          }
        }
        for (int64_t j = c0; j < c1; ++j) {
          if (a.dgamma != nullptr) a.dgamma[j] = static_cast<T>(dg[j - c0]);
          if (a.dbeta != nullptr) a.dbeta[j] = static_cast<T>(db[j - c0]);
        }
      });
    }
    ParallelRows(ctx, a.rows, MinRows(a.dim), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* x = a.x + r * a.dim;
        const T* dy = a.dy + r * a.dim;
        T* dx = a.dx + r * a.dim;
        const double mean = a.mean[r], rstd = a.rstd[r];
        double sg = 0, sgx = 0;  // sum(g), sum(g * xhat) with g = dy * gamma
        for (int64_t j = 0; j < a.dim; ++j) {
          const double g = static_cast<double>(dy[j]) * a.gamma[j];
          sg += g;
          sgx += g * (x[j] - mean) * rstd;
        }
        const double inv_d = 1.0 / static_cast<double>(a.dim);
        for (int64_t j = 0; j < a.dim; ++j) {
          const double g = static_cast<double>(dy[j]) * a.gamma[j];
          const double xhat = (x[j] - mean) * rstd;
          dx[j] = static_cast<T>(rstd * (g - sg * inv_d - xhat * sgx * inv_d));
        }
      }
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, LayerNormBackwardCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

// ---- BatchNorm1d ------------------------------------------------------------------------------

template <typename T>
Status BatchNormForward(const Context& ctx, const BatchNormArgs<T>& a) {
  constexpr const char* kOp = "BatchNormForward";
  IPS_RETURN_IF_ERROR(CheckBatchStats(kOp, a));
  if (a.n * a.c == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(Required(kOp, "y", a.y));
  if (ctx.device == Device::kCpu) {
    ColumnStats(ctx, a.n, a.c, a.training, a.eps, a.momentum, a.x, a.running_mean, a.running_var,
                a.save_mean, a.save_rstd);
    ParallelRows(ctx, a.n, MinRows(a.c), [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i) {
        const T* x = a.x + i * a.c;
        T* y = a.y + i * a.c;
        for (int64_t j = 0; j < a.c; ++j) {
          const T xhat = (x[j] - a.save_mean[j]) * a.save_rstd[j];
          y[j] = (a.gamma ? a.gamma[j] : T(1)) * xhat + (a.beta ? a.beta[j] : T(0));
        }
      }
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, BatchNormForwardCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

template <typename T>
Status BatchNormBackward(const Context& ctx, const BatchNormArgs<T>& a) {
  constexpr const char* kOp = "BatchNormBackward";
  IPS_RETURN_IF_ERROR(NonNegative(kOp, a.n, a.c));
  if (a.training && a.n == 1)
    return InvalidArgumentError("BatchNormBackward: training needs more than 1 row (got N = 1)");
  if (a.n * a.c == 0) return Status::Ok();
  for (auto [name, p] : {std::pair<const char*, const void*>{"x", a.x},
                         {"dy", a.dy},
                         {"dx", a.dx},
                         {"save_mean", a.save_mean},
                         {"save_rstd", a.save_rstd}})
    IPS_RETURN_IF_ERROR(Required(kOp, name, p));
  if (ctx.device == Device::kCpu) {
    ForColumnBlocks(ctx, a.c, [&](int64_t c0, int64_t c1) {
      double sg[kColumnBlock] = {}, sgx[kColumnBlock] = {};  // sum(dy), sum(dy * xhat)
      for (int64_t i = 0; i < a.n; ++i) {
        const T* x = a.x + i * a.c;
        const T* dy = a.dy + i * a.c;
        for (int64_t j = c0; j < c1; ++j) {
          sg[j - c0] += dy[j];
          sgx[j - c0] += static_cast<double>(dy[j]) * (x[j] - a.save_mean[j]) * a.save_rstd[j];
        }
      }
      for (int64_t j = c0; j < c1; ++j) {
        if (a.dgamma != nullptr) a.dgamma[j] = static_cast<T>(sgx[j - c0]);
        if (a.dbeta != nullptr) a.dbeta[j] = static_cast<T>(sg[j - c0]);
      }
      const double inv_n = 1.0 / static_cast<double>(a.n);
      for (int64_t i = 0; i < a.n; ++i) {
        const T* x = a.x + i * a.c;
        const T* dy = a.dy + i * a.c;
        T* dx = a.dx + i * a.c;
        for (int64_t j = c0; j < c1; ++j) {
          const double scale = (a.gamma ? a.gamma[j] : T(1)) * static_cast<double>(a.save_rstd[j]);
          if (!a.training) {
            dx[j] = static_cast<T>(scale * dy[j]);
          } else {
            const double xhat = (x[j] - a.save_mean[j]) * static_cast<double>(a.save_rstd[j]);
            dx[j] =
                static_cast<T>(scale * (dy[j] - sg[j - c0] * inv_n - xhat * sgx[j - c0] * inv_n));
          }
        }
      }
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, BatchNormBackwardCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

// ---- Dice -------------------------------------------------------------------------------------

template <typename T>
Status DiceForward(const Context& ctx, const DiceArgs<T>& a) {
  constexpr const char* kOp = "DiceForward";
  IPS_RETURN_IF_ERROR(CheckBatchStats(kOp, a));
  if (a.n * a.c == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(Required(kOp, "alpha", a.alpha));
  IPS_RETURN_IF_ERROR(Required(kOp, "y", a.y));
  if (ctx.device == Device::kCpu) {
    ColumnStats(ctx, a.n, a.c, a.training, a.eps, a.momentum, a.x, a.running_mean, a.running_var,
                a.save_mean, a.save_rstd);
    ParallelRows(ctx, a.n, MinRows(a.c), [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i) {
        const T* x = a.x + i * a.c;
        T* y = a.y + i * a.c;
        for (int64_t j = 0; j < a.c; ++j) {
          const T p = StableSigmoid((x[j] - a.save_mean[j]) * a.save_rstd[j]);
          y[j] = p * x[j] + (T(1) - p) * a.alpha[j] * x[j];
        }
      }
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, DiceForwardCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

template <typename T>
Status DiceBackward(const Context& ctx, const DiceArgs<T>& a) {
  constexpr const char* kOp = "DiceBackward";
  IPS_RETURN_IF_ERROR(NonNegative(kOp, a.n, a.c));
  if (a.training && a.n == 1)
    return InvalidArgumentError("DiceBackward: training needs more than 1 row (got N = 1)");
  if (a.n * a.c == 0) return Status::Ok();
  for (auto [name, p] : {std::pair<const char*, const void*>{"x", a.x},
                         {"alpha", a.alpha},
                         {"dy", a.dy},
                         {"dx", a.dx},
                         {"save_mean", a.save_mean},
                         {"save_rstd", a.save_rstd}})
    IPS_RETURN_IF_ERROR(Required(kOp, name, p));
  if (ctx.device == Device::kCpu) {
    // y = x * (alpha + p (1 - alpha)), p = sigmoid(xhat):
    //   direct dy/dx = alpha + p (1 - alpha); g = dL/dxhat = dy * x (1 - alpha) p (1 - p);
    //   training: dx += rstd (g - mean(g) - xhat mean(g xhat)); inference: dx += rstd g.
    ForColumnBlocks(ctx, a.c, [&](int64_t c0, int64_t c1) {
      double sg[kColumnBlock] = {}, sgx[kColumnBlock] = {}, sa[kColumnBlock] = {};
      for (int64_t i = 0; i < a.n; ++i) {
        const T* x = a.x + i * a.c;
        const T* dy = a.dy + i * a.c;
        for (int64_t j = c0; j < c1; ++j) {
          const double xhat = (x[j] - a.save_mean[j]) * static_cast<double>(a.save_rstd[j]);
          const double p = StableSigmoid(static_cast<T>(xhat));
          const double g = static_cast<double>(dy[j]) * x[j] * (1 - a.alpha[j]) * p * (1 - p);
          sg[j - c0] += g;
          sgx[j - c0] += g * xhat;
          sa[j - c0] += static_cast<double>(dy[j]) * (1 - p) * x[j];
        }
      }
      // dalpha before dx: dx may alias dy.
      if (a.dalpha != nullptr)
        for (int64_t j = c0; j < c1; ++j) a.dalpha[j] = static_cast<T>(sa[j - c0]);
      const double inv_n = 1.0 / static_cast<double>(a.n);
      for (int64_t i = 0; i < a.n; ++i) {
        const T* x = a.x + i * a.c;
        const T* dy = a.dy + i * a.c;
        T* dx = a.dx + i * a.c;
        for (int64_t j = c0; j < c1; ++j) {
          const double rstd = a.save_rstd[j];
          const double xhat = (x[j] - a.save_mean[j]) * rstd;
          const double p = StableSigmoid(static_cast<T>(xhat));
          const double g = static_cast<double>(dy[j]) * x[j] * (1 - a.alpha[j]) * p * (1 - p);
          const double direct = dy[j] * (a.alpha[j] + p * (1 - a.alpha[j]));
          const double through_bn =
              a.training ? rstd * (g - sg[j - c0] * inv_n - xhat * sgx[j - c0] * inv_n) : rstd * g;
          dx[j] = static_cast<T>(direct + through_bn);
        }
      }
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, DiceBackwardCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

#define IPS_INSTANTIATE(T)                                                       \
  template Status LayerNormForward<T>(const Context&, const LayerNormArgs<T>&);  \
  template Status LayerNormBackward<T>(const Context&, const LayerNormArgs<T>&); \
  template Status BatchNormForward<T>(const Context&, const BatchNormArgs<T>&);  \
  template Status BatchNormBackward<T>(const Context&, const BatchNormArgs<T>&); \
  template Status DiceForward<T>(const Context&, const DiceArgs<T>&);            \
  template Status DiceBackward<T>(const Context&, const DiceArgs<T>&);
IPS_INSTANTIATE(float)
IPS_INSTANTIATE(double)
#undef IPS_INSTANTIATE

}  // namespace ips::kernels
