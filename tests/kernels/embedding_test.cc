// CPU tests of kernels/embedding.h: the optimized paths against scalar float64 references on
// fresh random inputs with NaN-poisoned outputs, finite-difference gradient checks of every
// backward (through dedup + scatter-add, the way the trainer uses them), dedup invariants on
// Zipf-heavy and all-unique key sets, and error reporting for bad input.
#include "kernels/embedding.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/tolerance.h"

namespace ips::kernels {
namespace {

using testing::AllClose;
using testing::FillUniform;
using testing::Poison;

// Zipf(s) sampler over [0, n) by inverse CDF: duplicate-heavy like real item histories.
class Zipf {
 public:
  Zipf(int64_t n, double s) : cdf_(n) {
    double acc = 0;
    for (int64_t k = 0; k < n; ++k) cdf_[k] = (acc += 1.0 / std::pow(k + 1.0, s));
    for (auto& c : cdf_) c /= acc;
  }
  int64_t Sample(Rng& rng) const {
    const double u = rng.Uniform();
    return std::min<int64_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin(),
                             static_cast<int64_t>(cdf_.size()) - 1);
  }

 private:
  std::vector<double> cdf_;
};

// Padded batch with lengths covering 0, 1 and max_len, and garbage in the padding (indices
// there must never be read: -1 would fail the index checks, huge values would fault).
struct PaddedBatch {
  int64_t batch = 0, max_len = 0;
  std::vector<int64_t> indices, lengths;
};

PaddedBatch MakePadded(Rng& rng, int64_t batch, int64_t max_len, int64_t rows, const Zipf* zipf) {
  PaddedBatch p;
  p.batch = batch;
  p.max_len = max_len;
  p.indices.assign(batch * max_len, -1);
  p.lengths.resize(batch);
  for (int64_t b = 0; b < batch; ++b) {
    int64_t len = static_cast<int64_t>(rng.UniformInt(max_len + 1));
    if (b == 0) len = 0;
    if (b == 1) len = std::min<int64_t>(1, max_len);
    if (b == 2) len = max_len;
    p.lengths[b] = len;
    for (int64_t t = 0; t < max_len; ++t) {
      p.indices[b * max_len + t] =
          t < len ? (zipf ? zipf->Sample(rng) : static_cast<int64_t>(rng.UniformInt(rows)))
                  : (t % 2 ? -1 : int64_t{1} << 60);
    }
  }
  return p;
}

struct JaggedBatch {
  int64_t batch = 0;
  std::vector<int64_t> indices, offsets;
  int64_t nnz() const { return offsets.back(); }
};

JaggedBatch MakeJagged(Rng& rng, int64_t batch, int64_t max_len, int64_t rows, const Zipf* zipf) {
  JaggedBatch j;
  j.batch = batch;
  j.offsets.push_back(0);
  for (int64_t b = 0; b < batch; ++b) {
    int64_t len = static_cast<int64_t>(rng.UniformInt(max_len + 1));
    if (b == 0) len = 0;
    if (b == 1) len = std::min<int64_t>(1, max_len);
    if (b == 2) len = max_len;
    for (int64_t t = 0; t < len; ++t)
      j.indices.push_back(zipf ? zipf->Sample(rng) : static_cast<int64_t>(rng.UniformInt(rows)));
    j.offsets.push_back(static_cast<int64_t>(j.indices.size()));
  }
  return j;
}

// ---- Scalar float64 references ---------------------------------------------------------

std::vector<double> RefGatherPadded(const std::vector<double>& table, int64_t dim,
                                    const PaddedBatch& p) {
  std::vector<double> out(p.batch * p.max_len * dim, 0.0);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t t = 0; t < p.lengths[b]; ++t)
      for (int64_t d = 0; d < dim; ++d)
        out[(b * p.max_len + t) * dim + d] = table[p.indices[b * p.max_len + t] * dim + d];
  return out;
}

std::vector<double> RefGatherJagged(const std::vector<double>& table, int64_t dim,
                                    const JaggedBatch& j) {
  std::vector<double> out(j.nnz() * dim);
  for (int64_t i = 0; i < j.nnz(); ++i)
    for (int64_t d = 0; d < dim; ++d) out[i * dim + d] = table[j.indices[i] * dim + d];
  return out;
}

