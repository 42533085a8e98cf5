#include "models/dien.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <type_traits>

#include "common/thread_pool.h"
#include "kernels/activation.h"
#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/small_gemm.h"
#include "kernels/linear.h"
#include "kernels/loss.h"
#include "models/dien_ops.h"
#include "models/option_names.h"

#if defined(__GNUC__)
#define IPS_DIEN_INLINE __attribute__((always_inline)) inline
#else
#define IPS_DIEN_INLINE inline
#endif

namespace ips::models {
namespace {

// Elements of T holding `bytes` (the RNN kernels size their buffers in bytes).
size_t ElemsFor(size_t bytes, size_t elem) { return (bytes + elem - 1) / elem; }

// ---- Small products for the auxiliary MLP tiles ------------------------------------------------
// Products go through kernels/cpu/small_gemm.h (per-ISA micro-kernels picked at run time; it says
// why not the BLAS). The 1-wide output layer (RowDot) and the sigmoids are vectorised here with
// GCC/Clang vector extensions: double (gradient checks) uses portable 32-byte vectors; float runs
// an AVX-512 clone (64-byte vectors) or an AVX2+FMA clone when the CPU has one.
#pragma GCC diagnostic ignored "-Wpsabi"
template <typename T, int kBytes>
struct VecOf {
  typedef T type __attribute__((vector_size(kBytes)));
};
template <typename T, int kBytes>
using Vec = typename VecOf<T, kBytes>::type;

template <typename V, typename T>
IPS_DIEN_INLINE V Load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
// out[r] = bias + <in row r, w> over k: the 1-wide output layer, vectorised along k (a panel
// product would run it one scalar FMA at a time).
template <typename T, int kBytes = 32>
IPS_DIEN_INLINE void RowDotImpl(int64_t rows, int64_t k, const T* in, int64_t ld_in,
                                const T* __restrict w, T bias, T* out) {
  using V = Vec<T, kBytes>;
  constexpr int64_t L = kBytes / sizeof(T);
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = in + r * ld_in;
    V acc{};
    int64_t p = 0;
    for (; p + L <= k; p += L) acc += Load<V>(x + p) * Load<V>(w + p);
    T sum = bias;
    for (int64_t l = 0; l < L; ++l) sum += acc[l];
    for (; p < k; ++p) sum += x[p] * w[p];
    out[r] = sum;
  }
}

template <typename T>
IPS_DIEN_INLINE void SigmoidImpl(T* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = kernels::cpu::Sigmoid<T>(x[i]);
}
// d *= y (1 - y): the sigmoid's derivative from its output y.
template <typename T>
IPS_DIEN_INLINE void SigmoidBackwardImpl(const T* __restrict y, T* __restrict d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] *= y[i] * (T(1) - y[i]);
}

#if defined(__GNUC__) && defined(__x86_64__)
#define IPS_DIEN_AVX2 1
__attribute__((target("avx2,fma"))) void SigmoidAvx2(float* x, int64_t n) { SigmoidImpl(x, n); }
__attribute__((target("avx2,fma"))) void SigmoidBackwardAvx2(const float* y, float* d, int64_t n) {
  SigmoidBackwardImpl(y, d, n);
}
__attribute__((target("avx512f,avx512vl,fma"))) void RowDotAvx512(int64_t rows, int64_t k,
                                                                  const float* in, int64_t ld_in,
                                                                  const float* w, float bias,
                                                                  float* out) {
  RowDotImpl<float, 64>(rows, k, in, ld_in, w, bias, out);
}
bool HasAvx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("fma");
  return has;
}
bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

namespace aux_internal {

// out[r][j] (= or +=) bias[j] + sum_p in(r, p) m[p][j], r < rows; m row-major [k x n] (row
// stride n); in(r, p) = in[r in_rs + p in_cs], so a transposed left operand is free. The bias is
// written first and the product accumulated onto it, the same FMA chain per element as a
// product started from the bias.
template <typename T>
void MatMul(int64_t rows, int64_t k, int64_t n, const T* in, int64_t in_rs, int64_t in_cs,
            const T* m, const T* bias, bool accumulate, T* out, int64_t ld_out) {
  if (!accumulate && bias != nullptr) {
    for (int64_t r = 0; r < rows; ++r) std::memcpy(out + r * ld_out, bias, n * sizeof(T));
    accumulate = true;
  }
  kernels::cpu::SmallMm(rows, n, k, in, in_rs, in_cs, m, n, out, ld_out, accumulate);
}

template <typename T>
void RowDot(int64_t rows, int64_t k, const T* in, int64_t ld_in, const T* w, T bias, T* out) {
#ifdef IPS_DIEN_AVX2
  if constexpr (std::is_same_v<T, float>) {
    if (HasAvx512()) return RowDotAvx512(rows, k, in, ld_in, w, bias, out);
  }
#endif
  RowDotImpl(rows, k, in, ld_in, w, bias, out);
}

template <typename T>
void SigmoidInPlace(T* x, int64_t n) {
#ifdef IPS_DIEN_AVX2
  if constexpr (std::is_same_v<T, float>) {
    if (HasAvx2()) return SigmoidAvx2(x, n);
  }
#endif
  SigmoidImpl(x, n);
}

template <typename T>
void SigmoidBackwardInPlace(const T* y, T* d, int64_t n) {
#ifdef IPS_DIEN_AVX2
  if constexpr (std::is_same_v<T, float>) {
    if (HasAvx2()) return SigmoidBackwardAvx2(y, d, n);
  }
#endif
  SigmoidBackwardImpl(y, d, n);
}

}  // namespace aux_internal

}  // namespace

const char* DienCellName(DienCell c) { return c == DienCell::kLstm ? "lstm" : "gru"; }

