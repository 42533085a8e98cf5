// Capsule ops for MIND: the squash non-linearity and the behaviour-to-interest (B2I) dynamic
// routing that turns a user's behaviour embeddings into K interest capsules. CPU (float, double)
// and CUDA (float). Conventions: kernels/activation.h.
#ifndef IPS_KERNELS_CAPSULE_H_
#define IPS_KERNELS_CAPSULE_H_

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

namespace ips::kernels {

// v = |s|^2 / (1 + |s|^2) * s / |s| per row of [rows x dim], computed as s * |s| / (1 + |s|^2)
// so s = 0 gives 0 with no division by zero (and a zero gradient there, the true derivative).
// y may alias x; dx may alias dy. The backward reads x.
template <typename T>
struct SquashArgs {
  int64_t rows = 0, dim = 0;
  const T* x = nullptr;
  T* y = nullptr;
  const T* dy = nullptr;
  T* dx = nullptr;
};
template <typename T>
Status SquashForward(const Context& ctx, const SquashArgs<T>& args);
template <typename T>
Status SquashBackward(const Context& ctx, const SquashArgs<T>& args);

// MIND's B2I dynamic routing (Li et al. 2019, Algorithm 1) for a batch:
//   ehat_bi = e_bi S                          (shared bilinear map, D -> D2)
//   b_bji   = init logits (fixed, not learned: see MindRoutingInitLogits)
//   repeat r times:
//     w_bji = softmax over the K interests j of b_bi.   (behaviour i spreads itself over the
//             interests, as in line 4 of Algorithm 1 and Sabour et al.; padded i get w = 0)
//     z_bj  = sum_{i < len_b} w_bji ehat_bi
//     u_bj  = squash(z_bj)
//     b_bji += u_bj . ehat_bi                 (skipped after the last iteration)
//   out = u  [B x K x D2]
// Rows with length 0 give all-zero capsules.
//
// Gradient path (stop-gradient routing, as common capsule implementations do): the routing
// coefficients w of the final iteration are treated as constants, so the backward differentiates
//   out_bj = squash(sum_i w_bji e_bi S)
// with respect to e and S only; the dependence of w on e and S through earlier iterations is not
// differentiated. Equivalently, the backward is the exact gradient of a 1-iteration routing whose
// init logits are the final iteration's logits (saved as `final_logits`); the tests check it that
// way with finite differences.
template <typename T>
struct MindRoutingArgs {
  int64_t batch = 0;          // B
  int64_t max_len = 0;        // T
  int64_t in_dim = 0;         // D
  int64_t out_dim = 0;        // D2
  int64_t num_interests = 0;  // K
  int iterations = 3;         // r >= 1
  // [B x T x D]. Steps t >= len must hold finite values (e.g. the zero padding row): the GEMMs
  // read them and multiply them by zero; the routing itself ignores them.
  const T* e = nullptr;
  const int32_t* lengths = nullptr;  // [B], clamped to [0, T]; nullptr = all T valid
  const T* s = nullptr;              // [D x D2]
  const T* init_logits = nullptr;    // [K x T] shared by all rows, or [B x K x T]:
  bool init_logits_per_row = false;  //   when this is true
  T* out = nullptr;                  // [B x K x D2]
  // Saved for the backward (written by the forward, read by the backward; caller-owned):
  T* ehat = nullptr;          // [B x T x D2]
  T* weights = nullptr;       // [B x K x T], final iteration's w (0 at padded steps)
  T* final_logits = nullptr;  // [B x K x T], logits the final iteration's w came from
  T* z = nullptr;             // [B x K x D2], pre-squash capsules of the final iteration
  // Backward:
  const T* dout = nullptr;  // [B x K x D2]
  T* de = nullptr;          // [B x T x D], 0 at padded steps (or nullptr to skip)
  T* ds = nullptr;          // [D x D2]
  T* workspace = nullptr;   // backward scratch, MindRoutingBackwardWorkspaceSize elements
};
// Elements of T the backward needs as workspace.
inline int64_t MindRoutingBackwardWorkspaceSize(int64_t batch, int64_t max_len, int64_t out_dim) {
  return batch * max_len * out_dim;
}
template <typename T>
Status MindRoutingForward(const Context& ctx, const MindRoutingArgs<T>& args);
template <typename T>
Status MindRoutingBackward(const Context& ctx, const MindRoutingArgs<T>& args);

// Fills logits [K x T] (host memory) with N(0, stddev^2) values that depend only on `seed`,
// for MindRoutingArgs::init_logits (copy to the device for CUDA).
template <typename T>
void MindRoutingInitLogits(uint64_t seed, int64_t num_interests, int64_t max_len, double stddev,
                           T* logits);

}  // namespace ips::kernels

#endif  // IPS_KERNELS_CAPSULE_H_