// Pooled reference over a bag list: bag b = (indices pointer, length).
std::vector<double> RefPooled(const std::vector<double>& table, int64_t dim, int64_t batch,
                              const std::function<std::pair<const int64_t*, int64_t>(int64_t)>& bag,
                              Pooling mode) {
  std::vector<double> out(batch * dim, 0.0);
  for (int64_t b = 0; b < batch; ++b) {
    auto [idx, len] = bag(b);
    for (int64_t t = 0; t < len; ++t)
      for (int64_t d = 0; d < dim; ++d) out[b * dim + d] += table[idx[t] * dim + d];
    if (mode == Pooling::kMean && len > 0)
      for (int64_t d = 0; d < dim; ++d) out[b * dim + d] /= static_cast<double>(len);
  }
  return out;
}

// grad_table[r] = sum over contributions (r, src row, scale).
std::vector<double> RefScatter(int64_t rows, int64_t dim,
                               const std::vector<std::tuple<int64_t, const double*, double>>& c) {
  std::vector<double> out(rows * dim, 0.0);
  for (const auto& [r, src, scale] : c)
    for (int64_t d = 0; d < dim; ++d) out[r * dim + d] += scale * src[d];
  return out;
}

template <typename T>
std::vector<T> Cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// Runs a test body once without a pool and once on a 2-thread pool.
std::vector<std::unique_ptr<ThreadPool>> Pools() {
  std::vector<std::unique_ptr<ThreadPool>> pools;
  pools.push_back(nullptr);
  pools.push_back(std::make_unique<ThreadPool>(2));
  return pools;
}

template <typename T>
testing::Tolerance Tol() {
  return std::is_same_v<T, float> ? testing::Tolerance{1e-5, 1e-5}
                                  : testing::Tolerance{1e-12, 1e-12};
}

template <typename T>
class EmbeddingCpuTest : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(EmbeddingCpuTest, Types);

// ---- Forward vs reference ------------------------------------------------------------------

TYPED_TEST(EmbeddingCpuTest, GatherPaddedMatchesReference_D18_T50) {
  using T = TypeParam;
  Rng rng(1);
  const int64_t rows = 5000, dim = 18;
  std::vector<double> table(rows * dim);
  FillUniform(table, rng);
  const auto tt = Cast<T>(table);
  for (auto& pool : Pools()) {
    const PaddedBatch p = MakePadded(rng, 97, 50, rows, nullptr);
    std::vector<T> out(p.batch * p.max_len * dim);
    Poison(out);
    GatherPaddedArgs<T> a{tt.data(),        rows,    dim,       p.indices.data(),
                          p.lengths.data(), p.batch, p.max_len, out.data()};
    ASSERT_TRUE(GatherPadded(Context{Device::kCpu, pool.get()}, a).ok());
    EXPECT_TRUE(AllClose(out, RefGatherPadded(table, dim, p), Tol<T>()));
  }
}

TYPED_TEST(EmbeddingCpuTest, GatherJaggedMatchesReference_D36) {
  using T = TypeParam;
  Rng rng(2);
  const int64_t rows = 3000, dim = 36;
  std::vector<double> table(rows * dim);
  FillUniform(table, rng);
  const auto tt = Cast<T>(table);
  for (auto& pool : Pools()) {
    const JaggedBatch j = MakeJagged(rng, 131, 40, rows, nullptr);
    std::vector<T> out(j.nnz() * dim);
    Poison(out);
    GatherJaggedArgs<T> a{tt.data(),        rows,    dim,     j.indices.data(),
                          j.offsets.data(), j.batch, j.nnz(), out.data()};
    ASSERT_TRUE(GatherJagged(Context{Device::kCpu, pool.get()}, a).ok());
    EXPECT_TRUE(AllClose(out, RefGatherJagged(table, dim, j), Tol<T>()));
  }
}