Status ValidateDienOptions(const DienOptions& o, const OptionNames& names) {
  if (o.embedding_dim < 1)
    return BadOption(names, "DienOptions", "embedding_dim",
                     "must be positive, got " + std::to_string(o.embedding_dim));
  if (o.max_len < 1) return BadOption(names, "DienOptions", "max_len", "must be >= 1");
  if (o.max_batch < 1) return BadOption(names, "DienOptions", "max_batch", "must be >= 1");
  // The attention compares the target (item and category: 2 * embedding_dim wide) with the
  // interest extractor's states.
  if (o.rnn_hidden != 0 && o.rnn_hidden != 2 * o.embedding_dim)
    return BadOption(names, "DienOptions", "rnn_hidden",
                     "must be 2 * " + MentionedOption(names, "embedding_dim") + " = " +
                         std::to_string(2 * o.embedding_dim) + " (or 0 for that), got " +
                         std::to_string(o.rnn_hidden));
  if (o.cell != DienCell::kGru && o.cell != DienCell::kLstm)
    return BadOption(names, "DienOptions", "cell", "must be GRU or LSTM");
  for (size_t i = 0; i < o.aux_hidden.size(); ++i)
    if (o.aux_hidden[i] < 1)
      return BadOption(names, "DienOptions", "aux_hidden[" + std::to_string(i) + "]",
                       "must be >= 1");
  if (!std::isfinite(o.aux_loss_weight))
    return BadOption(names, "DienOptions", "aux_loss_weight",
                     "must be finite, got " + OptionNumber(o.aux_loss_weight));
  if (o.aux_loss_weight < 0)
    return BadOption(names, "DienOptions", "aux_loss_weight",
                     "must be >= 0 (0: no auxiliary loss), got " + OptionNumber(o.aux_loss_weight));
  if (o.attention_hidden1 < 1)
    return BadOption(names, "DienOptions", "attention_hidden1", "must be positive");
  if (o.attention_hidden2 < 1)
    return BadOption(names, "DienOptions", "attention_hidden2", "must be positive");
  return CheckMlpHeadOptions("DienOptions", o.mlp_hidden, o.activation, o.max_batch);
}

template <typename T>
Dien<T>::Dien(const DienOptions& o) : o_(o) {}

template <typename T>
kernels::RnnShape Dien<T>::ExtractorShape(int64_t batch) const {
  kernels::RnnShape s;
  s.cell = o_.cell == DienCell::kLstm ? kernels::RnnCell::kLstm : kernels::RnnCell::kGru;
  s.batch = batch;
  s.steps = o_.max_len;
  s.input = 2 * o_.embedding_dim;
  s.hidden = hidden_;
  return s;
}

template <typename T>
kernels::RnnShape Dien<T>::AugruShape(int64_t batch) const {
  kernels::RnnShape s;
  s.cell = kernels::RnnCell::kAugru;
  s.batch = batch;
  s.steps = o_.max_len;
  s.input = hidden_;
  s.hidden = hidden_;
  return s;
}

