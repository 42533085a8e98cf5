// Internal to kernels/cpu/small_gemm*.cc: the register-tiled SmallGemm body, written once over a
// vector-traits struct V and included by one file per ISA (each compiled with its own -m flags).
// The includer defines, inside an anonymous namespace, `struct V` with:
//   using R (vector), using M (tail mask), kW (lanes), kMaxNv (vectors per panel),
//   static constexpr int Mr(int nv) (rows per tile at nv vectors, within the register file),
//   Zero(), Set1(const float*), Load(const float*), LoadMask(const float*, M), Fma(a, b, c),
//   Add(a, b), Store(float*, R), StoreMask(float*, R, M), MakeMask(int valid_lanes)
// then includes this file (still inside the anonymous namespace: no symbol here may be shared
// between ISA files, or the linker could pick an AVX-512 copy for a portable caller).
// No std:: templates are used here for the same reason.

#define IPS_SG_UNROLL _Pragma("GCC unroll 16")

// C[MR x NV*kW] tile (last vector masked by `mask`) = or += sum_p A(i, p) B(p, j).
template <int MR, int NV>
__attribute__((always_inline)) inline void Tile(int64_t k, const float* __restrict a, int64_t a_row,
                                                int64_t a_col, const float* __restrict b,
                                                int64_t ldb, float* __restrict c, int64_t ldc,
                                                typename V::M mask, bool accumulate) {
  typename V::R acc[MR][NV];
  IPS_SG_UNROLL for (int i = 0; i < MR; ++i) IPS_SG_UNROLL for (int j = 0; j < NV; ++j) acc[i][j] =
      V::Zero();
  for (int64_t p = 0; p < k; ++p) {
    const float* bp = b + p * ldb;
    typename V::R bv[NV];
    IPS_SG_UNROLL for (int j = 0; j + 1 < NV; ++j) bv[j] = V::Load(bp + j * V::kW);
    bv[NV - 1] = V::LoadMask(bp + (NV - 1) * V::kW, mask);
    const float* ap = a + p * a_col;
    IPS_SG_UNROLL for (int i = 0; i < MR; ++i) {
      const typename V::R ai = V::Set1(ap + i * a_row);
      IPS_SG_UNROLL for (int j = 0; j < NV; ++j) acc[i][j] = V::Fma(ai, bv[j], acc[i][j]);
    }
  }
  IPS_SG_UNROLL for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    IPS_SG_UNROLL for (int j = 0; j + 1 < NV; ++j) {
      typename V::R v = acc[i][j];
      if (accumulate) v = V::Add(v, V::Load(ci + j * V::kW));
      V::Store(ci + j * V::kW, v);
    }
    typename V::R v = acc[i][NV - 1];
    if (accumulate) v = V::Add(v, V::LoadMask(ci + (NV - 1) * V::kW, mask));
    V::StoreMask(ci + (NV - 1) * V::kW, v, mask);
  }
}

// The last `rows` (< R + 1) rows of a panel, one tile.
template <int NV, int R>
__attribute__((always_inline)) inline void TailRows(int64_t rows, int64_t k, const float* a,
                                                    int64_t a_row, int64_t a_col, const float* b,
                                                    int64_t ldb, float* c, int64_t ldc,
                                                    typename V::M mask, bool accumulate) {
  if constexpr (R >= 1) {
    if (rows == R) {
      Tile<R, NV>(k, a, a_row, a_col, b, ldb, c, ldc, mask, accumulate);
    } else {
      TailRows<NV, R - 1>(rows, k, a, a_row, a_col, b, ldb, c, ldc, mask, accumulate);
    }
  }
}

// All m rows of one column panel of NV vectors starting at column 0 of b and c.
template <int NV>
void Panel(int64_t m, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
           int64_t ldb, float* c, int64_t ldc, typename V::M mask, bool accumulate) {
  constexpr int kMr = V::Mr(NV);
  int64_t i = 0;
  for (; i + kMr <= m; i += kMr)
    Tile<kMr, NV>(k, a + i * a_row, a_row, a_col, b, ldb, c + i * ldc, ldc, mask, accumulate);
  TailRows<NV, kMr - 1>(m - i, k, a + i * a_row, a_row, a_col, b, ldb, c + i * ldc, ldc, mask,
                        accumulate);
}

void RunTiles(const ips::kernels::cpu::SmallGemmArgs<float>& g) {
  for (int64_t n0 = 0; n0 < g.n; n0 += V::kMaxNv * V::kW) {
    const int64_t rest = g.n - n0;
    const int64_t cols = rest < V::kMaxNv * V::kW ? rest : V::kMaxNv * V::kW;
    const int nv = static_cast<int>((cols + V::kW - 1) / V::kW);
    const typename V::M mask = V::MakeMask(static_cast<int>(cols - (nv - 1) * V::kW));
    const float* b = g.b + n0;
    float* c = g.c + n0;
    switch (nv) {
#define IPS_SG_CASE(NV)                                                                   \
  case NV:                                                                                \
    if constexpr (NV <= V::kMaxNv)                                                        \
      Panel<NV>(g.m, g.k, g.a, g.a_row, g.a_col, b, g.ldb, c, g.ldc, mask, g.accumulate); \
    break;
      IPS_SG_CASE(1)
      IPS_SG_CASE(2)
      IPS_SG_CASE(3)
      IPS_SG_CASE(4)
      IPS_SG_CASE(5)
#undef IPS_SG_CASE
      default:
        break;
    }
  }
}

#undef IPS_SG_UNROLL