TYPED_TEST(EmbeddingCpuTest, PooledPaddedAndJaggedMatchReference_SumMean_D7) {
  using T = TypeParam;
  Rng rng(3);
  const int64_t rows = 2000, dim = 7;
  std::vector<double> table(rows * dim);
  FillUniform(table, rng);
  const auto tt = Cast<T>(table);
  for (auto& pool : Pools()) {
    const Context ctx{Device::kCpu, pool.get()};
    for (Pooling mode : {Pooling::kSum, Pooling::kMean}) {
      const PaddedBatch p = MakePadded(rng, 83, 30, rows, nullptr);
      std::vector<T> out(p.batch * dim);
      Poison(out);
      PooledPaddedArgs<T> a{tt.data(), rows,      dim,  p.indices.data(), p.lengths.data(),
                            p.batch,   p.max_len, mode, out.data()};
      ASSERT_TRUE(PooledPadded(ctx, a).ok());
      auto pbag = [&](int64_t b) {
        return std::make_pair(p.indices.data() + b * p.max_len, p.lengths[b]);
      };
      EXPECT_TRUE(AllClose(out, RefPooled(table, dim, p.batch, pbag, mode), Tol<T>()));

      const JaggedBatch j = MakeJagged(rng, 77, 30, rows, nullptr);
      std::vector<T> jout(j.batch * dim);
      Poison(jout);
      PooledJaggedArgs<T> ja{tt.data(), rows,    dim,  j.indices.data(), j.offsets.data(),
                             j.batch,   j.nnz(), mode, jout.data()};
      ASSERT_TRUE(PooledJagged(ctx, ja).ok());
      auto jbag = [&](int64_t b) {
        return std::make_pair(j.indices.data() + j.offsets[b], j.offsets[b + 1] - j.offsets[b]);
      };
      EXPECT_TRUE(AllClose(jout, RefPooled(table, dim, j.batch, jbag, mode), Tol<T>()));
    }
  }
}

// ---- Backward vs reference -----------------------------------------------------------------

TYPED_TEST(EmbeddingCpuTest, ScatterAddDirectAndSegmentMatchReference_ZipfAndUnique) {
  using T = TypeParam;
  Rng rng(4);
  const int64_t dim = 18;
  for (bool zipf_keys : {true, false}) {
    const int64_t n = 4000, u = zipf_keys ? 700 : 4000;
    Zipf zipf(u, 1.1);
    std::vector<int64_t> inverse(n);
    if (zipf_keys) {
      for (auto& x : inverse) x = zipf.Sample(rng);
    } else {
      std::iota(inverse.begin(), inverse.end(), 0);
      for (int64_t i = n - 1; i > 0; --i) std::swap(inverse[i], inverse[rng.UniformInt(i + 1)]);
    }
    std::vector<double> grad(n * dim);
    FillUniform(grad, rng);
    std::vector<std::tuple<int64_t, const double*, double>> contrib;
    for (int64_t i = 0; i < n; ++i) contrib.emplace_back(inverse[i], &grad[i * dim], 1.0);
    const auto want = RefScatter(u, dim, contrib);
    const auto gt = Cast<T>(grad);
    for (auto& pool : Pools()) {
      std::vector<T> direct(u * dim), segment(u * dim), prod(u * dim);
      Poison(direct);
      Poison(segment);
      Poison(prod);
      ScatterAddArgs<T> a{gt.data(), inverse.data(), n, dim, u, direct.data()};
      ASSERT_TRUE(ScatterAddCpu(pool.get(), a, ScatterAlgo::kDirect).ok());
      a.grad_unique = segment.data();
      ASSERT_TRUE(ScatterAddCpu(pool.get(), a, ScatterAlgo::kSegment).ok());
      a.grad_unique = prod.data();
      ASSERT_TRUE(ScatterAdd(Context{Device::kCpu, pool.get()}, a).ok());
      EXPECT_TRUE(AllClose(direct, want, Tol<T>()));
      // Both sum each row in increasing i order: bit-identical.
      EXPECT_TRUE(AllClose(segment, direct, {0.0, 0.0}));
      EXPECT_TRUE(AllClose(prod, direct, {0.0, 0.0}));
    }
  }
}