template <typename T>
StatusOr<std::unique_ptr<Dien<T>>> Dien<T>::Create(const DienOptions& options) {
  IPS_RETURN_IF_ERROR(ValidateDienOptions(options));
  std::unique_ptr<Dien<T>> m(new Dien<T>(options));
  const DienOptions& o = m->o_;
  const int64_t D = o.embedding_dim, E = 2 * D, H = E, B = o.max_batch, L = o.max_len;
  const int64_t A1 = o.attention_hidden1, A2 = o.attention_hidden2;
  m->hidden_ = H;
  const int64_t G = o.cell == DienCell::kLstm ? 4 : 3;

  // Registration order = the peer's module order: gru, aux, attn, augru, top.
  DenseParams<T>& p = m->params_;
  const std::string rnn = o.cell == DienCell::kLstm ? "lstm" : "gru";
  m->rnn_w_ih_ = p.Add(rnn + ".weight_ih_l0", G * H * E);
  m->rnn_w_hh_ = p.Add(rnn + ".weight_hh_l0", G * H * H);
  m->rnn_b_ih_ = p.Add(rnn + ".bias_ih_l0", G * H);
  m->rnn_b_hh_ = p.Add(rnn + ".bias_hh_l0", G * H);
  m->aux_sizes_ = {H + E};
  m->aux_sizes_.insert(m->aux_sizes_.end(), o.aux_hidden.begin(), o.aux_hidden.end());
  m->aux_sizes_.push_back(1);
  const size_t aux_layers = m->aux_sizes_.size() - 1;
  for (size_t i = 0; i < aux_layers; ++i) {
    const std::string n = "aux." + std::to_string(2 * i);
    m->aux_w_.push_back(p.Add(n + ".weight", m->aux_sizes_[i] * m->aux_sizes_[i + 1]));
    m->aux_b_.push_back(p.Add(n + ".bias", m->aux_sizes_[i + 1]));
  }
  m->attn_.Register(&p, H, A1, A2);
  m->au_w_ih_ = p.Add("augru.x2h.weight", 3 * H * H);
  m->au_b_ih_ = p.Add("augru.x2h.bias", 3 * H);
  m->au_w_hh_ = p.Add("augru.h2h.weight", 3 * H * H);
  m->au_b_hh_ = p.Add("augru.h2h.bias", 3 * H);
  std::vector<int64_t> sizes = {H + E};
  sizes.insert(sizes.end(), o.mlp_hidden.begin(), o.mlp_hidden.end());
  sizes.push_back(1);
  m->mlp_ = std::make_unique<Mlp<T>>(&p, "top", sizes, o.activation, B);
  IPS_RETURN_IF_ERROR(p.Allocate().WithContext(std::string(m->name()) + " model"));

  Rng rng(o.seed);
  {  // nn.GRU / nn.LSTM: every tensor U(-1/sqrt(H), 1/sqrt(H)).
    const double bound = 1.0 / std::sqrt(static_cast<double>(H));
    const int64_t offs[4] = {m->rnn_w_ih_, m->rnn_w_hh_, m->rnn_b_ih_, m->rnn_b_hh_};
    const int64_t lens[4] = {G * H * E, G * H * H, G * H, G * H};
    for (int q = 0; q < 4; ++q)
      for (int64_t i = 0; i < lens[q]; ++i)
        p.value(offs[q])[i] = static_cast<T>((2 * rng.Uniform() - 1) * bound);
  }
  for (size_t i = 0; i < aux_layers; ++i)
    InitLinearTorchDefault(rng, m->aux_sizes_[i], m->aux_sizes_[i + 1], p.value(m->aux_w_[i]),
                           p.value(m->aux_b_[i]));
  m->attn_.Init(rng);
  InitLinearTorchDefault(rng, H, 3 * H, p.value(m->au_w_ih_), p.value(m->au_b_ih_));
  InitLinearTorchDefault(rng, H, 3 * H, p.value(m->au_w_hh_), p.value(m->au_b_hh_));
  m->mlp_->Init(rng);

  // Weights are initialised on the host (the same on every device), then mirrored.
  const kernels::Device dev = o.device;
  IPS_RETURN_IF_ERROR(p.AttachDevice(dev, o.stage_on_cpu));
  IPS_RETURN_IF_ERROR(m->mlp_->AttachDevice(dev, o.stage_on_cpu));
  const int64_t max_positions = 2 * B * L + B;
  IPS_ASSIGN_OR_RETURN(m->io_, CtrDeviceIo<T>::Create(dev, o.stage_on_cpu, B, max_positions, D));

  auto size = [](int64_t n) { return static_cast<size_t>(n); };
  // Elements of T holding the RNN kernels' byte sizes.
  auto elems = [](size_t bytes) { return static_cast<int64_t>(ElemsFor(bytes, sizeof(T))); };
  const kernels::RnnShape es = m->ExtractorShape(B), as = m->AugruShape(B);
  const size_t ws = std::max(
      {kernels::RnnForwardWorkspaceBytes<T>(es), kernels::RnnBackwardWorkspaceBytes<T>(es),
       kernels::RnnForwardWorkspaceBytes<T>(as), kernels::RnnBackwardWorkspaceBytes<T>(as)});
  const int64_t max_pairs = o.aux_loss_disabled ? 0 : B * std::max<int64_t>(L - 1, 0);
  IPS_RETURN_IF_ERROR(kernels::CreateBuffers<T>(
      dev, {
               {&m->x_, B * L * E},
               {&m->target_, B * E},
               {&m->states_, B * L * H},
               {&m->ext_final_h_, B * H},
               {&m->ext_final_c_, B * H},
               {&m->ext_reserve_, elems(kernels::RnnReserveBytes<T>(es))},
               {&m->att_, B * L},
               {&m->attn_saved_, kernels::DinAttentionSavedSize(B, L, H, A1, A2)},
               {&m->au_states_, B * L * H},
               {&m->au_reserve_, elems(kernels::RnnReserveBytes<T>(as))},
               {&m->final_h_, B * H},
               {&m->mlp_in_, B * (H + E)},
               {&m->logits_, B},
               {&m->rnn_workspace_, elems(ws)},
               {&m->loss_scratch_, 2},
               {&m->attn_workspace_, kernels::DinAttentionBackwardWorkspaceSize(B, L, H, A1, A2)},
               {&m->d_logits_, B},
               {&m->d_mlp_in_, B * (H + E)},
               {&m->d_final_, B * H},
               {&m->d_au_x_, B * L * H},
               {&m->d_att_, B * L},
               {&m->d_query_, B * E},
               {&m->d_keys_, B * L * H},
               {&m->d_states_, B * L * H},
               {&m->d_x_, B * L * E},
               {&m->d_aux_h_, max_pairs * H},
               {&m->d_aux_pos_, max_pairs * E},
               {&m->d_aux_neg_, max_pairs * E},
               {&m->g_item_, max_positions * D},
               {&m->g_cat_, max_positions * D},
           }));
  m->first_valid_.resize(size(B));
  m->pair_offset_.resize(size(B + 1));
  m->pair_row_.resize(size(max_pairs));
  if (o.aux_loss_disabled) return m;

  int64_t widest = 0;
  for (size_t i = 0; i < m->aux_sizes_.size(); ++i) widest = std::max(widest, m->aux_sizes_[i]);
  if (!m->aux_fused()) {
    // The layer-by-layer auxiliary MLP over up to 2 * max_pairs rows, and the device copies of
    // the pair index arrays.
    IPS_ASSIGN_OR_RETURN(m->pair_offset_dev_, kernels::Buffer<int64_t>::Create(dev, B + 1));
    IPS_ASSIGN_OR_RETURN(m->pair_row_dev_, kernels::Buffer<int32_t>::Create(dev, max_pairs));
    const int64_t rows = 2 * max_pairs;
    IPS_RETURN_IF_ERROR(kernels::CreateBuffers<T>(dev, {
                                                           {&m->aux_in_, rows * (H + E)},
                                                           {&m->aux_grad_a_, rows * widest},
                                                           {&m->aux_grad_b_, rows * widest},
                                                           {&m->aux_labels_, rows},
                                                       }));
    m->aux_act_.resize(aux_layers);
    for (size_t i = 0; i < aux_layers; ++i) {
      IPS_ASSIGN_OR_RETURN(m->aux_act_[i],
                           kernels::Buffer<T>::Create(dev, rows * m->aux_sizes_[i + 1]));
    }
    // Interleaved pair rows: positives (label 1) at even rows, negatives (label 0) at odd ones,
    // so the labels do not depend on the batch and are copied once here.
    std::vector<T> labels(size(rows));
    for (int64_t r = 0; r < rows; r += 2) labels[size(r)] = T(1);
    kernels::Context c;
    c.device = dev;
    IPS_RETURN_IF_ERROR(
        kernels::CopyToDevice(c, m->aux_labels_.data(), labels.data(), sizeof(T) * size(rows)));
    IPS_RETURN_IF_ERROR(kernels::Synchronize(c));
    return m;
  }
  int64_t off = 0;
  for (size_t i = 0; i < aux_layers; ++i) {
    m->aux_out_.emplace_back(size(2 * max_pairs * m->aux_sizes_[i + 1]));
    m->aux_w_off_.push_back(off);
    off += m->aux_sizes_[i] * m->aux_sizes_[i + 1];
    m->aux_b_off_.push_back(off);
    off += m->aux_sizes_[i + 1];
  }
  m->aux_part_elems_ = off;
  m->aux_wt_.resize(size(off));
  m->aux_partials_.resize(size(kAuxMaxParts * off));
  m->aux_w0h_.resize(size(m->aux_sizes_[1] * H));
  m->aux_w0e_.resize(size(m->aux_sizes_[1] * E));
  m->aux_scratch_.resize(size(kAuxMaxParts));
  for (AuxScratch& sc : m->aux_scratch_) {
    sc.hin.resize(size(kAuxTile * H));
    sc.epos.resize(size(kAuxTile * E));
    sc.eneg.resize(size(kAuxTile * E));
    sc.da.resize(size(2 * kAuxTile * widest));
    sc.dz.resize(size(2 * kAuxTile * widest));
  }
  return m;
}

