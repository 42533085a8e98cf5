// Tests of kernels/cpu/small_gemm.h (the single-threaded GEMM of the CPU attention unit and of
// the float Linear layers): every ISA path compiled into this build and supported by this CPU
// against a float64 loop on fresh random inputs with NaN-poisoned outputs (odd sizes, every tail,
// k = 0, accumulate on and off, transposed A views), row-split invariance (what makes the
// attention backward's results independent of the thread count), the double path, and
// LinearBackward's float path, which runs its GEMMs through SmallGemm on the pool.
#include "kernels/cpu/small_gemm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <tuple>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"
#include "kernels/linear.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/tolerance.h"

namespace ips::kernels {
namespace {

using cpu::SmallGemmArgs;
using cpu::SmallGemmIsa;
using testing::AllClose;
using testing::FillUniform;
using testing::Poison;

constexpr SmallGemmIsa kAllIsas[] = {SmallGemmIsa::kAvx512, SmallGemmIsa::kAvx2,
                                     SmallGemmIsa::kPortable};

bool IsaAvailable(SmallGemmIsa isa) {
  SmallGemmArgs<float> probe;  // m = n = 0: runs nothing, reports availability
  return cpu::SmallGemmWithIsa(isa, probe);
}

// A(i, p) = a[i * a_row + p * a_col]: row-major [m x k], or the transposed view of a [k x m].
SmallGemmArgs<float> MakeArgs(int64_t m, int64_t n, int64_t k, bool trans, const float* a,
                              const float* b, int64_t ldb, float* c, int64_t ldc, bool acc) {
  return cpu::MakeSmallGemmArgs(m, n, k, a, trans ? 1 : k, trans ? m : 1, b, ldb, c, ldc, acc);
}

// Fresh random A and B; C random when the product accumulates into it, NaN-poisoned otherwise.
template <typename T>
void FillOperands(Rng& rng, bool acc, std::vector<T>* a, std::vector<T>* b, std::vector<T>* c) {
  FillUniform(*a, rng);
  FillUniform(*b, rng);
  if (acc) {
    FillUniform(*c, rng);
  } else {
    Poison(*c);
  }
}

// The [m x n] product g describes, in float64 over g's A and B; c0 is C before the call (its
// values are added when g accumulates).
template <typename T>
std::vector<double> Float64Product(const SmallGemmArgs<T>& g, const std::vector<T>& c0) {
  std::vector<double> want;
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) {
      double sum = g.accumulate ? c0[i * g.ldc + j] : 0.0;
      for (int64_t p = 0; p < g.k; ++p)
        sum += static_cast<double>(g.a[i * g.a_row + p * g.a_col]) * g.b[p * g.ldb + j];
      want.push_back(sum);
    }
  return want;
}

// Every compiled ISA path against a float64 loop: strided (plain and transposed) A, column tails
// of every width mod 8 and 16 and several column panels, row tails of every tile height, k = 0,
// C poisoned (plain) or random (accumulate), and padding columns of C (ldc > n) never written.
TEST(SmallGemm, EveryIsaMatchesFloat64Loop_TailsTransposedAccumulate) {
  Rng rng(71);
  int ran = 0;
  for (SmallGemmIsa isa : kAllIsas) {
    if (!IsaAvailable(isa)) {
      std::printf("SmallGemm %s: not in this build or not supported by this CPU\n",
                  cpu::SmallGemmIsaName(isa));
      continue;
    }
    ++ran;
    for (int64_t m : {1, 3, 7, 9, 50, 203})
      for (int64_t n : {1, 7, 8, 15, 17, 40, 72, 80, 108, 130})
        for (int64_t k : {0, 1, 36, 80})
          for (bool trans : {false, true})
            for (bool acc : {false, true}) {
              const int64_t ldb = n + 3, ldc = n + 5;
              std::vector<float> a(m * k + 1), b(k * ldb + 1), c(m * ldc);
              FillOperands(rng, acc, &a, &b, &c);
              std::vector<float> out = c;
              const auto g =
                  MakeArgs(m, n, k, trans, a.data(), b.data(), ldb, out.data(), ldc, acc);
              const std::vector<double> want = Float64Product(g, c);
              std::vector<float> got;
              ASSERT_TRUE(cpu::SmallGemmWithIsa(isa, g));
              for (int64_t i = 0; i < m; ++i) {
                for (int64_t j = 0; j < n; ++j) got.push_back(out[i * ldc + j]);
                for (int64_t j = n; j < ldc; ++j) {
                  const float before = c[i * ldc + j], after = out[i * ldc + j];
                  ASSERT_TRUE(std::isnan(before) ? std::isnan(after) : after == before)
                      << cpu::SmallGemmIsaName(isa) << ": column " << j << " beyond n=" << n
                      << " was written";
                }
              }
              ASSERT_TRUE(AllClose(got, want, {1e-5, 1e-5}))
                  << cpu::SmallGemmIsaName(isa) << " m=" << m << " n=" << n << " k=" << k
                  << " trans=" << trans << " acc=" << acc;
            }
  }
  EXPECT_TRUE(IsaAvailable(SmallGemmIsa::kPortable));
  EXPECT_GE(ran, 1);
  std::printf("SmallGemm<float> selected: %s\n",
              cpu::SmallGemmIsaName(cpu::SmallGemmSelectedIsa()));
}

// Each element is one chain of products over p in order, so computing C in row blocks (as the
// callers' thread-pool chunks do) gives bitwise the result of one call, and the public entry
// point gives bitwise the result of the ISA it selected.
TEST(SmallGemm, RowSplitAndDispatchAreBitwiseIdentical) {
  Rng rng(72);
  const int64_t m = 57, n = 83, k = 45;
  std::vector<float> a(m * k), b(k * n);
  FillUniform(a, rng);
  FillUniform(b, rng);
  for (SmallGemmIsa isa : kAllIsas) {
    if (!IsaAvailable(isa)) continue;
    for (bool trans : {false, true}) {
      std::vector<float> whole(m * n), split(m * n);
      Poison(whole);
      Poison(split);
      ASSERT_TRUE(cpu::SmallGemmWithIsa(
          isa, MakeArgs(m, n, k, trans, a.data(), b.data(), n, whole.data(), n, false)));
      for (int64_t r0 = 0; r0 < m; r0 += 13) {
        const int64_t rows = std::min<int64_t>(13, m - r0);
        auto g =
            MakeArgs(rows, n, k, trans, a.data(), b.data(), n, split.data() + r0 * n, n, false);
        g.a = a.data() + r0 * g.a_row;
        // The transposed view's column stride is the full m, not the block's row count.
        if (trans) g.a_col = m;
        ASSERT_TRUE(cpu::SmallGemmWithIsa(isa, g));
      }
      for (int64_t i = 0; i < m * n; ++i)
        ASSERT_EQ(whole[i], split[i]) << cpu::SmallGemmIsaName(isa) << " trans=" << trans;
      if (isa == cpu::SmallGemmSelectedIsa()) {
        std::vector<float> disp(m * n);
        Poison(disp);
        cpu::SmallGemm(MakeArgs(m, n, k, trans, a.data(), b.data(), n, disp.data(), n, false));
        for (int64_t i = 0; i < m * n; ++i) ASSERT_EQ(whole[i], disp[i]);
      }
    }
  }
}

TEST(SmallGemm, DoubleMatchesLoop_TransposedA_Accumulate_KZero) {
  Rng rng(73);
  for (int64_t k : {0, 13})
    for (bool acc : {false, true}) {
      const int64_t m = 11, n = 21;
      std::vector<double> a(k * m + 1), b(k * n + 1), c(m * n);
      FillOperands(rng, acc, &a, &b, &c);
      // A is the transposed view of a [k x m]: A(i, p) = a[p * m + i].
      const auto g =
          cpu::MakeSmallGemmArgs(m, n, k, a.data(), int64_t{1}, m, b.data(), n, c.data(), n, acc);
      const std::vector<double> want = Float64Product(g, c);
      cpu::SmallGemm(g);
      EXPECT_TRUE(AllClose(c, want, {1e-13, 1e-12})) << "k=" << k << " acc=" << acc;
    }
}

// LinearBackward (kernels/linear.h) runs its float GEMMs through SmallGemm on the pool for
// layers up to 512 wide: dW, dx and db against a float64 loop, at the DIN top-MLP shapes and odd
// sizes, single-threaded and on a pool, every output poisoned before the run.
TEST(SmallGemm, LinearBackwardFloatMatchesFloat64_DinMlpShapes_ThreadPool) {
  ThreadPool pool(2);
  Rng rng(79);
  for (auto [rows, in, out] : {std::tuple<int64_t, int64_t, int64_t>{512, 108, 200},
                               {512, 200, 80},
                               {512, 80, 1},
                               {7, 3, 5},
                               {1, 1, 1}}) {
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      std::vector<float> x(rows * in), w(out * in), y(rows * out), dy(rows * out);
      FillUniform(x, rng);
      FillUniform(w, rng, -0.2f, 0.2f);
      FillUniform(y, rng);
      FillUniform(dy, rng);
      std::vector<float> dpre(rows * out), dx(rows * in), dw(out * in), db(out);
      Poison(dpre);
      Poison(dx);
      Poison(dw);
      Poison(db);
      LinearArgs<float> a;
      a.rows = rows;
      a.in = in;
      a.out = out;
      a.act = Activation::kIdentity;
      a.x = x.data();
      a.w = w.data();
      a.y = y.data();
      a.dy = dy.data();
      a.dpre = dpre.data();
      a.dx = dx.data();
      a.dw = dw.data();
      a.dbias = db.data();
      Context ctx;
      ctx.pool = p;
      ASSERT_TRUE(LinearBackward(ctx, a).ok());
      std::vector<double> want_dx(rows * in, 0.0), want_dw(out * in, 0.0), want_db(out, 0.0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t o = 0; o < out; ++o) {
          const double g = dy[r * out + o];
          want_db[o] += g;
          for (int64_t i = 0; i < in; ++i) {
            want_dx[r * in + i] += g * w[o * in + i];
            want_dw[o * in + i] += g * x[r * in + i];
          }
        }
      const testing::Tolerance tol{2e-5, 1e-4};
      EXPECT_TRUE(AllClose(dx, want_dx, tol)) << "dx rows=" << rows << " in=" << in;
      EXPECT_TRUE(AllClose(dw, want_dw, tol)) << "dw rows=" << rows << " in=" << in;
      EXPECT_TRUE(AllClose(db, want_db, tol)) << "db rows=" << rows << " in=" << in;
    }
  }
}

}  // namespace
}  // namespace ips::kernels