TYPED_TEST(EmbeddingCpuTest, PaddedAndPooledBackwardMatchReference_D18) {
  using T = TypeParam;
  Rng rng(5);
  const int64_t rows = 600, dim = 18;
  Zipf zipf(rows, 1.05);
  for (auto& pool : Pools()) {
    const Context ctx{Device::kCpu, pool.get()};
    const PaddedBatch p = MakePadded(rng, 64, 50, rows, &zipf);
    // Gather backward.
    std::vector<double> g3(p.batch * p.max_len * dim);
    FillUniform(g3, rng);
    std::vector<std::tuple<int64_t, const double*, double>> c3;
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t t = 0; t < p.lengths[b]; ++t)
        c3.emplace_back(p.indices[b * p.max_len + t], &g3[(b * p.max_len + t) * dim], 1.0);
    const auto g3t = Cast<T>(g3);
    std::vector<T> out(rows * dim);
    Poison(out);
    GatherPaddedBackwardArgs<T> ga{
        g3t.data(), p.indices.data(), p.lengths.data(), p.batch, p.max_len, dim, rows, out.data()};
    ASSERT_TRUE(GatherPaddedBackward(ctx, ga).ok());
    EXPECT_TRUE(AllClose(out, RefScatter(rows, dim, c3), Tol<T>()));
    // Pooled backward, padded and jagged.
    const JaggedBatch j = MakeJagged(rng, 64, 50, rows, &zipf);
    std::vector<double> g2(p.batch * dim);
    FillUniform(g2, rng);
    const auto g2t = Cast<T>(g2);
    for (Pooling mode : {Pooling::kSum, Pooling::kMean}) {
      std::vector<std::tuple<int64_t, const double*, double>> cp, cj;
      for (int64_t b = 0; b < p.batch; ++b) {
        const double s = mode == Pooling::kMean && p.lengths[b] > 0 ? 1.0 / p.lengths[b] : 1.0;
        for (int64_t t = 0; t < p.lengths[b]; ++t)
          cp.emplace_back(p.indices[b * p.max_len + t], &g2[b * dim], s);
        const int64_t jl = j.offsets[b + 1] - j.offsets[b];
        const double js = mode == Pooling::kMean && jl > 0 ? 1.0 / jl : 1.0;
        for (int64_t k = j.offsets[b]; k < j.offsets[b + 1]; ++k)
          cj.emplace_back(j.indices[k], &g2[b * dim], js);
      }
      Poison(out);
      PooledPaddedBackwardArgs<T> pa{
          g2t.data(), p.indices.data(), p.lengths.data(), p.batch, p.max_len, dim, mode,
          rows,       out.data()};
      ASSERT_TRUE(PooledPaddedBackward(ctx, pa).ok());
      EXPECT_TRUE(AllClose(out, RefScatter(rows, dim, cp), Tol<T>()));
      Poison(out);
      PooledJaggedBackwardArgs<T> ja{
          g2t.data(), j.indices.data(), j.offsets.data(), j.batch, j.nnz(), dim, mode,
          rows,       out.data()};
      ASSERT_TRUE(PooledJaggedBackward(ctx, ja).ok());
      EXPECT_TRUE(AllClose(out, RefScatter(rows, dim, cj), Tol<T>()));
    }
  }
}

// ---- Dedup -------------------------------------------------------------------------------

void ExpectValidDedup(const std::vector<int64_t>& keys, const std::vector<int64_t>& unique,
                      int64_t u, const std::vector<int64_t>& inverse, bool first_occurrence,
                      bool ascending) {
  ASSERT_GE(u, keys.empty() ? 0 : 1);
  ASSERT_LE(u, static_cast<int64_t>(keys.size()));
  const std::set<int64_t> distinct(keys.begin(), keys.end());
  const std::set<int64_t> got(unique.begin(), unique.begin() + u);
  EXPECT_EQ(static_cast<int64_t>(got.size()), u) << "unique_keys holds a duplicate";
  EXPECT_EQ(got, distinct);
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_GE(inverse[i], 0);
    ASSERT_LT(inverse[i], u);
    ASSERT_EQ(unique[inverse[i]], keys[i]) << "at i = " << i;
  }
  if (first_occurrence) {
    // The k-th unique key is the k-th distinct key met scanning keys left to right.
    int64_t next = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      ASSERT_LE(inverse[i], next);
      if (inverse[i] == next) ++next;
    }
  }
  if (ascending) {
    EXPECT_TRUE(std::is_sorted(unique.begin(), unique.begin() + u));
  }
}

TEST(DedupCpu, HashAndSortProduceValidDedup_ZipfAllUniqueAndEdgeSizes) {
  Rng rng(6);
  Zipf zipf(5000, 1.2);
  for (int64_t n : {0, 1, 2, 17, 25600}) {
    for (int kind = 0; kind < 3; ++kind) {
      std::vector<int64_t> keys(n);
      for (int64_t i = 0; i < n; ++i) {
        if (kind == 0) keys[i] = zipf.Sample(rng) * 7919 - 100000;    // duplicate-heavy, negatives
        if (kind == 1) keys[i] = static_cast<int64_t>(Mix64(i + 1));  // all unique, full 64 bits
        if (kind == 2) keys[i] = 42;                                  // one key
      }
      for (bool use_sort : {false, true}) {
        std::vector<int64_t> unique(n), inverse(n);
        std::fill(unique.begin(), unique.end(), -777);
        std::fill(inverse.begin(), inverse.end(), -777);
        int64_t u = -1;
        DedupArgs a{keys.data(), n, unique.data(), inverse.data(), &u};
        ASSERT_TRUE((use_sort ? DedupKeysSortCpu(a) : DedupKeys(Context{}, a)).ok());
        SCOPED_TRACE("n=" + std::to_string(n) + " kind=" + std::to_string(kind) +
                     (use_sort ? " sort" : " hash"));
        ExpectValidDedup(keys, unique, u, inverse, !use_sort, use_sort);
        if (kind == 1) {
          EXPECT_EQ(u, n);
        }
        if (kind == 2) {
          EXPECT_EQ(u, n > 0 ? 1 : 0);
        }
      }
    }
  }
}