template <typename T>
Status Dien<T>::CheckInputs(const CtrInputs<T>& in, bool training) const {
  const int64_t B = in.batch, L = o_.max_len;
  if (B < 1 || B > o_.max_batch)
    return InvalidArgumentError("Dien: batch " + std::to_string(B) + " outside [1, " +
                                std::to_string(o_.max_batch) + "]");
  if (in.lengths == nullptr || in.item_index == nullptr || in.cat_index == nullptr ||
      in.item_rows == nullptr || in.cat_rows == nullptr)
    return InvalidArgumentError("Dien: null lengths, index or row pointer");
  for (int64_t b = 0; b < B; ++b)
    if (in.lengths[b] < 0 || in.lengths[b] > L)
      return InvalidArgumentError("Dien: lengths[" + std::to_string(b) +
                                  "] = " + std::to_string(in.lengths[b]) + " outside [0, " +
                                  std::to_string(L) + "]");
  // The negatives are only read when the auxiliary loss is computed.
  const bool negatives = AuxActive(in, training);
  const int64_t n = (negatives ? 2 * B * L : B * L) + B;
  for (int64_t i = 0; i < n; ++i) {
    if (in.item_index[i] < 0 || in.item_index[i] >= in.num_item_rows)
      return InvalidArgumentError("Dien: item_index[" + std::to_string(i) +
                                  "] = " + std::to_string(in.item_index[i]) + " outside [0, " +
                                  std::to_string(in.num_item_rows) + ")");
    if (in.cat_index[i] < 0 || in.cat_index[i] >= in.num_cat_rows)
      return InvalidArgumentError("Dien: cat_index[" + std::to_string(i) +
                                  "] = " + std::to_string(in.cat_index[i]) + " outside [0, " +
                                  std::to_string(in.num_cat_rows) + ")");
  }
  return Status::Ok();
}

template <typename T>
kernels::DinAttentionArgs<T> Dien<T>::AttentionArgs(const CtrInputs<T>& in) const {
  kernels::DinAttentionArgs<T> a = kernels::DienAttentionArgs<T>(
      in.batch, o_.max_len, hidden_, target_.data(), states_.data(), in.lengths);
  attn_.SetWeights(&a);
  return a;
}

template <typename T>
Status Dien<T>::Forward(const kernels::Context& ctx, const CtrInputs<T>& host_in, bool training,
                        T* loss) {
  have_training_forward_ = false;
  IPS_RETURN_IF_ERROR(CheckModelDevice("Dien", o_.device, ctx));
  IPS_RETURN_IF_ERROR(CheckInputs(host_in, training));
  const int64_t B = host_in.batch, L = o_.max_len, D = o_.embedding_dim;
  // Auxiliary loss: a training-only term (the peer's loss(); its evaluation calls score()). The
  // negatives are staged only then.
  aux_computed_ = AuxActive(host_in, training);
  const int64_t positions = (aux_computed_ ? 2 * B * L : B * L) + B;
  IPS_ASSIGN_OR_RETURN(const CtrInputs<T> in, io_.BeginForward(ctx, host_in, positions, &params_));
  const DienShapes shapes{B, L, D, in.lengths};

  // Host-side index work from the host lengths: a prefix sum and a pair -> row map, a few
  // hundred integers per batch, which the host computes anyway for the pair count P (the size
  // of every auxiliary pass); staged, they are copied to the device once per batch rather than
  // rebuilt there by a scan kernel.
  pair_offset_[0] = 0;
  for (int64_t b = 0; b < B; ++b) {
    first_valid_[b] = L - host_in.lengths[b];
    pair_offset_[b + 1] = pair_offset_[b] + std::max<int64_t>(host_in.lengths[b] - 1, 0);
    if (!pair_row_.empty())
      for (int64_t p = pair_offset_[b]; p < pair_offset_[b + 1]; ++p)
        pair_row_[p] = static_cast<int32_t>(b);
  }
  if (aux_computed_ && io_.staged()) {
    // Pageable sources, which must not change until the stream has passed the copy: safe,
    // because every staged Forward ends in a CopyToHost (EndForward), which waits for the stream,
    // before the next batch rewrites them.
    IPS_RETURN_IF_ERROR(kernels::CopyToDevice(ctx, pair_offset_dev_.data(), pair_offset_.data(),
                                              sizeof(int64_t) * static_cast<size_t>(B + 1)));
    if (pair_offset_[B] > 0)
      IPS_RETURN_IF_ERROR(
          kernels::CopyToDevice(ctx, pair_row_dev_.data(), pair_row_.data(),
                                sizeof(int32_t) * static_cast<size_t>(pair_offset_[B])));
  }

  // Roll to right padding while gathering [item_emb, cat_emb]: rolled step t of row b is the
  // left-padded position first_valid + t. Padded steps are zero (the kernels never read them).
  IPS_RETURN_IF_ERROR(GatherBehaviours(ctx, shapes, StepLayout::kRolled, in.item_index,
                                       in.cat_index, in.item_rows, in.cat_rows, x_.data(),
                                       target_.data()));

  // Interest extractor.
  {
    kernels::RnnForwardArgs<T> r;
    r.shape = ExtractorShape(B);
    r.x = x_.data();
    r.lengths = in.lengths;
    r.w_ih = params_.compute_value(rnn_w_ih_);
    r.w_hh = params_.compute_value(rnn_w_hh_);
    r.b_ih = params_.compute_value(rnn_b_ih_);
    r.b_hh = params_.compute_value(rnn_b_hh_);
    r.states = states_.data();
    r.final_h = ext_final_h_.data();
    r.final_c = ext_final_c_.data();
    r.reserve = ext_reserve_.data();
    r.workspace = rnn_workspace_.data();
    IPS_RETURN_IF_ERROR(kernels::RnnForward(ctx, r));
  }

  aux_loss_ = T(0);
  aux_pairs_ = 0;
  if (aux_computed_) IPS_RETURN_IF_ERROR(AuxForward(ctx, in));

  // Target attention over the extractor states (softmax over valid steps), or a_t = 1 at valid
  // steps when ablated.
  if (o_.attention_disabled) {
    IPS_RETURN_IF_ERROR(DienValidMask(ctx, shapes, att_.data()));
  } else {
    IPS_RETURN_IF_ERROR(kernels::DinAttentionForward(ctx, AttentionArgs(in), att_.data(), nullptr,
                                                     attn_saved_.data()));
  }

  // Interest evolution: AUGRU over the states; final_h = state after the last valid step.
  {
    kernels::RnnForwardArgs<T> r;
    r.shape = AugruShape(B);
    r.x = states_.data();
    r.lengths = in.lengths;
    r.w_ih = params_.compute_value(au_w_ih_);
    r.w_hh = params_.compute_value(au_w_hh_);
    r.b_ih = params_.compute_value(au_b_ih_);
    r.b_hh = params_.compute_value(au_b_hh_);
    r.att = att_.data();
    r.states = au_states_.data();
    r.final_h = final_h_.data();
    r.reserve = au_reserve_.data();
    r.workspace = rnn_workspace_.data();
    IPS_RETURN_IF_ERROR(kernels::RnnForward(ctx, r));
  }

  // mlp_in = [h_final, target].
  IPS_RETURN_IF_ERROR(
      DienBuildMlpInput(ctx, shapes, final_h_.data(), target_.data(), mlp_in_.data()));
  const T* out = nullptr;
  IPS_RETURN_IF_ERROR(mlp_->Forward(ctx, B, mlp_in_.data(), training, &out));
  IPS_RETURN_IF_ERROR(kernels::CopyOnDevice(ctx, logits_.data(), out, sizeof(T) * B));
  IPS_RETURN_IF_ERROR(io_.EndForward(ctx, logits_.data(), B));

  if (in.labels != nullptr) {
    IPS_RETURN_IF_ERROR(ClickLoss(ctx, B, logits_.data(), in.labels, loss_scratch_.data(),
                                  static_cast<T*>(nullptr)));
    // One copy (one wait) for the click loss and, from the device path's auxiliary pass, the
    // summed auxiliary loss in loss_scratch_[1].
    const bool aux_on_device = aux_computed_ && !aux_fused() && aux_pairs_ > 0;
    T host_losses[2] = {T(0), T(0)};
    IPS_RETURN_IF_ERROR(kernels::CopyToHost(ctx, host_losses, loss_scratch_.data(),
                                            (aux_on_device ? 2 : 1) * sizeof(T)));
    click_loss_ = host_losses[0];
    if (aux_on_device)
      aux_loss_ =
          static_cast<T>(static_cast<double>(host_losses[1]) / static_cast<double>(aux_pairs_));
    if (loss != nullptr) *loss = click_loss_ + static_cast<T>(o_.aux_loss_weight) * aux_loss_;
    have_training_forward_ = training;
    forward_batch_ = B;
  }
  return Status::Ok();
}

