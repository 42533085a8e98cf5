// DinServing: DIN's inference forward specialised for serving, where one request scores many
// candidates against ONE user's history. Owns a folded, padded copy of a Din<float>'s weights and
// the single-core CPU (AVX-512, with a portable fallback) code that scores a request with them.
// It computes what Din<float>::Forward(training = false) computes (max abs logit difference
// ~1e-7 on bench/serve_bench; tests/models/din_serving_test.cc holds it to 1e-5) with less work:
//
//   The activation unit's first layer over x = [q, k, q-k, q*k] splits as
//     W1 x = (Wq + Wd) q + (Wk - Wd) k + Wp (q * k)
//   The generic forward (kernels/attention.h) computes the k term for every (candidate, step)
//   pair, B*T rows, because in training every row has its own history. Here the history is
//   shared: the k term is computed once per history step (T rows), the q term once per candidate,
//   and only Wp (q * k), the second layer and the score scale with the pairs.
//   Padded history steps are skipped instead of computed and masked. `summed` (the sum of the
//   history) and its part of the top MLP's first layer are per request, not per candidate.
//   On AVX-512, blocks of candidates run with one candidate per vector lane (weights broadcast),
//   so the pairs' work has no padded lanes at any layer width (models/din_serving.cc).
//
// Covered: Din<float> with PReLU in the top MLP, raw or softmax attention scores (every DIN config
// in launch/configs). Not covered (Create returns UNIMPLEMENTED, callers keep the generic
// Forward): Dice, attention_disabled. CPU only: serving runs on CPU hosts, so there is no CUDA
// twin; the generic Forward is the path on GPU.
//
// The weights are copied at Create(): later changes to the model are not seen (a serving bundle's
// model is immutable). Every buffer is sized at Create() for max_len history steps and a fixed
// block of candidates, so Score allocates nothing and takes any number of candidates.
//
// Thread safety: none (one per serving thread; Score uses internal buffers). Score runs on the
// calling thread only (no pool): serving scales by running one scorer per core.
#ifndef IPS_MODELS_DIN_SERVING_H_
#define IPS_MODELS_DIN_SERVING_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "models/din.h"

namespace ips::models {

class DinServing {
 public:
  // Code paths; kAuto picks AVX-512 when the CPU has it (AVX-512F and DQ, checked at run time),
  // else portable.
  enum class Isa { kAuto, kPortable, kAvx512 };

  // Snapshot of `model`'s weights. UNIMPLEMENTED for a configuration this path does not cover
  // (the message says which); INVALID_ARGUMENT for kAvx512 on a CPU without AVX-512F and DQ.
  static StatusOr<std::unique_ptr<DinServing>> Create(const Din<float>& model,
                                                      Isa isa = Isa::kAuto);
  DinServing(const DinServing&) = delete;
  DinServing& operator=(const DinServing&) = delete;

  // history: [len x E] behaviours (item row then category row, E = 2 * embedding_dim), oldest
  // first, only the valid steps (len in [0, max_len]: the caller keeps the last max_len).
  // candidates: [n x E] targets, n >= 0. Writes logits [n]. Equals Din::Forward(training =
  // false) on a batch of n rows that all have this history (left-padded) and these targets.
  // INVALID_ARGUMENT for len or n out of range or null pointers (with n or len > 0).
  Status Score(const float* history, int64_t len, const float* candidates, int64_t n,
               float* logits);

  int64_t behaviour_dim() const { return E_; }
  int64_t max_len() const { return L_; }
  bool avx512() const { return avx512_; }
  // Whether this CPU runs the AVX-512 code (what kAuto picks).
  static bool CpuHasAvx512();
  // "avx512" or "portable".
  const char* isa_name() const { return avx512_ ? "avx512" : "portable"; }

 private:
  DinServing() = default;
  void ScoreBlock(const float* history, int64_t len, const float* candidates, int64_t n,
                  float* logits);
  // The attention of a block's n candidates (len > 0), pooled into mlp_in_: one candidate at a
  // time with its (candidate, step) pairs along the tiles' rows, or (AVX-512) the whole block
  // with its candidates along the vector lanes.
  void AttendRows(const float* history, int64_t len, const float* candidates, int64_t n);
  void AttendLanes(const float* history, int64_t len, const float* candidates, int64_t n);

  bool avx512_ = false;
  bool softmax_ = false;
  int64_t E_ = 0, L_ = 0, H1_ = 0, H2_ = 0;
  // The activation unit's weights, transposed to [in x out], output widths padded to whole
  // 16-float vectors: W1 = H1 and W2 = H2 rounded up (padding weights and biases are 0). On the
  // AVX-512 path wk_, wq_, wp_, b1_, w2_ and b2_ are scaled by -log2(e): its sigmoid takes the
  // pre-activation in those units (one multiplication per sigmoid saved).
  int64_t W1_ = 0, W2_ = 0;
  std::vector<float> wk_;  // [E x W1]  (Wk - Wd)^T: the history term
  std::vector<float> wq_;  // [E x W1]  (Wq + Wd)^T: the candidate term
  std::vector<float> wp_;  // [E x W1]  Wp^T: the pair term, scaled per candidate
  std::vector<float> b1_;  // [W1]
  std::vector<float> w2_;  // [H1 x W2] W2^T
  std::vector<float> b2_;  // [W2]
  std::vector<float> w3_;  // [W2]
  float b3_ = 0;
  // Top MLP over [pooled, target, summed] (3E): the first layer's [pooled, target] columns act
  // per candidate, its `summed` columns once per request (folded into a per-request bias).
  struct Layer {
    int64_t in = 0, out = 0, outp = 0;
    std::vector<float> w;      // [in x outp] transposed (first layer: the 2E per-candidate inputs)
    std::vector<float> b;      // [outp]
    std::vector<float> alpha;  // [outp] PReLU (hidden layers only)
  };
  std::vector<Layer> hidden_;  // hidden layers of the top MLP (may be empty)
  std::vector<float> top_ws_;  // [E x out0p] first layer's `summed` columns, transposed
  std::vector<float> out_w_;   // [last width] the output layer (one logit)
  float out_b_ = 0;

  // Per-request scratch, sized at Create.
  std::vector<float> hk_;        // [L x W1] history term
  std::vector<float> summed_;    // [E]
  std::vector<float> top_bias_;  // [out0p or 1] first top layer bias + summed term
  std::vector<float> u_;         // [kBlock x W1] candidate term + b1
  std::vector<float> qk_;        // [L x E] q * k per step, for one candidate
  std::vector<float> a1_;        // [kSteps x W1] first hidden layer of a chunk of steps
  std::vector<float> s_;         // [L] attention scores of one candidate
  std::vector<float> mlp_in_;    // [kBlock x 2E] [pooled, target]
  std::vector<float> act_[2];    // [kBlock x max outp] top MLP activations (ping-pong)
  // AttendLanes' scratch, transposed (16 candidates along a vector), in one 64-byte aligned
  // buffer: targets [E x 16], their first-layer term [H1 x 16], q * k of a group of two steps
  // [E x 2 x 16], its first layer [H1 x 2 x 16], scores [L x 16], pooled [E x 16].
  std::vector<float> lane_buf_;
  float *lane_q_ = nullptr, *lane_u_ = nullptr, *lane_qk_ = nullptr, *lane_a1_ = nullptr,
        *lane_s_ = nullptr, *lane_pool_ = nullptr;
};

}  // namespace ips::models

#endif  // IPS_MODELS_DIN_SERVING_H_
