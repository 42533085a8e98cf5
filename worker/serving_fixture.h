// A "trained" model state to serve, built in-process, for the serving tests and serve_bench:
// owns the recipe (a config's CTR model, optionally with fresh random dense weights, and tables
// holding keys 1..n) and its round trip checkpoint -> `ips export` bundle -> Bundle::Load, plus
// the JSON request line `ips serve` reads. Header-only: it links against ips_worker like its
// users, so the tests and the bench need no extra library.
#ifndef IPS_WORKER_SERVING_FIXTURE_H_
#define IPS_WORKER_SERVING_FIXTURE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/status.h"
#include "proto/config_loader.h"
#include "ps/dynamic_table.h"
#include "worker/checkpoint.h"
#include "worker/model_factory.h"
#include "worker/serving.h"

namespace ips {

// What a checkpoint of a trained model holds; `content` points into `model` and `tables`.
struct ServingState {
  std::unique_ptr<models::CtrModel<float>> model;
  std::vector<std::unique_ptr<ps::DynamicTable>> tables;
  CheckpointContent content;
};

// The model of `config_text` (for `max_batch` rows) and one table per config table, in the
// config's order: `table` with the config table's name and dim and the padding key on, holding
// keys 1..table_rows[i] (pulled, so their rows come from the table's initializer). When
// weight_stddev > 0 the dense weights are replaced by weight_stddev * N(0, 1) draws from
// Rng(weight_seed): fresh values away from the init (PReLU alphas, zero biases). content holds the
// model's dense state, the tables and config_text.
inline StatusOr<std::unique_ptr<ServingState>> MakeServingState(
    const std::string& config_text, int64_t max_batch, const std::vector<int64_t>& table_rows,
    const ps::TableOptions& table, double weight_stddev, uint64_t weight_seed) {
  IPS_ASSIGN_OR_RETURN(config::Config cfg, ParseConfigText(config_text, "serving state config"));
  if (static_cast<size_t>(cfg.tables_size()) != table_rows.size())
    return InvalidArgumentError("MakeServingState: " + std::to_string(table_rows.size()) +
                                " table sizes for a config with " +
                                std::to_string(cfg.tables_size()) + " tables");
  auto state = std::make_unique<ServingState>();
  IPS_ASSIGN_OR_RETURN(state->model, CreateCtrModel(cfg, max_batch));
  if (weight_stddev > 0) {
    Rng rng(weight_seed);
    auto& p = state->model->params();
    for (int64_t i = 0; i < p.size(); ++i)
      p.values()[i] = static_cast<float>(weight_stddev * rng.Normal());
  }
  AddModelState(state->model.get(), nullptr, &state->content);
  for (int i = 0; i < cfg.tables_size(); ++i) {
    ps::TableOptions o = table;
    o.name = cfg.tables(i).name();
    o.dim = cfg.tables(i).dim();
    o.has_padding_key = true;
    IPS_ASSIGN_OR_RETURN(std::unique_ptr<ps::DynamicTable> t, ps::DynamicTable::Create(o));
    const int64_t n = table_rows[i];
    std::vector<uint64_t> keys(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) keys[k] = static_cast<uint64_t>(k + 1);
    std::vector<float> rows(keys.size() * static_cast<size_t>(o.dim));
    IPS_RETURN_IF_ERROR(t->Pull(keys.data(), n, rows.data()));
    state->content.tables.push_back(t.get());
    state->tables.push_back(std::move(t));
  }
  state->content.config_text = config_text;
  return state;
}

// Writes `state` as the checkpoint <dir>/ckpt at `step`, exports it (`ips export`, fp16 rows
// when asked) to the bundle <dir>/bundle and loads that.
inline StatusOr<std::shared_ptr<const Bundle>> ExportServingBundle(const ServingState& state,
                                                                   const std::string& dir,
                                                                   int64_t step, bool fp16) {
  CheckpointOptions co;
  co.dir = dir + "/ckpt";
  IPS_ASSIGN_OR_RETURN(std::unique_ptr<CheckpointWriter> writer, CheckpointWriter::Create(co));
  IPS_RETURN_IF_ERROR(writer->Write(step, state.content).status());
  ExportOptions eo;
  eo.checkpoint = co.dir;
  eo.output = dir + "/bundle";
  eo.fp16 = fp16;
  IPS_RETURN_IF_ERROR(ExportBundle(eo).status());
  return Bundle::Load(eo.output);
}

// The JSON line `ips serve` reads for `q`; `user` is JSON text (a number or a quoted string).
// Category arrays are left out when empty (the bundle's item -> category map fills them in), and
// top_n when not given (< 0).
inline std::string ScoreRequestLine(const std::string& user, const ScoreRequest& q) {
  std::string s = "{\"user\":" + user;
  auto ids = [&](const char* name, const std::vector<uint64_t>& v) {
    s += std::string(",\"") + name + "\":[";
    for (size_t i = 0; i < v.size(); ++i) s += (i > 0 ? "," : "") + std::to_string(v[i]);
    s += "]";
  };
  ids("history", q.history);
  if (!q.history_cats.empty()) ids("history_cats", q.history_cats);
  ids("candidates", q.candidates);
  if (!q.candidate_cats.empty()) ids("candidate_cats", q.candidate_cats);
  if (q.top_n >= 0) s += ",\"top_n\":" + std::to_string(q.top_n);
  return s + "}";
}

}  // namespace ips

#endif  // IPS_WORKER_SERVING_FIXTURE_H_