// ---- Auxiliary MLP ---------------------------------------------------------------------------
// The auxiliary MLP is the largest dense cost of the model (2 rows per pair, up to 2·B·(T-1) =
// 50,176 rows at the peer's shape, against B = 512 rows for the top MLP), so it runs fused per
// tile of kAuxTile pairs on the pool's threads: gather the inputs, all layers, the loss, and in
// the backward all gradients, with the tile's activations in L1/L2. The first layer is split as
// W·[h, e] = W_h·h + W_e·e, so the h part is computed once for the positive and the negative of
// a pair (exact: the same sums in a different order).

template <typename T>
void Dien<T>::AuxGatherTile(const CtrInputs<T>& in, int64_t p0, int64_t p1, T* hin, T* epos,
                            T* eneg) const {
  const int64_t B = in.batch, L = o_.max_len, D = o_.embedding_dim, E = 2 * D, H = hidden_;
  const size_t row_bytes = sizeof(T) * static_cast<size_t>(D);
  const int64_t neg_base = B * L + B;
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t b = pair_row_[p], t = p - pair_offset_[b], r = p - p0;
    std::memcpy(hin + r * H, states_.data() + (b * L + t) * H, sizeof(T) * H);
    std::memcpy(epos + r * E, x_.data() + (b * L + t + 1) * E, sizeof(T) * E);
    const int64_t q = neg_base + b * L + first_valid_[b] + t + 1;
    std::memcpy(eneg + r * E, in.item_rows + in.item_index[q] * D, row_bytes);
    std::memcpy(eneg + r * E + D, in.cat_rows + in.cat_index[q] * D, row_bytes);
  }
}

// Runs fn(part, tile_begin, tile_end) for the aux parts: contiguous pair ranges, one scratch set
// per part, so results do not depend on which thread runs which part.
template <typename T>
template <typename Fn>
void Dien<T>::ForAuxParts(const kernels::Context& ctx, int64_t pairs, const Fn& fn) {
  const int64_t tiles = (pairs + kAuxTile - 1) / kAuxTile;
  const int64_t threads = ctx.pool != nullptr ? ctx.pool->num_threads() : 1;
  aux_parts_ = std::max<int64_t>(1, std::min<int64_t>({threads, kAuxMaxParts, tiles}));
  const int64_t parts = aux_parts_;
  auto run = [&](int64_t part) {
    const int64_t t0 = part * tiles / parts, t1 = (part + 1) * tiles / parts;
    fn(part, std::min(pairs, t0 * kAuxTile), std::min(pairs, t1 * kAuxTile));
  };
  if (parts == 1) {
    run(0);
  } else {
    ctx.pool->ParallelFor(parts, 1, [&](int64_t b, int64_t e) {
      for (int64_t part = b; part < e; ++part) run(part);
    });
  }
}

template <typename T>
Status Dien<T>::AuxForward(const kernels::Context& ctx, const CtrInputs<T>& in) {
  const int64_t B = in.batch, P = pair_offset_[B];
  aux_pairs_ = P;
  if (P == 0) return Status::Ok();
  if (!aux_fused()) return AuxForwardLayers(ctx, in);
  const int64_t nl = static_cast<int64_t>(aux_sizes_.size()) - 1;
  // Forward weights transposed to [in x out], so that the tile products stream their rows.
  for (int64_t i = 0; i < nl; ++i) {
    const int64_t n_in = aux_sizes_[i], n_out = aux_sizes_[i + 1];
    const T* w = params_.value(aux_w_[i]);
    T* wt = aux_wt_.data() + aux_w_off_[i];
    for (int64_t j = 0; j < n_out; ++j)
      for (int64_t k = 0; k < n_in; ++k) wt[k * n_out + j] = w[j * n_in + k];
  }
  ForAuxParts(ctx, P, [&](int64_t part, int64_t begin, int64_t end) {
    double loss = 0;
    for (int64_t p0 = begin; p0 < end; p0 += kAuxTile) {
      const int64_t p1 = std::min(end, p0 + kAuxTile);
      loss += AuxForwardTile(in, part, p0, p1);
    }
    aux_part_loss_[part] = loss;
  });
  double total = 0;
  for (int64_t part = 0; part < aux_parts_; ++part) total += aux_part_loss_[part];
  aux_loss_ = static_cast<T>(total / static_cast<double>(P));
  return Status::Ok();
}

