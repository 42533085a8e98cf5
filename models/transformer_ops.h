// The per-batch loops of the transformer models (models/transformer.h's block, models/sasrec.h,
// models/bst.h) that are not a kernels/ op: the dropout masks and their application, the
// residual adds and keep-masks of the block, SASRec's embedding + position input, its scores
// against the next item and the sampled negative, and BST's behaviour + target input and mean
// pooling, each with its backward layout. Each runs on ctx's device (CPU: float and double over
// ctx.pool; CUDA: float, models/cuda/transformer_ops.cu) with every pointer in that device's
// memory, so one model code path serves both devices.
//
// Shapes (models/ctr_ops.h CtrShapes): B sequences of T steps, left-padded (step t of row b is
// valid when t >= T - lengths[b]), `dim` the row width the op names. Outputs are overwritten.
// The CUDA twins compute every sum in the CPU's order (one thread per sum); a CUDA model still
// differs from the CPU one in the last bits: nvcc fuses multiply-adds (FMA) that the host build
// does not, and the kernels' own arithmetic (cuBLAS, atomics in ScatterAdd) sums in other orders.
#ifndef IPS_MODELS_TRANSFORMER_OPS_H_
#define IPS_MODELS_TRANSFORMER_OPS_H_

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"
#include "models/ctr_ops.h"

