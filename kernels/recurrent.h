// Recurrent layers over right-padded batches: GRU (torch.nn.GRU), AUGRU (the DIEN peer's
// attention-update GRU, shared/peers/torch_models.py) and LSTM (torch.nn.LSTM), forward and
// backward, one layer, one direction. CPU in float and double (double for gradient checks),
// CUDA in float.
//
// Layout and conventions (all row-major, batch-first like torch's batch_first=True):
//   x        [B x T x I]   step 0 is the oldest; row b is valid at steps t < lengths[b]
//   lengths  [B]           int32 in [0, T]; on CUDA a device pointer
//   w_ih     [G*H x I], w_hh [G*H x H], b_ih [G*H], b_hh [G*H]; G = 3 (GRU, AUGRU), 4 (LSTM)
//            gate order as torch: GRU/AUGRU (r, z, n), LSTM (i, f, g, o)
//   att      [B x T]       AUGRU attention scores (a_t)
//   h0, c0   [B x H]       initial state; nullptr means zeros (c0: LSTM only)
//   states   [B x T x H]   h_t after step t at valid steps; padded steps (t >= lengths[b]) are
//                          written as 0 so that downstream ops never read stale memory
//   final_h  [B x H]       the state after the last valid step (h0 when lengths[b] == 0)
//   final_c  [B x H]       LSTM only, same rule
//
// Cells (x-side gx = W_ih x + b_ih, h-side gh = W_hh h + b_hh, split by gate):
//   GRU   r = σ(gx_r + gh_r), z = σ(gx_z + gh_z), n = tanh(gx_n + r ⊙ gh_n),
//         h' = (1 − z) ⊙ n + z ⊙ h                                    (torch.nn.GRU)
//   AUGRU r as GRU, s = σ(gx_z + gh_z), z = a_t · s, n as GRU,
//         h' = (1 − z) ⊙ h + z ⊙ n       (the peer: z multiplies the NEW state, not the old one)
//   LSTM  i, f, o = σ(.), g = tanh(.), c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c')  (torch.nn.LSTM)
// At padded steps the state is carried unchanged.
//
// Buffers: ops never allocate. The forward writes what backward needs into `reserve`
// (RnnReserveBytes), per valid (b, t) and hidden unit:
//   GRU (r, z, n, gh_n) · AUGRU (r, s, n, gh_n) · LSTM (i, f, g, o, c')      [B x T x S*H]
// Backward also reads the forward's `states` and h0/c0 (h_{t-1} is states[b, t-1] or h0),
// so they must be unchanged between the two calls. Both passes take a scratch `workspace` of
// Rnn{Forward,Backward}WorkspaceBytes. On CUDA all pointers are device pointers and the work is
// queued on ctx.stream (the calls return before it finishes).
//
// Gradients are written, not accumulated (d_w_ih etc. are overwritten). Incoming gradients
// d_states / d_final_h / d_final_c may be nullptr (= zero); d_states at padded steps is ignored
// because those outputs are constants. Thread safety: calls on distinct buffers are independent.
#ifndef IPS_KERNELS_RECURRENT_H_
#define IPS_KERNELS_RECURRENT_H_

#include <cstddef>
#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

