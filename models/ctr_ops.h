// The per-batch data movement of the CTR models (DIN, the pooled baseline; DIEN's gather) that is
// not a kernels/ op: laying the pulled rows out as behaviours, building the top MLP's input and
// splitting its gradient back into per-position row gradients. Each runs on ctx's device (CPU:
// float and double over ctx.pool; CUDA: float, models/cuda/ctr_ops.cu) with every pointer in
// that device's memory. Shapes as in models/model.h CtrInputs: B rows, history T (left-padded:
// step t of row b is valid when t >= T - lengths[b]), D the table width and E = 2D a behaviour
// [item row, category row]. Outputs are overwritten.
#ifndef IPS_MODELS_CTR_OPS_H_
#define IPS_MODELS_CTR_OPS_H_

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

namespace ips::models {

struct CtrShapes {
  int64_t batch = 0;                 // B
  int64_t max_len = 0;               // T
  int64_t dim = 0;                   // D
  const int32_t* lengths = nullptr;  // [B], clamped to [0, T]
};

// How a history's steps are laid out in a [B x T x E] behaviour buffer: as the inputs
// (left-padded: the valid steps are the last lengths[b]; DIN, the pooled model) or rolled to the
// front (step t < lengths[b] is input position b*T + T - lengths[b] + t; DIEN's recurrent layers).
enum class StepLayout { kLeftPadded, kRolled };

// hist [B x T x E]: the item and category rows of every valid step in `layout` (0 at padded
// steps); target [B x E]: the rows of the B targets. Indices follow models/model.h CtrInputs
// (history positions, then targets).
template <typename T>
Status GatherBehaviours(const kernels::Context& ctx, const CtrShapes& s, StepLayout layout,
                        const int64_t* item_index, const int64_t* cat_index, const T* item_rows,
                        const T* cat_rows, T* hist, T* target);

// mlp_in [B x 3E] = [pooled, target, sum of the valid steps of hist] (summed in step order).
template <typename T>
Status DinBuildMlpInput(const kernels::Context& ctx, const CtrShapes& s, const T* hist,
                        const T* pooled, const T* target, T* mlp_in);

// d_pooled [B x E] = the first E columns of d_mlp_in [B x 3E].
template <typename T>
Status DinPooledGrad(const kernels::Context& ctx, const CtrShapes& s, const T* d_mlp_in,
                     T* d_pooled);

// Per-position row gradients [(B*T + B) x D] of the item and category halves: a valid history
// step gets the attention's key gradient plus the `summed` gradient, a padded one 0; a target
// gets the MLP's target gradient plus the attention's query gradient.
template <typename T>
Status DinRowGrads(const kernels::Context& ctx, const CtrShapes& s, const T* d_mlp_in,
                   const T* d_keys, const T* d_query, T* g_item, T* g_cat);

// ---- Pooled baseline (models/pooled.h) ----

// mlp_in [B x 2E] = [sum (mean: / lengths[b]) of the valid steps' rows, the target's rows],
// summed in step order; pooled [B x E] = its first half.
template <typename T>
Status PooledBuildMlpInput(const kernels::Context& ctx, const CtrShapes& s, bool mean,
                           const int64_t* item_index, const int64_t* cat_index, const T* item_rows,
                           const T* cat_rows, T* mlp_in, T* pooled);

// Per-position row gradients [(B*T + B) x D]: a valid history step gets the pooled gradient
// (times 1 / lengths[b] for the mean), a padded one 0, a target the target half of d_mlp_in.
template <typename T>
Status PooledRowGrads(const kernels::Context& ctx, const CtrShapes& s, bool mean, const T* d_mlp_in,
                      T* g_item, T* g_cat);

#ifdef IPS_WITH_CUDA
namespace cuda {
Status GatherBehaviours(const kernels::Context& ctx, const CtrShapes& s, StepLayout layout,
                        const int64_t* item_index, const int64_t* cat_index, const float* item_rows,
                        const float* cat_rows, float* hist, float* target);
Status DinBuildMlpInput(const kernels::Context& ctx, const CtrShapes& s, const float* hist,
                        const float* pooled, const float* target, float* mlp_in);
Status DinPooledGrad(const kernels::Context& ctx, const CtrShapes& s, const float* d_mlp_in,
                     float* d_pooled);
Status DinRowGrads(const kernels::Context& ctx, const CtrShapes& s, const float* d_mlp_in,
                   const float* d_keys, const float* d_query, float* g_item, float* g_cat);
Status PooledBuildMlpInput(const kernels::Context& ctx, const CtrShapes& s, bool mean,
                           const int64_t* item_index, const int64_t* cat_index,
                           const float* item_rows, const float* cat_rows, float* mlp_in,
                           float* pooled);
Status PooledRowGrads(const kernels::Context& ctx, const CtrShapes& s, bool mean,
                      const float* d_mlp_in, float* g_item, float* g_cat);
}  // namespace cuda
#endif

}  // namespace ips::models

#endif  // IPS_MODELS_CTR_OPS_H_