TEST(DedupCpu, CallerWorkspaceIsUsedAndReusable) {
  Rng rng(7);
  const int64_t n = 3000;
  auto bytes = DedupWorkspaceBytes(Context{}, n);
  ASSERT_TRUE(bytes.ok());
  std::vector<char> ws(*bytes);
  for (int round = 0; round < 3; ++round) {
    std::vector<int64_t> keys(n), unique(n), inverse(n);
    for (auto& k : keys) k = static_cast<int64_t>(rng.UniformInt(1000 + 500 * round));
    int64_t u = -1;
    DedupArgs a{keys.data(), n, unique.data(), inverse.data(), &u, ws.data(), ws.size()};
    ASSERT_TRUE(DedupKeys(Context{}, a).ok());
    ExpectValidDedup(keys, unique, u, inverse, true, false);
  }
}

// ---- Gradient checks (float64, through dedup + scatter-add) ----------------------------------
//
// The trainer's pipeline: keys -> DedupKeys -> pull table[unique] as a [u x dim] local table ->
// forward with inverse as indices; backward -> grad_unique [u x dim] -> pushed to rows unique.
// Here loss(table) = Dot(forward(table), upstream) and the pushed gradient, scattered back into
// a full-table gradient, must match central differences wrt every table element.

struct Pipeline {
  std::vector<int64_t> unique;   // [u]
  std::vector<int64_t> inverse;  // [n]
  int64_t u = 0;
};

Pipeline Dedup(const std::vector<int64_t>& keys) {
  Pipeline p;
  const int64_t n = static_cast<int64_t>(keys.size());
  p.unique.resize(n);
  p.inverse.resize(n);
  DedupArgs a{keys.data(), n, p.unique.data(), p.inverse.data(), &p.u};
  EXPECT_TRUE(DedupKeys(Context{}, a).ok());
  p.unique.resize(p.u);
  return p;
}

std::vector<double> Pull(const std::vector<double>& table, int64_t dim,
                         const std::vector<int64_t>& unique) {
  std::vector<double> local(unique.size() * dim);
  for (size_t k = 0; k < unique.size(); ++k)
    std::copy(&table[unique[k] * dim], &table[unique[k] * dim] + dim, &local[k * dim]);
  return local;
}

std::vector<double> PushToTable(const std::vector<double>& grad_unique, int64_t rows, int64_t dim,
                                const std::vector<int64_t>& unique) {
  std::vector<double> g(rows * dim, 0.0);
  for (size_t k = 0; k < unique.size(); ++k)
    for (int64_t d = 0; d < dim; ++d) g[unique[k] * dim + d] += grad_unique[k * dim + d];
  return g;
}

// Padded: keys at valid positions are de-duplicated; inverse is scattered back into a padded
// index array whose padding holds garbage.
TEST(EmbeddingGradCheck, GatherPadded_D5_T6_Zipf) {
  Rng rng(8);
  const int64_t rows = 40, dim = 5;
  Zipf zipf(rows, 1.0);
  const PaddedBatch p = MakePadded(rng, 7, 6, rows, &zipf);
  std::vector<int64_t> keys;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t t = 0; t < p.lengths[b]; ++t) keys.push_back(p.indices[b * p.max_len + t]);
  const Pipeline pl = Dedup(keys);
  std::vector<int64_t> inv_padded(p.batch * p.max_len, -5);
  for (int64_t b = 0, k = 0; b < p.batch; ++b)
    for (int64_t t = 0; t < p.lengths[b]; ++t) inv_padded[b * p.max_len + t] = pl.inverse[k++];
  std::vector<double> table(rows * dim), upstream(p.batch * p.max_len * dim);
  FillUniform(table, rng);
  FillUniform(upstream, rng);
  auto loss = [&] {
    const auto local = Pull(table, dim, pl.unique);
    std::vector<double> out(upstream.size());
    GatherPaddedArgs<double> a{local.data(),     pl.u,    dim,       inv_padded.data(),
                               p.lengths.data(), p.batch, p.max_len, out.data()};
    EXPECT_TRUE(GatherPadded(Context{}, a).ok());
    return testing::Dot(out, upstream);
  };
  std::vector<double> gu(pl.u * dim);
  Poison(gu);
  GatherPaddedBackwardArgs<double> ga{
      upstream.data(), inv_padded.data(), p.lengths.data(), p.batch, p.max_len, dim, pl.u,
      gu.data()};
  ASSERT_TRUE(GatherPaddedBackward(Context{}, ga).ok());
  EXPECT_TRUE(testing::CheckGradient("table", table, PushToTable(gu, rows, dim, pl.unique), loss));
}

