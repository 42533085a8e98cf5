// Attention kernels: the DIN activation unit (target attention of DIN, and of DIEN over GRU
// states) and multi-head scaled dot-product attention (SASRec/BST), forward and backward, on the
// CPU (float and double, so backward passes can be gradient-checked in float64) and on CUDA
// (float). The unfused scalar references the fast paths are tested against live here too.
//
// Conventions shared by every op in this file:
// - Row-major, contiguous tensors; on CUDA every pointer (lengths included) is device memory.
// - Sequences are padded; `lengths[b]` valid steps per row, 0 <= lengths[b] <= max_len.
//   Padding::kLeft (DIN, SASRec: history ends at step T-1) means the valid steps are
//   t >= T - len; Padding::kRight (DIEN after its roll) means t < len. Inputs at padded steps are
//   never read (they may hold anything, NaN included) and gradients there are written as 0.
// - Outputs and gradients are overwritten, never accumulated into, and may be uninitialised
//   (NaN-poisoned) on entry.
// - The caller owns every buffer. Forward passes keep what the backward pass needs in a `saved`
//   buffer sized by the matching *SavedSize() function (elements of T, not bytes); the contents
//   of `saved` must be left untouched between forward and backward.
// - Errors: INVALID_ARGUMENT for bad shapes, null required pointers or (CPU only: CUDA cannot
//   inspect device memory cheaply, so it clamps) lengths outside [0, max_len]; UNIMPLEMENTED for
//   CUDA in a build without it or for double on CUDA.
// - Thread safety: the functions are reentrant; concurrent calls must not share output or
//   workspace buffers. CPU paths parallelise over ctx.pool and run their
//   GEMMs per pool task with cpu::SmallGemm (kernels/cpu/small_gemm.h).
#ifndef IPS_KERNELS_ATTENTION_H_
#define IPS_KERNELS_ATTENTION_H_

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

namespace ips::kernels {

enum class Padding { kRight, kLeft };

// Optional pointer parameters use this so that passing nullptr does not block deducing T.
template <typename T>
struct AttentionNoDeduce {
  using type = T;
};
template <typename T>
using NoDeduce = typename AttentionNoDeduce<T>::type;

// ---------------------------------------------------------------------------------------------
// DIN activation unit (the peer's ActivationUnit), fused with masking, optional masked softmax
// and optional weighted-sum pooling:
//   x_bt   = [q_b, k_bt, q_b - k_bt, q_b * k_bt]                              (4E)
//   a1     = sigmoid(W1 x_bt + b1)                                            (H1, default 80)
//   a2     = sigmoid(W2 a1 + b2)                                              (H2, default 40)
//   s_bt   = w3 . a2 + b3
//   w_bt   = s_bt * mask_bt, or softmax over the valid t of s_b (softmax = true)
//   pooled = sum_t w_bt k_bt                                                  (optional)
// Rows with length 0 get all-zero weights and a zero pooled vector (also with softmax).
//
// The 4E concatenation is never built: W1 x = (Wq + Wd) q + (Wk - Wd) k + Wp (q * k), where
// W1 = [Wq | Wk | Wd | Wp] by column blocks, so the q term is one [B x E] GEMM per batch and the
// per-step work is a [B*T x 2E] x [2E x H1] GEMM over X = [k, q * k].
//
// DIEN's target attention over GRU states is this op with softmax = true, the states as `keys`,
// Padding::kRight and dim = hidden (see DienAttentionArgs below).
template <typename T>
struct DinAttentionArgs {
  int64_t batch = 0;    // B
  int64_t max_len = 0;  // T
  int64_t dim = 0;      // E: width of the query and of each key
  int64_t hidden1 = 80;
  int64_t hidden2 = 40;
  Padding padding = Padding::kLeft;
  bool softmax = false;  // false: DIN's raw masked scores; true: masked softmax (DIEN)