namespace ips::kernels {

enum class RnnCell { kGru, kAugru, kLstm };

struct RnnShape {
  RnnCell cell = RnnCell::kGru;
  int64_t batch = 0;   // B
  int64_t steps = 0;   // T
  int64_t input = 0;   // I
  int64_t hidden = 0;  // H
};

// Gates per cell (3 or 4) and values saved in `reserve` per (b, t) and hidden unit (4 or 5).
int RnnGates(RnnCell cell);
int RnnSavedPerUnit(RnnCell cell);

template <typename T>
struct RnnForwardArgs {
  RnnShape shape;
  const T* x = nullptr;
  const int32_t* lengths = nullptr;
  const T* w_ih = nullptr;
  const T* w_hh = nullptr;
  const T* b_ih = nullptr;
  const T* b_hh = nullptr;
  const T* att = nullptr;  // AUGRU only
  const T* h0 = nullptr;   // optional
  const T* c0 = nullptr;   // optional, LSTM only
  T* states = nullptr;     // out
  T* final_h = nullptr;    // out
  T* final_c = nullptr;    // out, LSTM only
  T* reserve = nullptr;    // out, RnnReserveBytes
  void* workspace = nullptr;
};

template <typename T>
struct RnnBackwardArgs {
  RnnShape shape;
  // Forward inputs and outputs, unchanged since the forward call.
  const T* x = nullptr;
  const int32_t* lengths = nullptr;
  const T* w_ih = nullptr;
  const T* w_hh = nullptr;
  const T* att = nullptr;
  const T* h0 = nullptr;
  const T* c0 = nullptr;
  const T* states = nullptr;
  const T* reserve = nullptr;
  // Incoming gradients (nullptr = zero).
  const T* d_states = nullptr;   // [B x T x H]
  const T* d_final_h = nullptr;  // [B x H]
  const T* d_final_c = nullptr;  // [B x H], LSTM
  // Outputs (written). d_att is required for AUGRU; d_h0 / d_c0 may be nullptr when unneeded.
  T* d_x = nullptr;
  T* d_w_ih = nullptr;
  T* d_w_hh = nullptr;
  T* d_b_ih = nullptr;
  T* d_b_hh = nullptr;
  T* d_att = nullptr;  // [B x T], 0 at padded steps
  T* d_h0 = nullptr;
  T* d_c0 = nullptr;
  void* workspace = nullptr;
};

// Buffer sizes in bytes for element type T (the same on CPU and CUDA).
template <typename T>
size_t RnnReserveBytes(const RnnShape& shape);
template <typename T>
size_t RnnForwardWorkspaceBytes(const RnnShape& shape);
template <typename T>
size_t RnnBackwardWorkspaceBytes(const RnnShape& shape);

// Run one layer. Return INVALID_ARGUMENT for negative sizes, a missing required pointer or (CPU)
// a length outside [0, T]; UNIMPLEMENTED for CUDA without a CUDA build or for double on CUDA.
// CUDA clamps lengths into [0, T] instead of checking them (they live on the device).
template <typename T>
Status RnnForward(const Context& ctx, const RnnForwardArgs<T>& args);
template <typename T>
Status RnnBackward(const Context& ctx, const RnnBackwardArgs<T>& args);

// Scalar CPU reference of the forward (one sample, one step, one unit at a time; no GEMM, no
// threads, exact libm transcendental functions). Same contract as RnnForward on the CPU, except
// that `reserve` and `workspace` are ignored (may be nullptr). For tests and benchmark checks.
template <typename T>
Status RnnForwardReference(const RnnForwardArgs<T>& args);

namespace rnn_internal {
// Byte offsets of the scratch buffers inside `workspace`, shared by the CPU and CUDA halves so
// that Rnn*WorkspaceBytes is one number for both. Not part of the public contract.
struct ForwardLayout {
  // gx [B*T x G*H]; wt = W_hhᵀ, wit = W_ihᵀ (CPU); gh, h, c: running per-row state.
  size_t gx = 0, wt = 0, wit = 0, gh = 0, h = 0, c = 0, total = 0;
  ForwardLayout(const RnnShape& s, size_t elem) {
    const size_t g = RnnGates(s.cell), B = s.batch, T = s.steps, H = s.hidden;
    size_t off = 0;
    auto take = [&](size_t elems) {
      const size_t at = off;
      off += (elems * elem + 63) / 64 * 64;
      return at;
    };
    gx = take(B * T * g * H);
    wt = take(H * g * H);
    wit = take(static_cast<size_t>(s.input) * g * H);
    gh = take(B * g * H);
    h = take(B * H);
    c = take(s.cell == RnnCell::kLstm ? B * H : 0);
    total = off;
  }
};

struct BackwardLayout {
  // dgx / dgh: gate-preactivation gradients on the x and h sides [B*T x G*H]; hprev: h_{t-1};
  // partials: per-part weight/bias gradient sums of the CPU path (kMaxParts of them).
  static constexpr size_t kMaxParts = 8;
  size_t dgx = 0, dgh = 0, hprev = 0, dh = 0, dc = 0, partials = 0, part_elems = 0, total = 0;
  BackwardLayout(const RnnShape& s, size_t elem) {
    const size_t g = RnnGates(s.cell), B = s.batch, T = s.steps, H = s.hidden;
    size_t off = 0;
    auto take = [&](size_t elems) {
      const size_t at = off;
      off += (elems * elem + 63) / 64 * 64;
      return at;
    };
    dgx = take(B * T * g * H);
    // LSTM's h-side gate gradients equal the x-side ones; GRU's differ in the n gate (× r).
    dgh = s.cell == RnnCell::kLstm ? dgx : take(B * T * g * H);
    hprev = take(B * T * H);
    dh = take(B * H);
    dc = take(s.cell == RnnCell::kLstm ? B * H : 0);
    part_elems = g * H * (static_cast<size_t>(s.input) + H + 2);
    partials = take(kMaxParts * part_elems);
    total = off;
  }
};
}  // namespace rnn_internal

}  // namespace ips::kernels

#endif  // IPS_KERNELS_RECURRENT_H_