template <typename T>
double Dien<T>::AuxForwardTile(const CtrInputs<T>& in, int64_t part, int64_t p0, int64_t p1) {
  const int64_t D = o_.embedding_dim, E = 2 * D, H = hidden_, R = p1 - p0, P = aux_pairs_;
  const int64_t nl = static_cast<int64_t>(aux_sizes_.size()) - 1;
  AuxScratch& sc = aux_scratch_[part];
  AuxGatherTile(in, p0, p1, sc.hin.data(), sc.epos.data(), sc.eneg.data());
  const int64_t rows0[2] = {p0, P + p0};  // first row of the positive / negative block
  const T* e_in[2] = {sc.epos.data(), sc.eneg.data()};
  {  // Layer 0, split into the shared h part and the per-block e part.
    const int64_t n1 = aux_sizes_[1];
    const T* wt = aux_wt_.data() + aux_w_off_[0];
    T* base = sc.dz.data();
    aux_internal::MatMul<T>(R, H, n1, sc.hin.data(), H, 1, wt, params_.value(aux_b_[0]), false,
                            base, n1);
    for (int k = 0; k < 2; ++k) {
      T* out = aux_out_[0].data() + rows0[k] * n1;
      std::memcpy(out, base, sizeof(T) * R * n1);
      aux_internal::MatMul<T>(R, E, n1, e_in[k], E, 1, wt + H * n1, nullptr, true, out, n1);
      if (nl > 1) aux_internal::SigmoidInPlace<T>(out, R * n1);
    }
  }
  for (int64_t i = 1; i < nl; ++i) {
    const int64_t n_in = aux_sizes_[i], n_out = aux_sizes_[i + 1];
    for (int k = 0; k < 2; ++k) {
      T* out = aux_out_[i].data() + rows0[k] * n_out;
      const T* x = aux_out_[i - 1].data() + rows0[k] * n_in;
      if (n_out == 1) {
        aux_internal::RowDot<T>(R, n_in, x, n_in, params_.value(aux_w_[i]),
                                params_.value(aux_b_[i])[0], out);
      } else {
        aux_internal::MatMul<T>(R, n_in, n_out, x, n_in, 1, aux_wt_.data() + aux_w_off_[i],
                                params_.value(aux_b_[i]), false, out, n_out);
      }
      if (i + 1 < nl) aux_internal::SigmoidInPlace<T>(out, R * n_out);
    }
  }
  // BCE(pos, 1) + BCE(neg, 0) = softplus(-x_pos) + softplus(x_neg).
  const T* logit = aux_out_[nl - 1].data();
  double loss = 0;
  for (int64_t r = 0; r < R; ++r) {
    const double xp = -static_cast<double>(logit[p0 + r]);
    const double xn = static_cast<double>(logit[P + p0 + r]);
    loss += std::max(xp, 0.0) + std::log1p(std::exp(-std::fabs(xp)));
    loss += std::max(xn, 0.0) + std::log1p(std::exp(-std::fabs(xn)));
  }
  return loss;
}

template <typename T>
Status Dien<T>::ZeroAuxGrads(const kernels::Context& ctx) {
  for (size_t i = 0; i + 1 < aux_sizes_.size(); ++i) {
    IPS_RETURN_IF_ERROR(kernels::ZeroOnDevice(ctx, params_.compute_grad(aux_w_[i]),
                                              sizeof(T) * aux_sizes_[i] * aux_sizes_[i + 1]));
    IPS_RETURN_IF_ERROR(
        kernels::ZeroOnDevice(ctx, params_.compute_grad(aux_b_[i]), sizeof(T) * aux_sizes_[i + 1]));
  }
  return Status::Ok();
}

template <typename T>
Status Dien<T>::AuxBackward(const kernels::Context& ctx, const CtrInputs<T>& in) {
  const int64_t P = aux_pairs_;
  if (P == 0) return ZeroAuxGrads(ctx);
  if (!aux_fused()) return AuxBackwardLayers(ctx, in);
  const int64_t H = hidden_, E = 2 * o_.embedding_dim, n1 = aux_sizes_[1];
  // Layer 0's weight split into its h and e column blocks ([n1 x H], [n1 x E]) for d(inputs).
  const T* w0 = params_.value(aux_w_[0]);
  for (int64_t j = 0; j < n1; ++j) {
    std::memcpy(aux_w0h_.data() + j * H, w0 + j * (H + E), sizeof(T) * H);
    std::memcpy(aux_w0e_.data() + j * E, w0 + j * (H + E) + H, sizeof(T) * E);
  }
  const int64_t part_elems = aux_part_elems_;
  ForAuxParts(ctx, P, [&](int64_t part, int64_t begin, int64_t end) {
    T* partial = aux_partials_.data() + part * part_elems;
    std::fill(partial, partial + part_elems, T(0));
    for (int64_t p0 = begin; p0 < end; p0 += kAuxTile)
      AuxBackwardTile(in, part, p0, std::min(end, p0 + kAuxTile));
  });
  // Weight gradients: the parts' partial sums, added in a fixed order.
  const int64_t nl = static_cast<int64_t>(aux_sizes_.size()) - 1;
  for (int64_t i = 0; i < nl; ++i) {
    const int64_t nw = aux_sizes_[i] * aux_sizes_[i + 1], nb = aux_sizes_[i + 1];
    T* gw = params_.grad(aux_w_[i]);
    T* gb = params_.grad(aux_b_[i]);
    for (int64_t k = 0; k < nw; ++k) {
      T v = 0;
      for (int64_t part = 0; part < aux_parts_; ++part)
        v += aux_partials_[part * part_elems + aux_w_off_[i] + k];
      gw[k] = v;
    }
    for (int64_t k = 0; k < nb; ++k) {
      T v = 0;
      for (int64_t part = 0; part < aux_parts_; ++part)
        v += aux_partials_[part * part_elems + aux_b_off_[i] + k];
      gb[k] = v;
    }
  }
  return Status::Ok();
}

