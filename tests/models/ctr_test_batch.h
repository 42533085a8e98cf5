// A small double-precision CTR batch for the models' CPU tests (gradient checks, staged-vs-plain
// comparisons): B = lengths.size() rows of T steps, rows D wide, indices drawn over a few pulled
// item and category rows (repeats, so the scatter-add sums several positions into one row), rows
// U(-1, 1), labels 1, 0, 1, ... A test batch with another layout (DIEN's negatives) derives from
// it, draws its own data and keeps Inputs().
#ifndef IPS_TESTS_MODELS_CTR_TEST_BATCH_H_
#define IPS_TESTS_MODELS_CTR_TEST_BATCH_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "common/random.h"
#include "models/model.h"
#include "tests/testing/gradcheck.h"

namespace ips::testing_util {

struct SmallCtrBatch {
  int64_t B, T, D;
  std::vector<int32_t> lengths;
  std::vector<int64_t> item_index, cat_index;  // [B x T] history, then B targets
  std::vector<double> item_rows, cat_rows, labels;
  int64_t num_item_rows, num_cat_rows;

  SmallCtrBatch(std::vector<int32_t> lens, int64_t t, int64_t d, int64_t item_row_count,
                int64_t cat_row_count, uint64_t seed)
      : B(static_cast<int64_t>(lens.size())),
        T(t),
        D(d),
        lengths(std::move(lens)),
        num_item_rows(item_row_count),
        num_cat_rows(cat_row_count) {
    Rng rng(seed);
    const int64_t n = B * T + B;
    item_index.resize(n);
    cat_index.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      item_index[i] = static_cast<int64_t>(rng.UniformInt(num_item_rows));
      cat_index[i] = static_cast<int64_t>(rng.UniformInt(num_cat_rows));
    }
    item_rows.resize(num_item_rows * D);
    cat_rows.resize(num_cat_rows * D);
    testing::FillUniform(item_rows, rng, -1.0, 1.0);
    testing::FillUniform(cat_rows, rng, -1.0, 1.0);
    labels.resize(B);
    for (int64_t b = 0; b < B; ++b) labels[b] = b % 2 == 0 ? 1.0 : 0.0;
  }
  models::CtrInputs<double> Inputs() const {
    models::CtrInputs<double> in;
    in.batch = B;
    in.lengths = lengths.data();
    in.item_index = item_index.data();
    in.cat_index = cat_index.data();
    in.item_rows = item_rows.data();
    in.num_item_rows = num_item_rows;
    in.cat_rows = cat_rows.data();
    in.num_cat_rows = num_cat_rows;
    in.labels = labels.data();
    return in;
  }

 protected:
  // For batches that draw their own indices, rows and labels (e.g. with auxiliary negatives):
  // the sizes and lengths only, everything else empty.
  SmallCtrBatch(std::vector<int32_t> lens, int64_t t, int64_t d, int64_t item_row_count,
                int64_t cat_row_count)
      : B(static_cast<int64_t>(lens.size())),
        T(t),
        D(d),
        lengths(std::move(lens)),
        num_item_rows(item_row_count),
        num_cat_rows(cat_row_count) {}
};

}  // namespace ips::testing_util

#endif  // IPS_TESTS_MODELS_CTR_TEST_BATCH_H_
