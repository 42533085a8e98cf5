// The transformer block shared by SASRec (models/sasrec.h) and BST (models/bst.h): one pre-LN
// self-attention block over left-padded sequences as an explicit forward and backward pass over
// kernels/ (LayerNorm, Linear, multi-head attention, dropout), plus the dropout-seed scheme both
// models use.
//
//   h  = LN1(x)
//   Q, K, V = Linear(h) (with bias)                       [rows x dim] each, heads split columns
//   A  = softmax(Q_h K_h^T / sqrt(head_dim)) + causal and key-padding masks, dropout on A
//   o  = A V  (then Linear(o) when attn_output_projection)
//   m  = x + drop(o)
//   y  = (m + drop(FFN(LN2(m)))) * keep,   FFN = Linear -> ReLU|LeakyReLU -> Dropout -> Linear
// with keep = 1 at valid steps and 0 at padded ones, exactly the peer's SASRec block
// (../shared/peers/torch_models.py SASRec.encode). Rows at padded steps therefore leave the
// block as zeros and pass no gradient; their keys are masked. BlockLayout::kQueryNorm moves the
// norms, residuals and dropout sites to where the SASRec reference code has them.
//
// Why pre-LN for BST too: one block serves both models (SASRec's peer is pre-LN), and pre-LN
// trains stably without warm-up; BST's paper uses post-LN (LN(x + drop(f(x)))). models/bst.h
// lists this with its other deviations.
//
// Dropout masks are pure functions of (seed, element index) (DropoutMask below), built once per
// forward as bits and reused by the backward, so a forward is reproducible by reusing its seed.
// The block draws one seed per dropout site from the seed it is given (DropoutSiteSeed).
//
// CPU speed (fast_cpu_path, on by default): on CPUs with AVX-512 the Linear layers' GEMMs and
// the attention run through this file's own register-blocked loops instead of kernels::Gemm
// (OpenBLAS, which on this project's VM falls back to SSE3 kernels) and kernels::Mha; the
// attention then works only on each sequence's valid steps. Tests check both paths against each
// other; without AVX-512 (or with fast_cpu_path = false) everything goes through kernels/.
//
// Buffers are sized at construction for max_batch * max_len rows: Forward/Backward allocate
// nothing (the kernels::Mha fallback allocates small per-thread scratch). Templated on T (float
// for training, double for gradient checks). Thread safety: none; work is split over ctx.pool.
//
// Devices: AttachDevice(kCuda) moves every buffer to the GPU; the block then runs on a CUDA
// Context through the kernels' CUDA twins (LayerNorm, Linear/Gemm, MhaForward/Backward, whose
// attention dropout is the same function of the seed on both devices) and
// models/transformer_ops.h for its own loops (residuals, keep-masks, the dropout masks, which
// give the same bits on both devices). Its weights are read and written through
// DenseParams::compute_value/compute_grad, so the owning model attaches its DenseParams to the
// same device. That path never takes the fast CPU loops (the model clears fast_cpu_path).
#ifndef IPS_MODELS_TRANSFORMER_H_
#define IPS_MODELS_TRANSFORMER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "kernels/activation.h"
#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/norm.h"
#include "models/layers.h"