TEST(EmbeddingGradCheck, GatherJagged_D4_Zipf_ThroughScatterAdd) {
  Rng rng(9);
  const int64_t rows = 30, dim = 4;
  Zipf zipf(rows, 1.1);
  const JaggedBatch j = MakeJagged(rng, 6, 7, rows, &zipf);
  const Pipeline pl = Dedup(j.indices);
  std::vector<double> table(rows * dim), upstream(j.nnz() * dim);
  FillUniform(table, rng);
  FillUniform(upstream, rng);
  auto loss = [&] {
    const auto local = Pull(table, dim, pl.unique);
    std::vector<double> out(upstream.size());
    GatherJaggedArgs<double> a{local.data(),     pl.u,    dim,     pl.inverse.data(),
                               j.offsets.data(), j.batch, j.nnz(), out.data()};
    EXPECT_TRUE(GatherJagged(Context{}, a).ok());
    return testing::Dot(out, upstream);
  };
  std::vector<double> gu(pl.u * dim);
  Poison(gu);
  ScatterAddArgs<double> sa{upstream.data(), pl.inverse.data(), j.nnz(), dim, pl.u, gu.data()};
  ASSERT_TRUE(ScatterAdd(Context{}, sa).ok());
  EXPECT_TRUE(testing::CheckGradient("table", table, PushToTable(gu, rows, dim, pl.unique), loss));
}

TEST(EmbeddingGradCheck, PooledPaddedAndJagged_SumMean_D3_Zipf) {
  Rng rng(10);
  const int64_t rows = 25, dim = 3;
  Zipf zipf(rows, 1.2);
  ThreadPool pool(2);
  for (Pooling mode : {Pooling::kSum, Pooling::kMean}) {
    SCOPED_TRACE(mode == Pooling::kSum ? "sum" : "mean");
    // Padded.
    const PaddedBatch p = MakePadded(rng, 6, 8, rows, &zipf);
    std::vector<int64_t> keys;
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t t = 0; t < p.lengths[b]; ++t) keys.push_back(p.indices[b * p.max_len + t]);
    const Pipeline pl = Dedup(keys);
    std::vector<int64_t> inv_padded(p.batch * p.max_len, -5);
    for (int64_t b = 0, k = 0; b < p.batch; ++b)
      for (int64_t t = 0; t < p.lengths[b]; ++t) inv_padded[b * p.max_len + t] = pl.inverse[k++];
    std::vector<double> table(rows * dim), upstream(p.batch * dim);
    FillUniform(table, rng);
    FillUniform(upstream, rng);
    auto loss = [&] {
      const auto local = Pull(table, dim, pl.unique);
      std::vector<double> out(upstream.size());
      PooledPaddedArgs<double> a{local.data(), pl.u,      dim,  inv_padded.data(), p.lengths.data(),
                                 p.batch,      p.max_len, mode, out.data()};
      EXPECT_TRUE(PooledPadded(Context{Device::kCpu, &pool}, a).ok());
      return testing::Dot(out, upstream);
    };
    std::vector<double> gu(pl.u * dim);
    Poison(gu);
    PooledPaddedBackwardArgs<double> ba{
        upstream.data(), inv_padded.data(), p.lengths.data(), p.batch, p.max_len, dim, mode, pl.u,
        gu.data()};
    ASSERT_TRUE(PooledPaddedBackward(Context{Device::kCpu, &pool}, ba).ok());
    EXPECT_TRUE(
        testing::CheckGradient("padded", table, PushToTable(gu, rows, dim, pl.unique), loss));

    // Jagged.
    const JaggedBatch j = MakeJagged(rng, 6, 8, rows, &zipf);
    const Pipeline jl = Dedup(j.indices);
    std::vector<double> jup(j.batch * dim);
    FillUniform(jup, rng);
    auto jloss = [&] {
      const auto local = Pull(table, dim, jl.unique);
      std::vector<double> out(jup.size());
      PooledJaggedArgs<double> a{local.data(), jl.u,    dim,  jl.inverse.data(), j.offsets.data(),
                                 j.batch,      j.nnz(), mode, out.data()};
      EXPECT_TRUE(PooledJagged(Context{}, a).ok());
      return testing::Dot(out, jup);
    };
    std::vector<double> jgu(jl.u * dim);
    Poison(jgu);
    PooledJaggedBackwardArgs<double> jb{
        jup.data(), jl.inverse.data(), j.offsets.data(), j.batch, j.nnz(), dim, mode,
        jl.u,       jgu.data()};
    ASSERT_TRUE(PooledJaggedBackward(Context{}, jb).ok());
    EXPECT_TRUE(
        testing::CheckGradient("jagged", table, PushToTable(jgu, rows, dim, jl.unique), jloss));
  }
}