namespace ips::models {

// ---- The block ------------------------------------------------------------------------------

// models/transformer.h DropoutMask (the same bits on every device): bits needs
// DropoutMaskWords(n) words.
Status TfDropoutMask(const kernels::Context& ctx, uint64_t seed, double p, int64_t n,
                     uint16_t* bits);
// out[i] = (add ? add[i] : 0) + (keep_i ? in[i] * scale : 0), i < n (models/transformer.h
// DropoutApply); out may alias in or add.
template <typename T>
Status TfDropoutApply(const kernels::Context& ctx, const uint16_t* bits, T scale, const T* in,
                      const T* add, T* out, int64_t n);
// out[i] = a[i] + b[i], i < n; out may alias a or b.
template <typename T>
Status TfAdd(const kernels::Context& ctx, int64_t n, const T* a, const T* b, T* out);
// y [B x T x dim] = (res + drop(f)) at valid steps, 0 at padded ones; bits == nullptr: no
// dropout (y = res + f).
template <typename T>
Status TfKeepResidual(const kernels::Context& ctx, const CtrShapes& s, const uint16_t* bits,
                      T scale, const T* f, const T* res, T* y);
// g [B x T x dim] = dy at valid steps, 0 at padded ones.
template <typename T>
Status TfKeepRows(const kernels::Context& ctx, const CtrShapes& s, const T* dy, T* g);

// ---- SASRec (s.dim = d) ---------------------------------------------------------------------

// x0 [B x T x d] = item_rows[item_index[b*T + t]] * scale + pos[t] at valid steps, 0 at padded.
template <typename T>
Status SasrecEmbed(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                   const T* item_rows, const T* pos, T scale, T* x0);
// user [B x d] = out[b, T - 1].
template <typename T>
Status SasrecLastStep(const kernels::Context& ctx, const CtrShapes& s, const T* out, T* user);
// pos_logits / neg_logits [B x T] = <out[b,t], positive / negative row> (0 at padded steps) and
// seq_loss [B] = sum over b's valid t (in t order) of softplus(-pos) + softplus(neg).
template <typename T>
Status SasrecScore(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                   const T* item_rows, const T* out, T* pos_logits, T* neg_logits, T* seq_loss);
// With dp = -sigmoid(-pos) * inv_count, dn = sigmoid(neg) * inv_count at valid steps:
// dout [B x T x d] = dp * positive row + dn * negative row, g_pos_neg [2 x B x T x d] =
// (dp * out, dn * out); all 0 at padded steps.
template <typename T>
Status SasrecScoreBackward(const kernels::Context& ctx, const CtrShapes& s,
                           const int64_t* item_index, const T* item_rows, const T* out,
                           const T* pos_logits, const T* neg_logits, T inv_count, T* dout,
                           T* g_pos_neg);
// g_seq [B x T x d] = dx0 * scale at valid steps (0 at padded); dpos [T x d] = sum over the
// sequences valid at t, in b order.
template <typename T>
Status SasrecEmbedBackward(const kernels::Context& ctx, const CtrShapes& s, const T* dx0, T scale,
                           T* g_seq, T* dpos);

// ---- BST (s.max_len = L, the history; s.dim = D, one table's width; E = 2D, S = L + 1) -------

// seq_lengths [B] = lengths + 1; x0 [B x S x E] = [item row, cat row] + pos[t] at valid steps
// (step L is the target, index B*L + b), 0 at padded ones.
template <typename T>
Status BstEmbed(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                const int64_t* cat_index, const T* item_rows, const T* cat_rows, const T* pos,
                int32_t* seq_lengths, T* x0);
// pooled [B x 2E] = [mean of the valid history outputs (0 when none), the target's output].
template <typename T>
Status BstMeanPool(const kernels::Context& ctx, const CtrShapes& s, const T* xl, T* pooled);
// dy [B x S x E] from d_pooled [B x 2E]: the mean's share at valid history steps, 0 at padded
// ones, the target half at step L.
template <typename T>
Status BstMeanPoolBackward(const kernels::Context& ctx, const CtrShapes& s, const T* d_pooled,
                           T* dy);
// g_item / g_cat [(B*L + B) x D]: the halves of dx0 [B x S x E] per position (0 at padded
// steps); dpos [S x E] = sum over the sequences valid at t, in b order.
template <typename T>
Status BstEmbedBackward(const kernels::Context& ctx, const CtrShapes& s, const T* dx0, T* g_item,
                        T* g_cat, T* dpos);

#ifdef IPS_WITH_CUDA
namespace cuda {
Status TfDropoutMask(const kernels::Context& ctx, uint64_t seed, double p, int64_t n,
                     uint16_t* bits);
Status TfDropoutApply(const kernels::Context& ctx, const uint16_t* bits, float scale,
                      const float* in, const float* add, float* out, int64_t n);
Status TfAdd(const kernels::Context& ctx, int64_t n, const float* a, const float* b, float* out);
Status TfKeepResidual(const kernels::Context& ctx, const CtrShapes& s, const uint16_t* bits,
                      float scale, const float* f, const float* res, float* y);
Status TfKeepRows(const kernels::Context& ctx, const CtrShapes& s, const float* dy, float* g);
Status SasrecEmbed(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                   const float* item_rows, const float* pos, float scale, float* x0);
Status SasrecLastStep(const kernels::Context& ctx, const CtrShapes& s, const float* out,
                      float* user);
Status SasrecScore(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                   const float* item_rows, const float* out, float* pos_logits, float* neg_logits,
                   float* seq_loss);
Status SasrecScoreBackward(const kernels::Context& ctx, const CtrShapes& s,
                           const int64_t* item_index, const float* item_rows, const float* out,
                           const float* pos_logits, const float* neg_logits, float inv_count,
                           float* dout, float* g_pos_neg);
Status SasrecEmbedBackward(const kernels::Context& ctx, const CtrShapes& s, const float* dx0,
                           float scale, float* g_seq, float* dpos);
Status BstEmbed(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                const int64_t* cat_index, const float* item_rows, const float* cat_rows,
                const float* pos, int32_t* seq_lengths, float* x0);
Status BstMeanPool(const kernels::Context& ctx, const CtrShapes& s, const float* xl, float* pooled);
Status BstMeanPoolBackward(const kernels::Context& ctx, const CtrShapes& s, const float* d_pooled,
                           float* dy);
Status BstEmbedBackward(const kernels::Context& ctx, const CtrShapes& s, const float* dx0,
                        float* g_item, float* g_cat, float* dpos);
}  // namespace cuda
#endif

}  // namespace ips::models

#endif  // IPS_MODELS_TRANSFORMER_OPS_H_
