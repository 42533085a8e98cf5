// Mind: the Multi-Interest Network with Dynamic routing (Li et al. 2019, "Multi-Interest Network
// with Dynamic Routing for Recommendation at Tmall"), as an explicit forward and backward pass
// over kernels/, trained on the same CTR samples as DIN and serving retrieval with K user vectors.
//
//   x_i    = item_emb_i + cat_emb_{cat(i)}  (the item vector; item_emb_i alone when
//            use_categories = false)                                         (dim D)
//   e_bi   = x of behaviour i (oldest first)
//   u_b    = B2I dynamic routing of e_b into K interest capsules            [K x D2]
//            (kernels/capsule.h MindRoutingForward: shared bilinear map S [D x D2], fixed random
//            routing logits, `routing_iterations` rounds, squash)
//   v_bk   = W u_bk + c  (one layer shared by the K interests, to the item space; ReLU(.) with
//            user_relu)                                                     [K x D]
//   w_bk   = softmax_k(pow(<v_bk, x_target>, p))   (label-aware attention, p integer >= 0)
//   user_b = sum_k w_bk v_bk,   logit_b = <user_b, x_target>,   loss = mean BCE-with-logits
//
// Choices and deviations from the paper, each with the reason:
//  * Item space = item_emb + cat_emb (use_categories, the default), the paper's item embedding
//    built from the item's id and category features (it pools them; the sum keeps the width D
//    so user vectors stay comparable with one D-wide vector per item). Why it matters, measured
//    on tests/models/planted_learning_test.cc (800 users, 4000 items, 40 categories, the planted
//    signal is "target category among the user's interest categories", dim 8, 2 epochs): with
//    item_emb alone MIND reached sampled AUC 0.63 (item rows must learn the category clusters
//    from ~15 co-occurrences per item, while every other model gets a category row shared by
//    100 items); with the sum 0.82 under the old defaults (p = 2, ReLU). Retrieval must score an
//    item as item row + its category row (worker/retrieval.h does, given the category table and
//    the dataset's item -> category map). Both rows of a position get the same gradient.
//    use_categories = false keeps the item-only space (category rows unread, zero gradient).
//  * label_attention_pow defaults to 3, not the paper's 2: pow(x, 2) maps a strongly negative
//    <v_k, x_target> to a large positive attention score, so an interest pointing AWAY from the
//    target gets the weight and pulls the logit down. An odd power keeps the sign and still
//    sharpens toward the best-matching interest (closer to the max-over-interests used at
//    retrieval). Measured (planted test, linear user layer): p = 2 0.858, p = 1 0.907, p = 3
//    0.911 (0.913-0.915 with other model seeds).
//  * The user layer is linear by default (user_relu = false): with one layer, ReLU confines every
//    user vector to the non-negative orthant of the item space (and ~45% of its units were dead
//    during training), while item vectors are signed. Measured (planted test, p = 2): ReLU 0.816,
//    linear 0.858; with p = 3: ReLU 0.877, linear 0.911. user_relu = true is the paper's layer.
//  * Scale: the capsules are NOT in squash's small-norm regime (|z| ~ 3..6 per element with rows
//    of rms ~0.2, since z sums ~30 weighted behaviours), so squash does not shrink gradients
//    there; the routing's sharpness does depend on |e S| (the agreement <u_j, e_i S> is
//    unnormalised): bilinear_init_stddev = 3 gave +0.015 AUC on the planted test; the default
//    stays the reference implementations' 1.
//  * Training objective: the paper trains with a sampled softmax over all items; we train on the
//    same (history, target, label) samples as DIN with BCE on logit_b, so the trainer, the data
//    protocol and the comparison are shared. Positives pull <user, e_target> up, the sampled
//    negatives push it down, which is the binary-logistic form of the sampled-softmax objective.
//  * pow(x, p) keeps the sign as the integer power does (p = 2 maps -3 and 3 to 9, as the
//    paper's formula literally says; p = 1 and 3 keep the sign). p = 0 gives uniform attention
//    (the mean of the interests). The paper notes p -> infinity approaches hard attention; large
//    p overflow easily, so p is limited to [0, 8].
//  * Routing logits are initialised once from N(0, routing_init_stddev^2) with a fixed seed and
//    shared by every user (the paper: "initialize randomly" because S is shared, so zero logits
//    would make the K capsules identical); they are not trained, and a checkpoint carries them as
//    state ("routing.init_logits"). routing_init_stddev = 0 gives zero logits (allowed only for
//    K = 1, where they are irrelevant).
//  * Gradients through the routing are the stop-gradient ones of kernels/capsule.h (the final
//    iteration's routing coefficients are constants), as common MIND implementations do. The
//    backward is therefore the exact gradient for routing_iterations = 1 and, for more
//    iterations, the exact gradient of a 1-iteration routing started from the final logits; the
//    tests check it both ways.
//  * No user-profile features (the data has none) and one ReLU layer (the paper's H layers).
//  * The paper's dynamic number of interests K'_u = max(1, min(K, log2 |I_u|)) is not used: every
//    user gets K interests (rows with an empty history give K copies of c, or ReLU(c)).
//
// Ownership, inputs and outputs as models/din.h: dense weights only (DenseParams), pulled row
// tables in, one gradient row per pulled row out. Every buffer is allocated at Create() for
// options.max_batch rows; Forward/Backward allocate nothing. Templated on T (float for training,
// double for gradient checks).
//
// Devices: options.device = kCuda (float only) keeps every buffer, a copy of the dense weights
// and a copy of the routing init logits on the GPU and runs the same passes through the kernels'
// CUDA twins (kernels/capsule.h routing, Linear, BCE, ScatterAdd, and models/mind_ops.h for the
// item-vector layout, the label-aware attention and the row-gradient layout). The interface stays
// host memory: inputs are staged to the device by models/device_staging.h; the loss, logits(),
// user_vectors() (read by the retrieval evaluation after an inference Forward), the row gradients
// and the dense gradients in params() come back to the host; the routing init logits' host copy
// (state(), what a checkpoint restores) stays the reference and is uploaded before every
// Forward (it is not trained, so nothing comes back). Forward/Backward then need a Context whose
// device is the model's. Pulled tables larger than the staging buffers (the retrieval
// evaluation passes the whole item table) are compacted on the host to the rows the batch
// references before staging, with the same results. capsules(), interest_weights() and
// final_routing_logits() stay in the model's device memory.
//
// Thread safety: none (one model per trainer thread); kernels use ctx.pool internally.
#ifndef IPS_MODELS_MIND_H_
#define IPS_MODELS_MIND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "kernels/capsule.h"
#include "kernels/context.h"
#include "kernels/memory.h"
#include "models/device_staging.h"
#include "models/layers.h"
#include "models/model.h"

