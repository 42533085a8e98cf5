// The per-batch data movement of DIEN (models/dien.h) that is not a kernels/ op (the rolled,
// right-padded behaviours are gathered by models/ctr_ops.h GatherBehaviours): building the top
// MLP's input, summing the gradients of the extractor states, splitting gradients back into
// per-position row gradients, and the auxiliary MLP's pair gather/scatter on the device path. Each
// runs on ctx's device (CPU: float and double over ctx.pool; CUDA: float, models/cuda/dien_ops.cu)
// with every pointer in that device's memory, like models/ctr_ops.h. Outputs are overwritten.
//
// Shapes: B rows, history T (the input layout is left-padded: row b's valid positions are
// [T - lengths[b], T); the rolled layout is right-padded: step t of row b is valid when
// t < lengths[b]), D the table width, E = 2D a behaviour [item row, category row] and H = E the
// recurrent hidden width. Index layout as models/model.h CtrInputs: [B x T] history positions,
// B targets, then [B x T] auxiliary negatives aligned with the history positions.
//
// Auxiliary pairs: row b contributes max(lengths[b] - 1, 0) pairs (t, t + 1) over rolled steps,
// numbered from pair_offset[b] ([B + 1] prefix sums); pair_row [P] maps a pair to its row. Both
// are computed on the host from the host lengths by the model (see models/dien.cc).
#ifndef IPS_MODELS_DIEN_OPS_H_
#define IPS_MODELS_DIEN_OPS_H_

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"
#include "models/ctr_ops.h"

namespace ips::models {

// B rows of T steps; D the table width (E = H = 2D).
using DienShapes = CtrShapes;

// att [B x T] = 1 at valid rolled steps, 0 at padded ones (the attention ablation).
template <typename T>
Status DienValidMask(const kernels::Context& ctx, const DienShapes& s, T* att);

// mlp_in [B x (H + E)] = [final_h, target].
template <typename T>
Status DienBuildMlpInput(const kernels::Context& ctx, const DienShapes& s, const T* final_h,
                         const T* target, T* mlp_in);

// d_final [B x H] = the first H columns of d_mlp_in [B x (H + E)].
template <typename T>
Status DienFinalGrad(const kernels::Context& ctx, const DienShapes& s, const T* d_mlp_in,
                     T* d_final);

// d_states [B x T x H]: at valid step t, d_au_x + d_keys (+ d_aux_h of pair (t, t + 1) when
// pair_offset is not null and t + 1 < lengths[b]); 0 at padded steps.
template <typename T>
Status DienStateGrads(const kernels::Context& ctx, const DienShapes& s, const int64_t* pair_offset,
                      const T* d_au_x, const T* d_keys, const T* d_aux_h, T* d_states);

// Per-position row gradients [(B*T + B (+ B*T when negatives)) x D] of the item and category
// halves, in the input layout: a valid history position gets d_x of its rolled step plus, when
// pair_offset is not null, the gradient of the pair whose positive it is (d_aux_pos); a target
// gets its d_mlp_in columns plus d_query; with negatives, a negative gets the gradient of the
// pair that reads it (d_aux_neg; 0 when none does or pair_offset is null). Padded positions 0.
template <typename T>
Status DienRowGrads(const kernels::Context& ctx, const DienShapes& s, bool negatives,
                    const int64_t* pair_offset, const T* d_x, const T* d_aux_pos,
                    const T* d_aux_neg, const T* d_mlp_in, const T* d_query, T* g_item, T* g_cat);

// The auxiliary MLP's input over the P pairs [2P x (H + E)], interleaved: row 2p =
// [h_t, e_{t+1}] (positive), row 2p + 1 = [h_t, e'_{t+1}] (negative), with h_t from states
// [B x T x H], e_{t+1} from x and e'_{t+1} gathered from the negative at input position
// B*T + B + b*T + (T - lengths[b]) + t + 1.
template <typename T>
Status DienAuxGather(const kernels::Context& ctx, const DienShapes& s, int64_t pairs,
                     const int32_t* pair_row, const int64_t* pair_offset, const T* states,
                     const T* x, const int64_t* item_index, const int64_t* cat_index,
                     const T* item_rows, const T* cat_rows, T* aux_in);

// The reverse of DienAuxGather's layout: d_aux_in [2P x (H + E)] -> d_aux_h [P x H] (the sum of
// both rows' h parts), d_aux_pos [P x E], d_aux_neg [P x E].
template <typename T>
Status DienAuxSplitGrads(const kernels::Context& ctx, const DienShapes& s, int64_t pairs,
                         const T* d_aux_in, T* d_aux_h, T* d_aux_pos, T* d_aux_neg);

#ifdef IPS_WITH_CUDA
namespace cuda {
Status DienValidMask(const kernels::Context& ctx, const DienShapes& s, float* att);
Status DienBuildMlpInput(const kernels::Context& ctx, const DienShapes& s, const float* final_h,
                         const float* target, float* mlp_in);
Status DienFinalGrad(const kernels::Context& ctx, const DienShapes& s, const float* d_mlp_in,
                     float* d_final);
Status DienStateGrads(const kernels::Context& ctx, const DienShapes& s, const int64_t* pair_offset,
                      const float* d_au_x, const float* d_keys, const float* d_aux_h,
                      float* d_states);
Status DienRowGrads(const kernels::Context& ctx, const DienShapes& s, bool negatives,
                    const int64_t* pair_offset, const float* d_x, const float* d_aux_pos,
                    const float* d_aux_neg, const float* d_mlp_in, const float* d_query,
                    float* g_item, float* g_cat);
Status DienAuxGather(const kernels::Context& ctx, const DienShapes& s, int64_t pairs,
                     const int32_t* pair_row, const int64_t* pair_offset, const float* states,
                     const float* x, const int64_t* item_index, const int64_t* cat_index,
                     const float* item_rows, const float* cat_rows, float* aux_in);
Status DienAuxSplitGrads(const kernels::Context& ctx, const DienShapes& s, int64_t pairs,
                         const float* d_aux_in, float* d_aux_h, float* d_aux_pos, float* d_aux_neg);
}  // namespace cuda
#endif

}  // namespace ips::models

#endif  // IPS_MODELS_DIEN_OPS_H_