// ---- Bad input ---------------------------------------------------------------------------

TEST(EmbeddingCpuErrors, BadIndexLengthOffsetAreReportedWithPosition) {
  const int64_t rows = 10, dim = 4;
  std::vector<float> table(rows * dim, 1.f), out(3 * 4 * dim);
  std::vector<int64_t> idx = {1, 2, 3, 4, 5, 10, 7, 8, 9, 0, 1, 2};  // idx[5] = 10 is bad
  std::vector<int64_t> len = {4, 4, 4};
  ThreadPool pool(2);
  const Context ctx{Device::kCpu, &pool};
  GatherPaddedArgs<float> a{table.data(), rows, dim, idx.data(), len.data(), 3, 4, out.data()};
  Status s = GatherPadded(ctx, a);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("indices[5] = 10"), std::string::npos) << s;
  std::vector<float> pooled(3 * dim);
  PooledPaddedArgs<float> pa{table.data(),   rows,         dim, idx.data(), len.data(), 3, 4,
                             Pooling::kMean, pooled.data()};
  s = PooledPadded(ctx, pa);
  EXPECT_NE(s.message().find("indices[5] = 10"), std::string::npos) << s;
  len[1] = 1;  // now position 5 is padding: fine
  EXPECT_TRUE(GatherPadded(ctx, a).ok());
  EXPECT_TRUE(PooledPadded(ctx, pa).ok());
  len[2] = 5;
  s = GatherPadded(ctx, a);
  EXPECT_NE(s.message().find("lengths[2] = 5"), std::string::npos) << s;
  len[2] = -1;
  EXPECT_EQ(GatherPadded(ctx, a).code(), StatusCode::kInvalidArgument);

  std::vector<int64_t> offsets = {0, 4, 3, 12};
  GatherJaggedArgs<float> j{table.data(), rows, dim, idx.data(), offsets.data(), 3, 12, out.data()};
  s = GatherJagged(ctx, j);
  EXPECT_NE(s.message().find("offsets[2] = 3"), std::string::npos) << s;
  offsets = {0, 4, 8, 11};
  s = GatherJagged(ctx, j);
  EXPECT_NE(s.message().find("!= nnz = 12"), std::string::npos) << s;
  idx[5] = -3;
  offsets = {0, 4, 8, 12};
  s = GatherJagged(ctx, j);
  EXPECT_NE(s.message().find("indices[5] = -3"), std::string::npos) << s;
  PooledJaggedArgs<float> pj{table.data(),  rows,         dim, idx.data(), offsets.data(), 3, 12,
                             Pooling::kSum, pooled.data()};
  s = PooledJagged(ctx, pj);
  EXPECT_NE(s.message().find("indices[5] = -3"), std::string::npos) << s;

  std::vector<float> g(12 * dim, 1.f), gu(5 * dim);
  std::vector<int64_t> inv(12, 0);
  inv[11] = 5;
  ScatterAddArgs<float> sa{g.data(), inv.data(), 12, dim, 5, gu.data()};
  s = ScatterAdd(ctx, sa);
  EXPECT_NE(s.message().find("inverse[11] = 5"), std::string::npos) << s;
  sa.n = -1;
  EXPECT_EQ(ScatterAdd(ctx, sa).code(), StatusCode::kInvalidArgument);
  a.table = nullptr;
  EXPECT_EQ(GatherPadded(ctx, a).code(), StatusCode::kInvalidArgument);
}