namespace ips::models {

struct MindOptions {
  int64_t embedding_dim = 18;         // width of the item table = the item space = vector_dim()
  int64_t max_len = 50;               // history length T (histories are left-padded to it)
  int64_t max_batch = 512;            // buffers are sized for this many rows
  int64_t num_interests = 4;          // K
  int routing_iterations = 3;         // r >= 1
  int64_t capsule_dim = 0;            // D2 of the interest capsules; 0 = embedding_dim
  int label_attention_pow = 3;        // p in [0, 8] (3, not the paper's 2: see the header)
  double routing_init_stddev = 1.0;   // routing logits ~ N(0, stddev^2); 0 only with K = 1
  double bilinear_init_stddev = 1.0;  // S ~ N(0, stddev^2), as the reference implementations
  bool user_relu = false;  // ReLU on the user-vector layer (the paper's); false = linear layer
  // Item vector x_i = item_emb_i + cat_emb_{cat(i)} (true) or item_emb_i alone (false); see the
  // header comment for why the category is in by default.
  bool use_categories = true;
  uint64_t seed = 0;  // dense initialisation and routing logits (Rng)
  // Where the passes run (see the header comment). The initial weights do not depend on it.
  kernels::Device device = kernels::Device::kCpu;
  // Test switch for device = kCpu: take the CUDA path's copies (inputs staged into the model's
  // own buffers, weights, routing logits, gradients, loss, logits and user vectors through
  // separate copies) with the CPU kernels, so that CPU tests cover that logic; results are
  // bitwise the plain CPU path's.
  bool stage_on_cpu = false;
};

// INVALID_ARGUMENT naming the first bad field ("MindOptions.<field>: ..."). `names`, when given,
// names the options in the message instead (the one at fault and any it mentions):
// ModelSpecFromConfig passes the config field paths that set them ("model.embedding_dim"), so
// that this stays the one copy of each check. Without it a mentioned option is its bare field.
Status ValidateMindOptions(const MindOptions& o,
                           const std::function<std::string(const std::string&)>& names = {});

template <typename T>
class Mind final : public CtrModel<T> {
 public:
  // Validates the options, allocates every buffer for max_batch and initialises, from
  // Rng(seed): S ("routing.bilinear" [D x D2]) ~ N(0, bilinear_init_stddev^2), then the user
  // layer ("user.weight" [D x D2] torch layout, "user.bias" [D]) with torch's nn.Linear default;
  // the routing logits [K x T] from MindRoutingInitLogits(seed ^ constant). INVALID_ARGUMENT for
  // bad options; for kCuda, UNIMPLEMENTED with T = double or without CUDA in the build, INTERNAL
  // when device memory cannot be had.
  static StatusOr<std::unique_ptr<Mind>> Create(const MindOptions& options);
  Mind(const Mind&) = delete;
  Mind& operator=(const Mind&) = delete;