namespace ips::models {

// Where a block's LayerNorms and residuals sit.
//   kPreLn:     the block above (the SASRec paper's equation x + Dropout(g(LN(x))), the peer's).
//   kQueryNorm: the SASRec authors' reference TensorFlow code (kang205/SASRec model.py,
//               modules.py): LN1 feeds only the queries, keys and values are Linear(x), both
//               residuals start from the normalised input, and the attention output has no
//               dropout of its own (only the attention weights are dropped):
//                 h = LN1(x); m = h + A(Q(h), K(x), V(x))
//                 h2 = LN2(m); y = (h2 + drop(FFN(h2))) * keep
//               The paper's reported figures come from this code, so accuracy runs against the
//               paper use it; the peer (and our default) follow the paper's equation.
enum class BlockLayout { kPreLn, kQueryNorm };

struct TransformerBlockOptions {
  int64_t dim = 50;         // model width d; num_heads must divide it
  int64_t num_heads = 1;    // head_dim = dim / num_heads; scores scaled by 1/sqrt(head_dim)
  int64_t ffn_hidden = 50;  // width of the FFN's hidden layer (SASRec: = dim)
  kernels::Activation ffn_activation = kernels::Activation::kRelu;  // kRelu or kLeakyRelu
  bool causal = false;                  // SASRec: position i attends to j <= i only
  bool attn_output_projection = false;  // SASRec: none (the peer); BST: Linear(dim, dim)
  BlockLayout layout = BlockLayout::kPreLn;
  double dropout = 0;     // rate of every dropout site, in [0, 1)
  int64_t max_batch = 1;  // buffers are sized for max_batch x max_len rows
  int64_t max_len = 1;    // sequence length T (sequences are left-padded to it)
  // The Linear layers' GEMMs and the attention through the block's own AVX-512 loops where the
  // CPU has them and the widths fit (see transformer.cc); false (or no AVX-512): always
  // kernels::Linear/Gemm (OpenBLAS) and kernels::MhaForward/Backward. Both compute the same
  // function; tests compare them. The attention-dropout masks differ between the two (each path
  // draws its own, from the same seed), so a seed replays only on the same path.
  bool fast_cpu_path = true;
};

// INVALID_ARGUMENT naming the first bad field (prefix + "." + field).
Status ValidateTransformerBlockOptions(const TransformerBlockOptions& o, const std::string& prefix);

// A seed per (step, model seed): every training forward draws its masks from a fresh one.
inline uint64_t DropoutStepSeed(uint64_t model_seed, uint64_t step) {
  return Mix64(Mix64(model_seed ^ 0x5a5ecafe0ddba11ULL) + 0x9e3779b97f4a7c15ULL * (step + 1));
}
// Distinct sites (input dropout, each block's four sites) get unrelated masks.
inline uint64_t DropoutSiteSeed(uint64_t seed, uint64_t site) {
  return Mix64(seed ^ Mix64(site + 0x632be59bd9b4e019ULL));
}

// Dropout masks as bits: bit (i % 16) of bits[i / 16] is 1 iff element i is kept, where
//   keep_i = Fmix32(Fmix32(i * 0x9E3779B1 + lo32(seed)) ^ hi32(seed)) >= floor(p * 2^32)
// (Fmix32 = MurmurHash3's 32-bit finaliser). A pure function of (seed, i), like the kernels'
// dropout, but built 16 elements per AVX-512 step with 32-bit multiplies and kept as bits, so the
// backward reuses it instead of hashing again (the kernels' per-element 64-bit hash and branch
// were a quarter of a SASRec step). bits needs DropoutMaskWords(n) words; p in [0, 1).
inline int64_t DropoutMaskWords(int64_t n) { return (n + 15) / 16 + 1; }  // +1: window reads
void DropoutMask(const kernels::Context& ctx, uint64_t seed, double p, int64_t n, uint16_t* bits);
// out[i] = (add ? add[i] : 0) + (keep_i ? in[i] * scale : 0) for i in [begin, end); out may
// alias in or add.
template <typename T>
void DropoutApply(const kernels::Context& ctx, const uint16_t* bits, T scale, const T* in,
                  const T* add, T* out, int64_t begin, int64_t end);

template <typename T>
class TransformerBlock {
 public:
  // Registers the block's tensors under `prefix` with the peer's names: prefix + ".ln1.weight",
  // ".ln1.bias", ".q.weight", ".q.bias", ".k.*", ".v.*", [".attn_out.*",] ".ln2.*",
  // ".ffn.0.weight", ".ffn.0.bias", ".ffn.3.weight", ".ffn.3.bias" (torch's nn.Sequential
  // indices: Linear, act, Dropout, Linear). The options must be valid (programmer error
  // otherwise: call ValidateTransformerBlockOptions first).
  TransformerBlock(DenseParams<T>* params, const std::string& prefix,
                   const TransformerBlockOptions& o);
  TransformerBlock(const TransformerBlock&) = delete;
  TransformerBlock& operator=(const TransformerBlock&) = delete;

  // After params->Finalize(): LayerNorms gamma 1, beta 0; Linears torch's default, in the order
  // q, k, v, [attn_out,] ffn.0, ffn.3.
  void Init(Rng& rng);

  // Reallocates every buffer on `device` (the constructor puts them on the CPU); kCuda needs
  // T = float and fast_cpu_path = false (programmer errors otherwise: the model checks first).
  // INTERNAL when device memory cannot be had; UNIMPLEMENTED for CUDA in a build without it.
  // First, on every device, the constructor's RESOURCE_EXHAUSTED (naming the block's sizes) when
  // its host buffers did not fit: a constructor cannot return it, and every model calls
  // AttachDevice before using the block (Forward returns it too).
  Status AttachDevice(kernels::Device device);

  // x [batch x T x dim] -> y [batch x T x dim] (y must not alias x). lengths [batch] (left
  // padding, each in [0, T]; the caller validated them). training with dropout > 0 applies the
  // dropout sites with masks drawn from `seed`; otherwise no dropout. Keeps what Backward needs.
  // Every pointer (lengths included) is in the block's device memory, and ctx is of that
  // device. Errors: INVALID_ARGUMENT for batch outside [0, max_batch]; the kernels' errors.
  Status Forward(const kernels::Context& ctx, int64_t batch, const int32_t* lengths, const T* x,
                 T* y, bool training, uint64_t seed);