// The forward ops hand bags / rows to the pool's threads in blocks of 16 bags / 1024 rows, in
// order, and stop handing out blocks after an error: the error must still name the smallest bad
// position whichever thread finds which, with several bad ones in different blocks.
TEST(EmbeddingCpuErrors, SmallestBadIndexIsReportedAcrossBlocks) {
  // Wide rows make a block take long enough (tens of microseconds) that both threads of the
  // pool really are inside blocks at once.
  const int64_t rows = 100, dim = 2048, batch = 300, max_len = 8, n = batch * max_len;
  Rng rng(11);
  std::vector<float> table(rows * dim), out(n * dim), pooled(batch * dim);
  for (auto& x : table) x = rng.UniformFloat();
  std::vector<int64_t> idx(n), len(batch, max_len), offsets(batch + 1);
  for (auto& i : idx) i = static_cast<int64_t>(rng.UniformInt(rows));
  for (int64_t b = 0; b <= batch; ++b) offsets[b] = b * max_len;
  // Sets of bad positions; the report must name the smallest of each. The last two put one
  // late in block 0 and one at the end of block 1 (padded: 128 positions per block, gather
  // jagged: 1024), so the caller and the pool thread each find one, the smaller one first.
  const std::vector<std::vector<int64_t>> cases = {
      {250 * max_len + 3},
      {250 * max_len + 3, 40 * max_len + 6, 130 * max_len},
      {0, 250 * max_len + 3, 40 * max_len + 6},
      {100, 255},
      {1000, 2047}};
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    const Context ctx{Device::kCpu, &pool};
    for (const auto& bad : cases) {
      std::vector<int64_t> cur = idx;
      for (size_t k = 0; k < bad.size(); ++k) cur[bad[k]] = k % 2 ? -7 : rows + 5;
      const int64_t first = *std::min_element(bad.begin(), bad.end());
      const std::string want =
          "indices[" + std::to_string(first) + "] = " + std::to_string(cur[first]) + " is";
      for (int rep = 0; rep < 10; ++rep) {  // thread interleavings vary run to run
        GatherPaddedArgs<float> g{table.data(), rows,  dim,     cur.data(),
                                  len.data(),   batch, max_len, out.data()};
        Status s = GatherPadded(ctx, g);
        ASSERT_NE(s.message().find(want), std::string::npos) << s << " want " << want;
        PooledPaddedArgs<float> pp{table.data(), rows,    dim,           cur.data(),   len.data(),
                                   batch,        max_len, Pooling::kSum, pooled.data()};
        s = PooledPadded(ctx, pp);
        ASSERT_NE(s.message().find(want), std::string::npos) << s << " want " << want;
        GatherJaggedArgs<float> gj{table.data(),   rows,  dim, cur.data(),
                                   offsets.data(), batch, n,   out.data()};
        s = GatherJagged(ctx, gj);
        ASSERT_NE(s.message().find(want), std::string::npos) << s << " want " << want;
        PooledJaggedArgs<float> pj{table.data(), rows, dim,           cur.data(),   offsets.data(),
                                   batch,        n,    Pooling::kSum, pooled.data()};
        s = PooledJagged(ctx, pj);
        ASSERT_NE(s.message().find(want), std::string::npos) << s << " want " << want;
      }
    }
  }
}

TEST(EmbeddingCpuErrors, CudaRequestWithoutCudaBuildIsUnimplemented) {
  if (CudaBuilt()) GTEST_SKIP() << "this build has CUDA";
  std::vector<float> table(8, 1.f), out(8);
  std::vector<int64_t> idx = {0, 1}, len = {2};
  GatherPaddedArgs<float> a{table.data(), 4, 2, idx.data(), len.data(), 1, 2, out.data()};
  EXPECT_EQ(GatherPadded(Context{Device::kCuda}, a).code(), StatusCode::kUnimplemented);
  std::vector<int64_t> unique(2), inverse(2);
  int64_t u = 0;
  DedupArgs d{idx.data(), 2, unique.data(), inverse.data(), &u};
  EXPECT_EQ(DedupKeys(Context{Device::kCuda}, d).code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace ips::kernels