  // As CtrModel::Forward. With use_categories, cat_index and cat_rows are required; without,
  // they are not read and may be null (if cat_index is given its entries must lie in
  // [0, num_cat_rows)). labels == nullptr runs
  // inference: no loss, but targets are still read (they must index item rows) and the logits
  // computed; user_vectors() never depends on the targets. Errors: INVALID_ARGUMENT for a batch
  // outside [1, max_batch], null lengths/item pointers, indices out of range or lengths outside
  // [0, max_len] (naming the position), or a Context of another device than the model's;
  // otherwise the kernels'.
  Status Forward(const kernels::Context& ctx, const CtrInputs<T>& in, bool training,
                 T* loss) override;
  // As CtrModel::Backward; d_cat_rows [num_cat_rows x dim] gets the category rows' gradients
  // (each position's category row gets its item row's gradient), or is zero-filled without
  // use_categories (it may be null when num_cat_rows == 0). FAILED_PRECONDITION without a
  // Forward(training = true) with labels on a batch of the same size; INVALID_ARGUMENT for null
  // outputs.
  Status Backward(const kernels::Context& ctx, const CtrInputs<T>& in, T* d_item_rows,
                  T* d_cat_rows) override;

  const MindOptions& options() const { return o_; }
  int64_t capsule_dim() const { return d2_; }
  const char* name() const override { return "mind"; }
  int64_t embedding_dim() const override { return o_.embedding_dim; }
  int64_t max_len() const override { return o_.max_len; }
  int64_t max_batch() const override { return o_.max_batch; }
  kernels::Device device() const override { return o_.device; }
  DenseParams<T>& params() override { return params_; }
  const DenseParams<T>& params() const override { return params_; }
  // The fixed routing logits [K x T] (not trained; a checkpoint restores them).
  std::vector<StateTensor<T>> state() override;

  // Outputs of the last Forward (valid until the next one), in host memory: logits [B]; user
  // vectors v [B x K x D] (computed from the history alone). In the model's device memory:
  // interest capsules u [B x K x D2]; label-aware attention weights [B x K]; the routing logits
  // the final routing iteration used [B x K x T] (position i = the i-th valid behaviour, oldest
  // first).
  const T* logits() const override { return io_.HostOutput(logits_.data()); }
  int64_t num_user_vectors() const override { return o_.num_interests; }
  int64_t vector_dim() const override { return o_.embedding_dim; }
  const T* user_vectors() const override { return io_.staged() ? host_v_.data() : v_.data(); }
  const T* capsules() const { return caps_.data(); }
  const T* interest_weights() const { return attw_.data(); }
  const T* final_routing_logits() const { return final_logits_.data(); }

  // Test hook: when `logits` is non-null, later Forwards start the routing from these per-row
  // logits [max_batch x K x T] (row b's block at b * K * T, in the model's device memory)
  // instead of the fixed shared ones; nullptr restores the normal behaviour. Not owned; must stay
  // valid while set. Used to check
  // the stop-gradient backward of a multi-iteration routing by finite differences.
  void SetRoutingLogitsForTesting(const T* logits) { override_logits_ = logits; }