template <typename T>
void Dien<T>::AuxBackwardTile(const CtrInputs<T>& in, int64_t part, int64_t p0, int64_t p1) {
  const int64_t D = o_.embedding_dim, E = 2 * D, H = hidden_, R = p1 - p0, P = aux_pairs_;
  const int64_t nl = static_cast<int64_t>(aux_sizes_.size()) - 1;
  AuxScratch& sc = aux_scratch_[part];
  T* partial = aux_partials_.data() + part * aux_part_elems_;
  AuxGatherTile(in, p0, p1, sc.hin.data(), sc.epos.data(), sc.eneg.data());
  const int64_t rows0[2] = {p0, P + p0};
  // dL/dlogit = weight / P * (sigmoid(x) - y), positives (y = 1) in rows [0, R) of the tile
  // buffers, negatives (y = 0) in rows [R, 2R).
  T* cur = sc.da.data();
  T* next = sc.dz.data();
  const T scale = static_cast<T>(o_.aux_loss_weight / static_cast<double>(P));
  const T* logit = aux_out_[nl - 1].data();
  for (int64_t r = 0; r < R; ++r) {
    cur[r] = scale * (kernels::cpu::Sigmoid<T>(logit[p0 + r]) - T(1));
    cur[R + r] = scale * kernels::cpu::Sigmoid<T>(logit[P + p0 + r]);
  }
  for (int64_t i = nl - 1; i >= 0; --i) {
    const int64_t n_in = aux_sizes_[i], n_out = aux_sizes_[i + 1];
    // cur holds dL/d(output of layer i) [2R x n_out]; turn it into dL/d(pre-activation).
    if (i + 1 < nl) {
      for (int k = 0; k < 2; ++k)
        aux_internal::SigmoidBackwardInPlace<T>(aux_out_[i].data() + rows0[k] * n_out,
                                                cur + k * R * n_out, R * n_out);
    }
    T* gb = partial + aux_b_off_[i];
    for (int64_t r = 0; r < 2 * R; ++r)
      for (int64_t c = 0; c < n_out; ++c) gb[c] += cur[r * n_out + c];
    T* gw = partial + aux_w_off_[i];
    if (i > 0) {
      for (int k = 0; k < 2; ++k)
        aux_internal::MatMul<T>(n_out, R, n_in, cur + k * R * n_out, 1, n_out,
                                aux_out_[i - 1].data() + rows0[k] * n_in, nullptr, true, gw, n_in);
      // dL/d(output of layer i - 1) = dpre · W_i, W_i as stored ([n_out x n_in]).
      aux_internal::MatMul<T>(2 * R, n_out, n_in, cur, n_out, 1, params_.value(aux_w_[i]), nullptr,
                              false, next, n_in);
      std::swap(cur, next);
      continue;
    }
    // Layer 0: the h part sees the sum of both blocks' gradients.
    T* dsum = next;
    for (int64_t k = 0; k < R * n_out; ++k) dsum[k] = cur[k] + cur[R * n_out + k];
    aux_internal::MatMul<T>(n_out, R, H, dsum, 1, n_out, sc.hin.data(), nullptr, true, gw, H + E);
    aux_internal::MatMul<T>(n_out, R, E, cur, 1, n_out, sc.epos.data(), nullptr, true, gw + H,
                            H + E);
    aux_internal::MatMul<T>(n_out, R, E, cur + R * n_out, 1, n_out, sc.eneg.data(), nullptr, true,
                            gw + H, H + E);
    aux_internal::MatMul<T>(R, n_out, H, dsum, n_out, 1, aux_w0h_.data(), nullptr, false,
                            d_aux_h_.data() + p0 * H, H);
    aux_internal::MatMul<T>(R, n_out, E, cur, n_out, 1, aux_w0e_.data(), nullptr, false,
                            d_aux_pos_.data() + p0 * E, E);
    aux_internal::MatMul<T>(R, n_out, E, cur + R * n_out, n_out, 1, aux_w0e_.data(), nullptr, false,
                            d_aux_neg_.data() + p0 * E, E);
  }
}

// ---- Auxiliary MLP, layer by layer (staged: CUDA, or the CPU with stage_on_cpu) ---------------
// The same MLP over all 2P pair rows at once through kernels/ (Linear = GEMM + bias + sigmoid,
// BCE-with-logits summed, then divided by P), on whichever device the model runs: on CUDA one
// GEMM per layer over ~50k rows beats anything tiled, and the CPU run of the same calls is what
// lets CPU tests check this path. Rows are interleaved (2p positive, 2p + 1 negative) so that the
// labels are fixed; the first layer runs on the full [h_t, e] rows (the h part is computed twice
// per pair, against once in the fused path).

template <typename T>
Status Dien<T>::AuxForwardLayers(const kernels::Context& ctx, const CtrInputs<T>& in) {
  const int64_t P = aux_pairs_, rows = 2 * P;
  const int64_t nl = static_cast<int64_t>(aux_sizes_.size()) - 1;
  const DienShapes shapes{in.batch, o_.max_len, o_.embedding_dim, in.lengths};
  IPS_RETURN_IF_ERROR(DienAuxGather(ctx, shapes, P, PairRows(), PairOffsets(), states_.data(),
                                    x_.data(), in.item_index, in.cat_index, in.item_rows,
                                    in.cat_rows, aux_in_.data()));
  for (int64_t i = 0; i < nl; ++i) {
    kernels::LinearArgs<T> a = AuxLayerArgs(i, rows);
    a.bias = params_.compute_value(aux_b_[i]);
    IPS_RETURN_IF_ERROR(kernels::LinearForward(ctx, a));
  }
  // Sum over pairs of BCE(pos, 1) + BCE(neg, 0); the mean over pairs is taken on the host.
  kernels::BceWithLogitsArgs<T> l = AuxLossArgs(rows);
  // The sum stays on the device (loss_scratch_[1]); Forward brings it back with the click loss,
  // so the host does not wait here before queueing the rest of the forward.
  l.loss = loss_scratch_.data() + 1;
  return kernels::BceWithLogitsForward(ctx, l);
}

template <typename T>
kernels::LinearArgs<T> Dien<T>::AuxLayerArgs(int64_t i, int64_t rows) {
  const int64_t nl = static_cast<int64_t>(aux_sizes_.size()) - 1;
  kernels::LinearArgs<T> a;
  a.rows = rows;
  a.in = aux_sizes_[i];
  a.out = aux_sizes_[i + 1];
  a.act = i + 1 < nl ? kernels::Activation::kSigmoid : kernels::Activation::kIdentity;
  a.x = i == 0 ? aux_in_.data() : aux_act_[i - 1].data();
  a.w = params_.compute_value(aux_w_[i]);
  a.y = aux_act_[i].data();
  return a;
}

template <typename T>
kernels::BceWithLogitsArgs<T> Dien<T>::AuxLossArgs(int64_t rows) {
  const int64_t nl = static_cast<int64_t>(aux_sizes_.size()) - 1;
  kernels::BceWithLogitsArgs<T> l;
  l.n = rows;
  l.reduction = kernels::Reduction::kSum;
  l.logits = aux_act_[nl - 1].data();  // the last layer's logits
  l.labels = aux_labels_.data();
  return l;
}

template <typename T>
Status Dien<T>::AuxBackwardLayers(const kernels::Context& ctx, const CtrInputs<T>& in) {
  const int64_t P = aux_pairs_, rows = 2 * P;
  const int64_t nl = static_cast<int64_t>(aux_sizes_.size()) - 1;
  T* cur = aux_grad_a_.data();
  T* next = aux_grad_b_.data();
  kernels::BceWithLogitsArgs<T> l = AuxLossArgs(rows);
  l.dloss = static_cast<T>(o_.aux_loss_weight / static_cast<double>(P));
  l.dlogits = cur;
  IPS_RETURN_IF_ERROR(kernels::BceWithLogitsBackward(ctx, l));
  for (int64_t i = nl - 1; i >= 0; --i) {
    kernels::LinearArgs<T> a = AuxLayerArgs(i, rows);
    a.dy = cur;
    a.dpre = cur;
    a.dx = next;  // layer 0: the gradient of the gathered [h, e] rows
    a.dw = params_.compute_grad(aux_w_[i]);
    a.dbias = params_.compute_grad(aux_b_[i]);
    IPS_RETURN_IF_ERROR(kernels::LinearBackward(ctx, a));
    std::swap(cur, next);
  }
  const DienShapes shapes{in.batch, o_.max_len, o_.embedding_dim, in.lengths};
  return DienAuxSplitGrads(ctx, shapes, P, cur, d_aux_h_.data(), d_aux_pos_.data(),
                           d_aux_neg_.data());
}