  // After Forward(training) on the same x, lengths and seed: dy [batch x T x dim] (read-only)
  // -> dx [batch x T x dim] (overwritten; may not alias dy) and the block's parameter gradients
  // (overwritten).
  Status Backward(const kernels::Context& ctx, int64_t batch, const int32_t* lengths, const T* x,
                  const T* dy, T* dx);

  const TransformerBlockOptions& options() const { return o_; }
  // The attention probabilities of the last Forward (before dropout) [batch x H x T x T], in
  // the block's device memory.
  const T* attention() const { return probs_.data(); }

 private:
  struct Lin {
    int64_t w = 0, b = 0, in = 0, out = 0;
  };
  Lin AddLinear(const std::string& name, int64_t in, int64_t out);
  Status LinForward(const kernels::Context& ctx, const Lin& l, int64_t rows, const T* x, T* y,
                    kernels::Activation act);
  // dpre (overwritten in place by act'), writes dW, db and dx (beta 0 or 1: accumulate).
  Status LinBackward(const kernels::Context& ctx, const Lin& l, int64_t rows, const T* x,
                     const T* y, T* dpre, kernels::Activation act, T* dx, T dx_beta);
  // kernels::LayerNormForward/Backward, or this file's AVX-512 rows (the fast CPU path).
  Status LayerNorm(const kernels::Context& ctx, const kernels::LayerNormArgs<T>& a, bool backward);
  bool FastAttention() const;
  // Whether the attention output has its own dropout site (not in kQueryNorm's layout).
  bool AttnOutDropout() const { return dropout_on_ && o_.layout == BlockLayout::kPreLn; }
  // attn_ = dropout(softmax(masked Q K^T * scale)) V (probs_ keeps the softmax), and back.
  Status AttentionForward(const kernels::Context& ctx, int64_t batch, const int32_t* lengths);
  Status AttentionBackward(const kernels::Context& ctx, int64_t batch, const int32_t* lengths,
                           const T* d_attn);
  // (Re)allocates the buffers above on `device`.
  Status Allocate(kernels::Device device);

  DenseParams<T>* params_;
  TransformerBlockOptions o_;
  Status alloc_status_;  // the constructor's allocation failure (see AttachDevice)
  int64_t ln1_g_ = 0, ln1_b_ = 0, ln2_g_ = 0, ln2_b_ = 0;
  Lin q_, k_, v_, proj_, ffn1_, ffn2_;

  // Forward state of the last call.
  int64_t batch_ = 0;
  bool dropout_on_ = false;
  uint64_t seed_ = 0;
  // Per-row buffers, [max_batch * max_len x width], on the block's device (AttachDevice).
  kernels::Buffer<T> h1_, mean1_, rstd1_;  // LN1 output and statistics
  kernels::Buffer<T> q_buf_, k_buf_, v_buf_;
  kernels::Buffer<T> probs_;     // [B x H x T x T] softmax probabilities (the attention's `saved`)
  kernels::Buffer<T> attn_;      // A V
  kernels::Buffer<T> proj_buf_;  // Linear(A V) when attn_output_projection
  kernels::Buffer<T> mid_;       // m = x + drop(o)
  kernels::Buffer<T> h2_, mean2_, rstd2_;
  kernels::Buffer<T> f1_;   // act(Linear(h2)), before its dropout
  kernels::Buffer<T> f1d_;  // after its dropout
  kernels::Buffer<T> f2_;   // second FFN Linear output
  // Backward scratch.
  kernels::Buffer<T> g_;                  // dL/dy * keep, then dL/dm
  kernels::Buffer<T> dtmp_;               // [rows x dim]
  kernels::Buffer<T> df1_;                // [rows x ffn_hidden]
  kernels::Buffer<T> dq_, dk_, dv_, dh_;  // [rows x dim]
  // Dropout masks of the last training forward (DropoutMask bits), on the block's device.
  kernels::Buffer<uint16_t> mask_attn_out_, mask_ffn_hidden_, mask_ffn_out_;
  // The fast CPU path's own scratch (host memory; empty unless that path can run).
  std::vector<T> wt_;                      // a transposed weight (fast projections)
  std::vector<uint16_t> mask_attn_probs_;  // fast attention's dropout on the probabilities
  std::vector<T> attn_scratch_;            // fast attention: per-part transposes and T x T tiles
  std::vector<T> partials_;                // per-thread weight-gradient partial sums
  std::vector<T> ln_partials_;             // per-thread LayerNorm dgamma/dbeta partial sums
};

}  // namespace ips::models

#endif  // IPS_MODELS_TRANSFORMER_H_