 private:
  explicit Mind(const MindOptions& o);
  Status CheckInputs(const CtrInputs<T>& in) const;
  // The routing kernel's arguments for in.batch rows over the forward buffers.
  kernels::MindRoutingArgs<T> RoutingArgs(const CtrInputs<T>& in);

  MindOptions o_;
  int64_t d2_ = 0;
  DenseParams<T> params_;
  int64_t s_ = 0, w_ = 0, c_ = 0;  // offsets: S [D x D2], W [D x D2], c [D]
  std::vector<T> init_logits_;     // [K x T], the reference (state())
  const T* override_logits_ = nullptr;

  // Forward state, sized for max_batch, on the model's device.
  kernels::Buffer<T> e_;             // [B x T x D] behaviours, left-aligned (valid first), 0 after
  kernels::Buffer<T> et_;            // [B x D] target item vectors
  kernels::Buffer<T> ehat_;          // [B x T x D2]
  kernels::Buffer<T> rweights_;      // [B x K x T]
  kernels::Buffer<T> final_logits_;  // [B x K x T]
  kernels::Buffer<T> z_;             // [B x K x D2]
  kernels::Buffer<T> caps_;          // [B x K x D2]
  kernels::Buffer<T> v_;             // [B x K x D]
  kernels::Buffer<T> dots_;          // [B x K] <v_k, e_target>
  kernels::Buffer<T> attw_;          // [B x K]
  kernels::Buffer<T> user_;          // [B x D]
  kernels::Buffer<T> logits_;        // [B]
  kernels::Buffer<T> loss_scratch_;  // [1]
  // Backward scratch.
  kernels::Buffer<T> d_logits_;  // [B]
  kernels::Buffer<T> dv_;        // [B x K x D], also the pre-activation gradient
  kernels::Buffer<T> dcaps_;     // [B x K x D2]
  kernels::Buffer<T> de_;        // [B x T x D]
  kernels::Buffer<T> routing_ws_;
  kernels::Buffer<T> g_item_;  // [(B*T + B) x D] per-position item-row gradients
  // The copies in and out on CUDA (or with stage_on_cpu): inputs, weights, logits and row and
  // dense gradients (io_); the routing init logits' device copy [K x T] and the user vectors'
  // host copy [B x K x D] (page-locked on CUDA). Empty when not staged.
  CtrDeviceIo<T> io_;
  kernels::Buffer<T> device_init_logits_;
  kernels::HostBuffer<T> host_v_;
  // Staged batches whose pulled tables are larger than the staging buffers (max_batch * (T + 1)
  // rows; the retrieval evaluation passes the whole item table): only the rows the batch
  // references are staged, renumbered in row order, and their gradients are expanded back to
  // the caller's table (zero elsewhere), so the results are those of the full tables.
  struct CompactTable {
    kernels::HostBuffer<int64_t> index;              // [P] the positions' indices into `rows`
    kernels::HostBuffer<T> rows;                     // [P x D] the referenced rows
    kernels::HostBuffer<T> grads;                    // [P x D] their gradients
    std::vector<int64_t> original;                   // [P] compact row -> row of the caller's table
    std::vector<std::pair<int64_t, int64_t>> order;  // [P] scratch: (row, position)
    int64_t rows_used = 0;
    Status Allocate(int64_t positions, int64_t dim, bool pinned);
    void Build(const int64_t* table_index, int64_t positions, const T* table_rows, int64_t dim);
    // out [num_rows x dim]: the compact rows' gradients at their rows, 0 elsewhere.
    void Expand(int64_t num_rows, int64_t dim, T* out) const;
  };
  int64_t staging_rows_ = 0;  // rows a staged table holds: max_batch * (T + 1)
  CompactTable compact_item_, compact_cat_;
  bool compacted_ = false;  // the last Forward staged compact tables
  bool have_training_forward_ = false;
  int64_t forward_batch_ = 0;
};

}  // namespace ips::models

#endif  // IPS_MODELS_MIND_H_
