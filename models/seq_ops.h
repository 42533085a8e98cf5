// The per-batch data movement of the recurrent next-item model (models/gru4rec.h) that is not a
// kernels/ op: gathering the left-padded inputs into the recurrent kernels' right-padded layout
// and back, scoring each state against its next item and its sampled negative, and splitting
// those scores' gradients back. Each runs on ctx's device (CPU: float and double over ctx.pool;
// CUDA: float, models/cuda/seq_ops.cu) with every pointer in that device's memory. Shapes as in
// models/model.h SeqInputs: B sequences of T steps (left-padded: step t of row b is valid when
// t >= T - lengths[b]), D the item-row width; item_index holds [B x T] inputs, then [B x T]
// positives, then [B x T] negatives. "Right-padded" rows hold a sequence's valid steps first.
// Outputs are overwritten.
#ifndef IPS_MODELS_SEQ_OPS_H_
#define IPS_MODELS_SEQ_OPS_H_

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"
#include "models/ctr_ops.h"

namespace ips::models {

// x [B x T x D] right-padded: step t < lengths[b] holds the row of input position
// (b, T - lengths[b] + t), later steps 0.
template <typename T>
Status SeqGatherRightPadded(const kernels::Context& ctx, const CtrShapes& s,
                            const int64_t* item_index, const T* item_rows, T* x);

// left [B x T x D] = right [B x T x D] moved back to the left-padded layout (0 at padded steps).
template <typename T>
Status SeqRightToLeft(const kernels::Context& ctx, const CtrShapes& s, const T* right, T* left);

// For every position i = b * T + t: logits[i] = <states_left[i], positive row>, logits[BT + i] =
// <states_left[i], negative row>, labels 1 then 0, mask 1 at valid steps; padded steps get
// logit 0 and mask 0. logits, labels and mask are [2 x B x T].
template <typename T>
Status SeqScoreNextItems(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                         const T* item_rows, const T* states_left, T* logits, T* labels, T* mask);

// Backward of SeqScoreNextItems given d_logits [2 x B x T]: d_states_right [B x T x D]
// (right-padded, 0 at padded steps) = dl_pos * positive row + dl_neg * negative row, and the
// per-position gradients of the positive and negative rows, g_pos_neg [2 x B x T x D]
// (dl * state; 0 at padded steps).
template <typename T>
Status SeqScoreBackward(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                        const T* item_rows, const T* states_left, const T* d_logits,
                        T* d_states_right, T* g_pos_neg);

#ifdef IPS_WITH_CUDA
namespace cuda {
Status SeqGatherRightPadded(const kernels::Context& ctx, const CtrShapes& s,
                            const int64_t* item_index, const float* item_rows, float* x);
Status SeqRightToLeft(const kernels::Context& ctx, const CtrShapes& s, const float* right,
                      float* left);
Status SeqScoreNextItems(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                         const float* item_rows, const float* states_left, float* logits,
                         float* labels, float* mask);
Status SeqScoreBackward(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                        const float* item_rows, const float* states_left, const float* d_logits,
                        float* d_states_right, float* g_pos_neg);
}  // namespace cuda
#endif

}  // namespace ips::models

#endif  // IPS_MODELS_SEQ_OPS_H_
