// CUDA twins of models/mind_ops.h (float). The layout ops run one thread per output element over
// grid-stride loops; the label-aware attention runs one warp per batch row (K <= 64 interests of
// D columns: each lane owns columns lane, lane + 32, ..., the dot products are warp sums and the
// K-way softmax is computed redundantly by every lane of the warp, in the CPU's order over k).
#include "models/cuda/model_ops.cuh"
#include "models/mind_ops.h"

namespace ips::models::cuda {
namespace {

constexpr unsigned kWarpsPerBlock = kThreads / 32;
constexpr int kMaxInterests = 64;  // ValidateMindOptions

__device__ __forceinline__ float WarpAllSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float IntPow(float x, int p) {
  float r = 1.0f;
  for (int i = 0; i < p; ++i) r *= x;
  return r;
}
__device__ __forceinline__ float IntPowGrad(float x, int p) {
  return p == 0 ? 0.0f : static_cast<float>(p) * IntPow(x, p - 1);
}

__global__ void GatherItemVectorsKernel(int64_t B, int64_t L, int64_t D, bool use_categories,
                                        const int32_t* __restrict__ lengths,
                                        const int64_t* __restrict__ item_index,
                                        const int64_t* __restrict__ cat_index,
                                        const float* __restrict__ item_rows,
                                        const float* __restrict__ cat_rows, float* __restrict__ e,
                                        float* __restrict__ et) {
  IPS_GRID_STRIDE(i, (B * L + B) * D) {
    const int64_t pos = i / D, c = i % D;
    int64_t src = pos;  // the input position whose rows go here
    if (pos < B * L) {
      const int64_t b = pos / L, step = pos % L, len = ClampedLength(lengths, b, L);
      if (step >= len) {
        e[i] = 0.0f;
        continue;
      }
      src = b * L + (L - len) + step;
    }
    float v = item_rows[item_index[src] * D + c];
    if (use_categories) v += cat_rows[cat_index[src] * D + c];
    if (pos < B * L)
      e[i] = v;
    else
      et[(pos - B * L) * D + c] = v;
  }
}

__global__ void LabelAttentionForwardKernel(int64_t B, int64_t D, int64_t K, int pow,
                                            const float* __restrict__ v,
                                            const float* __restrict__ et, float* __restrict__ dots,
                                            float* __restrict__ attw, float* __restrict__ user,
                                            float* __restrict__ logits) {
  const int64_t b = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (b >= B) return;  // whole warps leave together
  const float* e = et + b * D;
  const float* vb = v + b * K * D;
  float w[kMaxInterests];
  float mx = 0.0f;
  for (int64_t k = 0; k < K; ++k) {
    float part = 0.0f;
    for (int64_t c = lane; c < D; c += 32) part += vb[k * D + c] * e[c];
    const float d = WarpAllSum(part);
    if (lane == 0) dots[b * K + k] = d;
    w[k] = IntPow(d, pow);
    mx = k == 0 ? w[k] : fmaxf(mx, w[k]);
  }
  float sum = 0.0f;
  for (int64_t k = 0; k < K; ++k) sum += (w[k] = expf(w[k] - mx));
  for (int64_t k = 0; k < K; ++k) {
    w[k] /= sum;
    if (lane == 0) attw[b * K + k] = w[k];
  }
  float part = 0.0f;
  for (int64_t c = lane; c < D; c += 32) {
    float u = 0.0f;
    for (int64_t k = 0; k < K; ++k) u += w[k] * vb[k * D + c];
    user[b * D + c] = u;
    part += u * e[c];
  }
  const float logit = WarpAllSum(part);
  if (lane == 0) logits[b] = logit;
}

__global__ void LabelAttentionBackwardKernel(
    int64_t B, int64_t L, int64_t D, int64_t K, int pow, const float* __restrict__ d_logits,
    const float* __restrict__ v, const float* __restrict__ et, const float* __restrict__ dots,
    const float* __restrict__ attw, const float* __restrict__ user, float* __restrict__ dv,
    float* __restrict__ g_item) {
  const int64_t b = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (b >= B) return;
  const float g = d_logits[b];
  const float* e = et + b * D;
  const float* vb = v + b * K * D;
  const float* w = attw + b * K;
  const float* db = dots + b * K;
  // dw_k = <v_k, duser> = g dots_k with duser = g e_t; ws = sum_k w_k dw_k.
  float ddot[kMaxInterests], gw[kMaxInterests];
  float ws = 0.0f;
  for (int64_t k = 0; k < K; ++k) {
    ddot[k] = g * db[k];
    ws += w[k] * ddot[k];
  }
  for (int64_t k = 0; k < K; ++k) {
    ddot[k] = IntPowGrad(db[k], pow) * w[k] * (ddot[k] - ws);
    gw[k] = g * w[k];
  }
  float* d_et = g_item + (B * L + b) * D;
  for (int64_t c = lane; c < D; c += 32) {
    const float ec = e[c];
    float acc = g * user[b * D + c];
    for (int64_t k = 0; k < K; ++k) {
      dv[(b * K + k) * D + c] = gw[k] * ec + ddot[k] * ec;
      acc += ddot[k] * vb[k * D + c];
    }
    d_et[c] = acc;
  }
}

__global__ void HistoryRowGradsKernel(int64_t B, int64_t L, int64_t D,
                                      const int32_t* __restrict__ lengths,
                                      const float* __restrict__ de, float* __restrict__ g_item) {
  IPS_GRID_STRIDE(i, B * L * D) {
    const int64_t pos = i / D, c = i % D;
    const int64_t b = pos / L, t = pos % L, first = L - ClampedLength(lengths, b, L);
    g_item[i] = t < first ? 0.0f : de[(b * L + (t - first)) * D + c];
  }
}

unsigned WarpRowsGrid(int64_t rows) {
  return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

Status CheckInterests(const char* op, int64_t k) {
  if (k < 1 || k > kMaxInterests)
    return InvalidArgumentError(std::string(op) + ": num_interests must be in [1, 64]");
  return Status::Ok();
}

}  // namespace

Status MindGatherItemVectors(const kernels::Context& ctx, const MindShapes& s, bool use_categories,
                             const int64_t* item_index, const int64_t* cat_index,
                             const float* item_rows, const float* cat_rows, float* e, float* et) {
  const int64_t n = (s.batch * s.max_len + s.batch) * s.dim;
  if (n == 0) return Status::Ok();
  return Launch("mind_gather_item_vectors", GatherItemVectorsKernel, dim3(GridFor(n, kThreads)),
                dim3(kThreads), 0, StreamOf(ctx), s.batch, s.max_len, s.dim, use_categories,
                s.lengths, item_index, cat_index, item_rows, cat_rows, e, et);
}

Status MindLabelAttentionForward(const kernels::Context& ctx, const MindShapes& s, int pow,
                                 const float* v, const float* et, float* dots, float* attw,
                                 float* user, float* logits) {
  IPS_RETURN_IF_ERROR(CheckInterests("MindLabelAttentionForward", s.num_interests));
  if (s.batch == 0) return Status::Ok();
  return Launch("mind_label_attention_forward", LabelAttentionForwardKernel,
                dim3(WarpRowsGrid(s.batch)), dim3(kThreads), 0, StreamOf(ctx), s.batch, s.dim,
                s.num_interests, pow, v, et, dots, attw, user, logits);
}

Status MindLabelAttentionBackward(const kernels::Context& ctx, const MindShapes& s, int pow,
                                  const float* d_logits, const float* v, const float* et,
                                  const float* dots, const float* attw, const float* user,
                                  float* dv, float* g_item) {
  IPS_RETURN_IF_ERROR(CheckInterests("MindLabelAttentionBackward", s.num_interests));
  if (s.batch == 0) return Status::Ok();
  return Launch("mind_label_attention_backward", LabelAttentionBackwardKernel,
                dim3(WarpRowsGrid(s.batch)), dim3(kThreads), 0, StreamOf(ctx), s.batch, s.max_len,
                s.dim, s.num_interests, pow, d_logits, v, et, dots, attw, user, dv, g_item);
}

Status MindHistoryRowGrads(const kernels::Context& ctx, const MindShapes& s, const float* de,
                           float* g_item) {
  const int64_t n = s.batch * s.max_len * s.dim;
  if (n == 0) return Status::Ok();
  return Launch("mind_history_row_grads", HistoryRowGradsKernel, dim3(GridFor(n, kThreads)),
                dim3(kThreads), 0, StreamOf(ctx), s.batch, s.max_len, s.dim, s.lengths, de, g_item);
}

}  // namespace ips::models::cuda
