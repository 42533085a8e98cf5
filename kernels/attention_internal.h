// Internal to the attention ops: how the DIN saved buffer and backward workspace are laid out,
// shared by the CPU and CUDA implementations so both size them through the same public
// functions in kernels/attention.h.
#ifndef IPS_KERNELS_ATTENTION_INTERNAL_H_
#define IPS_KERNELS_ATTENTION_INTERNAL_H_

#include <cstdint>

namespace ips::kernels::attention_internal {

// Offsets in elements. saved: X = [k, q*k] [N x 2E] | A1 [N x H1] | A2 [N x H2] | w [N] |
// U [B x H1] (q term of layer 1) | folded W1 [H1 x 3E] = rows [Wk - Wd, Wp, Wq + Wd].
struct DinSavedLayout {
  int64_t x, a1, a2, w, u, wfold, total;
};
inline DinSavedLayout SavedLayout(int64_t B, int64_t T, int64_t E, int64_t H1, int64_t H2) {
  DinSavedLayout l;
  const int64_t n = B * T;
  l.x = 0;
  l.a1 = l.x + n * 2 * E;
  l.a2 = l.a1 + n * H1;
  l.w = l.a2 + n * H2;
  l.u = l.w + n;
  l.wfold = l.u + B * H1;
  l.total = l.wfold + H1 * 3 * E;
  return l;
}

// workspace: dZ2 [N x H2] | G = dL/dz1 [N x H1] | DX = dL/dX [N x 2E] | Gsum [B x H1] |
// ds [N] | ones [N] | GX [H1 x 3E] = [G^T k, G^T (q*k), Gsum^T q].
struct DinWorkLayout {
  int64_t dz2, g, dx, gsum, ds, ones, gx, total;
};
inline DinWorkLayout WorkLayout(int64_t B, int64_t T, int64_t E, int64_t H1, int64_t H2) {
  DinWorkLayout l;
  const int64_t n = B * T;
  l.dz2 = 0;
  l.g = l.dz2 + n * H2;
  l.dx = l.g + n * H1;
  l.gsum = l.dx + n * 2 * E;
  l.ds = l.gsum + B * H1;
  l.ones = l.ds + n;
  l.gx = l.ones + n;
  l.total = l.gx + H1 * 3 * E;
  return l;
}

// Attention-dropout threshold: element `index` is dropped iff Mix64(seed ^ index) < threshold.
inline uint64_t DropThreshold(double p) {
  return p <= 0 ? 0 : static_cast<uint64_t>(p * 18446744073709551616.0);
}

}  // namespace ips::kernels::attention_internal

#endif  // IPS_KERNELS_ATTENTION_INTERNAL_H_