template <typename T>
Status Dien<T>::Backward(const kernels::Context& ctx, const CtrInputs<T>& host_in, T* d_item_rows,
                         T* d_cat_rows) {
  if (!have_training_forward_ || host_in.batch != forward_batch_ || host_in.labels == nullptr)
    return FailedPreconditionError(
        "Dien::Backward needs a Forward(training = true) with labels on the same batch first");
  if (d_item_rows == nullptr || d_cat_rows == nullptr)
    return InvalidArgumentError("Dien::Backward: null d_item_rows or d_cat_rows");
  IPS_RETURN_IF_ERROR(CheckModelDevice("Dien", o_.device, ctx));
  const int64_t B = host_in.batch, L = o_.max_len, D = o_.embedding_dim, E = 2 * D, H = hidden_;
  // Staged, the forward's copy of the inputs is used (the same batch).
  const CtrInputs<T>& in = io_.BackwardInputs(host_in);
  const DienShapes shapes{B, L, D, in.lengths};

  // Click loss -> top MLP -> [d_final, d_target].
  IPS_RETURN_IF_ERROR(ClickLossBackward(ctx, B, logits_.data(), in.labels, d_logits_.data()));
  IPS_RETURN_IF_ERROR(mlp_->Backward(ctx, B, mlp_in_.data(), d_logits_.data(), d_mlp_in_.data()));
  IPS_RETURN_IF_ERROR(DienFinalGrad(ctx, shapes, d_mlp_in_.data(), d_final_.data()));

  // AUGRU -> d(states) of the evolution path and d(attention weights).
  {
    kernels::RnnBackwardArgs<T> r;
    r.shape = AugruShape(B);
    r.x = states_.data();
    r.lengths = in.lengths;
    r.w_ih = params_.compute_value(au_w_ih_);
    r.w_hh = params_.compute_value(au_w_hh_);
    r.att = att_.data();
    r.states = au_states_.data();
    r.reserve = au_reserve_.data();
    r.d_final_h = d_final_.data();
    r.d_x = d_au_x_.data();
    r.d_w_ih = params_.compute_grad(au_w_ih_);
    r.d_w_hh = params_.compute_grad(au_w_hh_);
    r.d_b_ih = params_.compute_grad(au_b_ih_);
    r.d_b_hh = params_.compute_grad(au_b_hh_);
    r.d_att = d_att_.data();
    r.workspace = rnn_workspace_.data();
    IPS_RETURN_IF_ERROR(kernels::RnnBackward(ctx, r));
  }

  // Attention -> d(target) and d(states) of the attention path.
  if (o_.attention_disabled) {
    IPS_RETURN_IF_ERROR(kernels::ZeroOnDevice(ctx, d_query_.data(), sizeof(T) * B * E));
    IPS_RETURN_IF_ERROR(kernels::ZeroOnDevice(ctx, d_keys_.data(), sizeof(T) * B * L * H));
    IPS_RETURN_IF_ERROR(attn_.ZeroGrads(ctx));
  } else {
    kernels::DinAttentionGrads<T> g = attn_.Grads();
    g.d_query = d_query_.data();
    g.d_keys = d_keys_.data();
    IPS_RETURN_IF_ERROR(kernels::DinAttentionBackward(ctx, AttentionArgs(in), attn_saved_.data(),
                                                      d_att_.data(), nullptr, g,
                                                      attn_workspace_.data()));
  }

  // Auxiliary MLP -> d(aux inputs).
  if (aux_computed_) {
    IPS_RETURN_IF_ERROR(AuxBackward(ctx, in));
  } else {
    IPS_RETURN_IF_ERROR(ZeroAuxGrads(ctx));
  }
  // The pair offsets, or null when no pair contributes.
  const int64_t* pair_offset = aux_computed_ && aux_pairs_ > 0 ? PairOffsets() : nullptr;

  // Total gradient of the extractor states: evolution input + attention keys + aux pairs' h_t.
  IPS_RETURN_IF_ERROR(DienStateGrads(ctx, shapes, pair_offset, d_au_x_.data(), d_keys_.data(),
                                     d_aux_h_.data(), d_states_.data()));

  // Interest extractor -> d(rolled behaviours).
  {
    kernels::RnnBackwardArgs<T> r;
    r.shape = ExtractorShape(B);
    r.x = x_.data();
    r.lengths = in.lengths;
    r.w_ih = params_.compute_value(rnn_w_ih_);
    r.w_hh = params_.compute_value(rnn_w_hh_);
    r.states = states_.data();
    r.reserve = ext_reserve_.data();
    r.d_states = d_states_.data();
    r.d_x = d_x_.data();
    r.d_w_ih = params_.compute_grad(rnn_w_ih_);
    r.d_w_hh = params_.compute_grad(rnn_w_hh_);
    r.d_b_ih = params_.compute_grad(rnn_b_ih_);
    r.d_b_hh = params_.compute_grad(rnn_b_hh_);
    r.workspace = rnn_workspace_.data();
    IPS_RETURN_IF_ERROR(kernels::RnnBackward(ctx, r));
  }

  // Per-position row gradients in the input layout: history positions (un-rolled) get d_x plus
  // the positive pair's e_{t+1} gradient, targets the MLP's and the query's, negatives their
  // pair's e'_{t+1} gradient; padded and unused positions zero.
  IPS_RETURN_IF_ERROR(DienRowGrads(ctx, shapes, aux_computed_, pair_offset, d_x_.data(),
                                   d_aux_pos_.data(), d_aux_neg_.data(), d_mlp_in_.data(),
                                   d_query_.data(), g_item_.data(), g_cat_.data()));

  return io_.ScatterRowGradsAndEnd(ctx, in, (aux_computed_ ? 2 * B * L : B * L) + B, D,
                                   g_item_.data(), g_cat_.data(), d_item_rows, d_cat_rows,
                                   &params_);
}

template class Dien<float>;
template class Dien<double>;

}  // namespace ips::models