  const T* query = nullptr;          // [B x E]
  const T* keys = nullptr;           // [B x T x E]
  const int32_t* lengths = nullptr;  // [B]
  // Weights in torch nn.Linear layout ([out x in]), so a peer's state_dict maps directly.
  const T* w1 = nullptr;  // [H1 x 4E], input order [q, k, q-k, q*k]
  const T* b1 = nullptr;  // [H1]
  const T* w2 = nullptr;  // [H2 x H1]
  const T* b2 = nullptr;  // [H2]
  const T* w3 = nullptr;  // [H2] (the 1 x H2 output layer)
  const T* b3 = nullptr;  // [1]
};

// Gradients of a scalar loss; all written (overwritten). d_query/d_keys may be nullptr when not
// needed; weight gradients are required.
template <typename T>
struct DinAttentionGrads {
  T* d_query = nullptr;  // [B x E]
  T* d_keys = nullptr;   // [B x T x E]; 0 at padded steps
  T* d_w1 = nullptr;     // [H1 x 4E]
  T* d_b1 = nullptr;     // [H1]
  T* d_w2 = nullptr;     // [H2 x H1]
  T* d_b2 = nullptr;     // [H2]
  T* d_w3 = nullptr;     // [H2]
  T* d_b3 = nullptr;     // [1]
};

// Elements of T the forward keeps for backward, laid out as
//   X = [k, q*k] per step [B*T x 2E] (0 at padded steps) | A1 [B*T x H1] | A2 [B*T x H2] |
//   w [B*T] (the output weights) | scratch for the forward's per-batch q term [B x H1] and the
//   folded first-layer weights [H1 x 3E].
// That is the post-activation of both hidden layers plus the GEMM input of the first: backward
// needs nothing recomputed except the folded weights. At B=512, T=50, E=36, 80/40 that is
// 20.0 MB (float), and the backward workspace 20.1 MB. Backward also reads args' query,
// keys and weights, which must be unchanged since the forward.
int64_t DinAttentionSavedSize(int64_t batch, int64_t max_len, int64_t dim, int64_t hidden1,
                              int64_t hidden2);
template <typename T>
int64_t DinAttentionSavedSize(const DinAttentionArgs<T>& a) {
  return DinAttentionSavedSize(a.batch, a.max_len, a.dim, a.hidden1, a.hidden2);
}
// Elements of T of backward scratch.
int64_t DinAttentionBackwardWorkspaceSize(int64_t batch, int64_t max_len, int64_t dim,
                                          int64_t hidden1, int64_t hidden2);
template <typename T>
int64_t DinAttentionBackwardWorkspaceSize(const DinAttentionArgs<T>& a) {
  return DinAttentionBackwardWorkspaceSize(a.batch, a.max_len, a.dim, a.hidden1, a.hidden2);
}

// weights: [B x T] output (0 at padded steps). pooled: [B x E] or nullptr to skip pooling.
// saved: [DinAttentionSavedSize] elements.
template <typename T>
Status DinAttentionForward(const Context& ctx, const DinAttentionArgs<T>& args, T* weights,
                           NoDeduce<T>* pooled, T* saved);

// d_weights: dL/dweights [B x T] or nullptr (zero); d_pooled: dL/dpooled [B x E] or nullptr.
// saved: as left by DinAttentionForward with the same args. workspace:
// [DinAttentionBackwardWorkspaceSize] elements.
template <typename T>
Status DinAttentionBackward(const Context& ctx, const DinAttentionArgs<T>& args, const T* saved,
                            const NoDeduce<T>* d_weights, const NoDeduce<T>* d_pooled,
                            const DinAttentionGrads<T>& grads, T* workspace);

// DIEN: attention of the target over GRU states [B x T x H] (right-padded, softmax over valid
// steps). Exactly DinAttentionArgs with softmax = true and Padding::kRight; this helper only
// fills those fields so call sites say what they mean.
template <typename T>
DinAttentionArgs<T> DienAttentionArgs(int64_t batch, int64_t max_len, int64_t hidden,
                                      const T* target, const T* states, const int32_t* lengths) {
  DinAttentionArgs<T> a;
  a.batch = batch;
  a.max_len = max_len;
  a.dim = hidden;
  a.padding = Padding::kRight;
  a.softmax = true;
  a.query = target;
  a.keys = states;
  a.lengths = lengths;
  return a;
}

// Unfused scalar references (CPU, any T): build the 4E concatenation per step and run the MLP
// one step at a time. Slow; for tests and benchmark verification only. No saved buffer.
template <typename T>
Status DinAttentionForwardReference(const DinAttentionArgs<T>& args, T* weights,
                                    NoDeduce<T>* pooled);
template <typename T>
Status DinAttentionBackwardReference(const DinAttentionArgs<T>& args, const NoDeduce<T>* d_weights,
                                     const NoDeduce<T>* d_pooled,
                                     const DinAttentionGrads<T>& grads);

// ---------------------------------------------------------------------------------------------
// Multi-head scaled dot-product attention (SASRec, BST), no projections:
//   S = scale * Q_h K_h^T (+ causal mask j <= i, key-padding mask), P = softmax(S) per row,
//   O_h = dropout(P) V_h.
// Layout: Q, K, V and O are [B x T x H*dh]; head h owns columns [h*dh, (h+1)*dh) of each row.
// Key padding: keys at padded steps (per `padding`/`lengths`) are excluded. A query row with no
// allowed key (e.g. a left-padded row's padding under the causal mask) gets P = 0 and O = 0 and
// passes no gradient. The peer fills masked scores with -1e9 instead, so on such rows torch
// averages V uniformly; every other row is identical (exp(-1e9 - max) is 0 in float), and the
// peer zeroes those rows afterwards anyway.
// Dropout on P (rate p, kept values scaled by 1/(1-p)) is a pure function of (seed, index):
// element (b, h, i, j) with index = ((b*H + h)*T + i)*T + j is dropped iff
// Mix64(seed ^ index) < p * 2^64, so CPU and CUDA drop the same elements and backward recomputes
// the mask instead of storing it.
template <typename T>
struct MhaArgs {
  int64_t batch = 0;     // B
  int64_t seq_len = 0;   // T (queries and keys)
  int64_t heads = 1;     // H
  int64_t head_dim = 0;  // dh
  bool causal = false;
  Padding padding = Padding::kLeft;
  const int32_t* lengths = nullptr;  // [B]; nullptr: every step valid
  double scale = 0;                  // 0: 1/sqrt(head_dim). SASRec uses 1/sqrt(H*dh).
  double dropout = 0;                // in [0, 1)
  uint64_t seed = 0;
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
};

// Elements of T of the saved softmax probabilities (before dropout), [B x H x T x T].
int64_t MhaSavedSize(int64_t batch, int64_t seq_len, int64_t heads);
template <typename T>
int64_t MhaSavedSize(const MhaArgs<T>& a) {
  return MhaSavedSize(a.batch, a.seq_len, a.heads);
}

// Whether MhaForward/MhaBackward can run sequences of seq_len steps with heads of head_dim on the
// current CUDA device: OK, or UNIMPLEMENTED naming the sizes and the device's limit (the
// backward keeps a head's T x T scores in shared memory), or without CUDA in the build. A model
// on CUDA checks it when it is created, so that a too-long max_len fails before training.
Status MhaCudaSupports(int64_t seq_len, int64_t head_dim);

// out: [B x T x H*dh]; saved: [MhaSavedSize] elements (also the attention map, for inspection).
// CUDA supports seq_len <= 1024 and needs the larger of (2*T*dh + 8*(T + dh)) floats (forward)
// and (2*T*dh + 2*T*T) floats (backward) of shared memory per block.
template <typename T>
Status MhaForward(const Context& ctx, const MhaArgs<T>& args, T* out, T* saved);

// d_out: dL/dout [B x T x H*dh]; writes dq, dk, dv (all required).
template <typename T>
Status MhaBackward(const Context& ctx, const MhaArgs<T>& args, const T* saved, const T* d_out,
                   T* dq, T* dk, T* dv);

// Scalar references (CPU): a direct translation of the formulas above, no saved buffer.
template <typename T>
Status MhaForwardReference(const MhaArgs<T>& args, T* out);
template <typename T>
Status MhaBackwardReference(const MhaArgs<T>& args, const T* d_out, T* dq, T* dk, T* dv);

}  // namespace ips::kernels

#endif  // IPS_KERNELS_ATTENTION_H_
