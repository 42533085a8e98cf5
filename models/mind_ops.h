// The per-batch data movement and the label-aware attention of MIND (models/mind.h) that are not
// kernels/ ops: building the item vectors (item row, plus its category row) of the behaviours and
// targets, the label-aware attention over the K user vectors with its backward, and laying the
// behaviour gradients back out as per-position row gradients. Each runs on ctx's device (CPU:
// float and double over ctx.pool; CUDA: float, models/cuda/mind_ops.cu) with every pointer in
// that device's memory, as models/ctr_ops.h. Shapes: B rows, history T (inputs left-padded: step
// t of row b is valid when t >= T - lengths[b]; the model's behaviour buffers are LEFT-ALIGNED,
// step i < lengths[b] of row b is input position b*T + T - lengths[b] + i), D the table width,
// K interests. Outputs are overwritten.
#ifndef IPS_MODELS_MIND_OPS_H_
#define IPS_MODELS_MIND_OPS_H_

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

namespace ips::models {

struct MindShapes {
  int64_t batch = 0;                 // B
  int64_t max_len = 0;               // T
  int64_t dim = 0;                   // D
  int64_t num_interests = 0;         // K (<= 64)
  const int32_t* lengths = nullptr;  // [B], in [0, T] (checked by the model)
};

// e [B x T x D]: the item vectors of each row's valid behaviours, left-aligned (oldest first),
// 0 after them; et [B x D]: the targets' item vectors. An item vector is item row + category row
// with use_categories, the item row alone otherwise (cat_index and cat_rows are then not read).
// Indices follow models/model.h CtrInputs (history positions, then targets).
template <typename T>
Status MindGatherItemVectors(const kernels::Context& ctx, const MindShapes& s, bool use_categories,
                             const int64_t* item_index, const int64_t* cat_index,
                             const T* item_rows, const T* cat_rows, T* e, T* et);

// Label-aware attention and logit per row: dots [B x K] = <v_bk, et_b>, attw [B x K] =
// softmax_k(dots^pow) (integer power, 0^0 = 1), user [B x D] = sum_k attw_bk v_bk, logits [B] =
// <user_b, et_b>. v [B x K x D].
template <typename T>
Status MindLabelAttentionForward(const kernels::Context& ctx, const MindShapes& s, int pow,
                                 const T* v, const T* et, T* dots, T* attw, T* user, T* logits);

// Its backward from d_logits [B] (and the forward's v, et, dots, attw, user): dv [B x K x D], and
// the targets' item-vector gradients written to the target slots of g_item [(B*T + B) x D]
// (position B*T + b; the history slots are left alone).
template <typename T>
Status MindLabelAttentionBackward(const kernels::Context& ctx, const MindShapes& s, int pow,
                                  const T* d_logits, const T* v, const T* et, const T* dots,
                                  const T* attw, const T* user, T* dv, T* g_item);

// The history slots of g_item [(B*T + B) x D]: input position b*T + T - len + i gets the
// left-aligned behaviour gradient de [B x T x D] of step i, padded positions 0 (the target slots
// are left alone).
template <typename T>
Status MindHistoryRowGrads(const kernels::Context& ctx, const MindShapes& s, const T* de,
                           T* g_item);

#ifdef IPS_WITH_CUDA
namespace cuda {
Status MindGatherItemVectors(const kernels::Context& ctx, const MindShapes& s, bool use_categories,
                             const int64_t* item_index, const int64_t* cat_index,
                             const float* item_rows, const float* cat_rows, float* e, float* et);
Status MindLabelAttentionForward(const kernels::Context& ctx, const MindShapes& s, int pow,
                                 const float* v, const float* et, float* dots, float* attw,
                                 float* user, float* logits);
Status MindLabelAttentionBackward(const kernels::Context& ctx, const MindShapes& s, int pow,
                                  const float* d_logits, const float* v, const float* et,
                                  const float* dots, const float* attw, const float* user,
                                  float* dv, float* g_item);
Status MindHistoryRowGrads(const kernels::Context& ctx, const MindShapes& s, const float* de,
                           float* g_item);
}  // namespace cuda
#endif

}  // namespace ips::models

#endif  // IPS_MODELS_MIND_OPS_H_
