// The tests that run distributed training in-binary (tests/ps/mpi_cluster_test.cc,
// tests/ps/cluster_checkpoint_test.cc): the config of their DIN jobs on synthetic data, and their
// mpirun side, where every rank calls RunClusterTrain (launch/cluster_train.h) with the config and
// the test-only fault flags of the case's arguments.
#ifndef IPS_TESTS_PS_CLUSTER_TRAIN_CASE_H_
#define IPS_TESTS_PS_CLUSTER_TRAIN_CASE_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "launch/cluster_train.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "tests/testing/mpi_run.h"

namespace ips::testing {

// A DIN job on synthetic data; the defaults are the small job most tests train (14 steps).
struct SyntheticDinJob {
  std::string name = "mpi_test";
  int batch = 32, max_history = 8, num_items = 3000, num_categories = 40;
  int warmup_steps = 2, steps = 12;
  int dim = 8;
  std::string attention_hidden = "[16, 8]", mlp_hidden = "[16, 8]";
  std::string learning_rate = "0.01";
  int log_every_steps = 1;
  int num_ps = 1;
  std::string sync = "SYNC";  // or e.g. "ASYNC staleness: 4"
  std::string extra;          // more config text (a checkpoint section)

  std::string Text() const {
    const std::string d = std::to_string(dim);
    return "version: 1\nname: \"" + name + "\"\ndata { batch_size: " + std::to_string(batch) +
           " max_history: " + std::to_string(max_history) +
           " seed: 0 synthetic { num_items: " + std::to_string(num_items) +
           " num_categories: " + std::to_string(num_categories) +
           " zipf_alpha: 1.1 warmup_steps: " + std::to_string(warmup_steps) +
           " steps: " + std::to_string(steps) + " } }\nmodel { type: DIN embedding_dim: " + d +
           " attention_hidden: " + attention_hidden + " mlp_hidden: " + mlp_hidden +
           " activation: PRELU }\noptimizer { type: ADAM learning_rate: " + learning_rate +
           " }\ntables { name: \"item\" dim: " + d + " }\ntables { name: \"category\" dim: " + d +
           " }\ntrain { num_threads: 1 seed: 0 log_every_steps: " +
           std::to_string(log_every_steps) + " }\ncluster { num_ps: " + std::to_string(num_ps) +
           " sync: " + sync + " }\n" + extra;
  }
};

// step -> loss of the train lines ("phase":"train") of a --metrics_out file (worker 0's): their
// "step_loss", the logged step's own loss with every digit ("loss" is the mean since the previous
// train line).
inline std::map<int64_t, double> LossesOf(const std::string& metrics_path) {
  std::map<int64_t, double> losses;
  FILE* f = std::fopen(metrics_path.c_str(), "r");
  if (f == nullptr) return losses;
  char line[4096];
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    const std::string s(line);
    if (s.find("\"phase\":\"train\"") == std::string::npos) continue;
    const size_t st = s.find("\"step\":"), k = s.find("\"step_loss\":");
    if (st != std::string::npos && k != std::string::npos)
      losses[std::strtoll(s.c_str() + st + 7, nullptr, 10)] =
          std::strtod(s.c_str() + k + 12, nullptr);
  }
  std::fclose(f);
  return losses;
}

// --config=PATH [--metrics_out=PATH] [--resume=PATH] [--eval_batches=N (default
// `eval_batches`)] [--kill_rank=R --kill_step=S | --kill_in_checkpoint_step=S | --term_step=S].
// Quiet, replicas checked every 5 steps. Returns the process's exit code.
inline int CaseTrain(int eval_batches) {
  auto cfg = LoadConfig(CaseArg("config", ""), {});
  if (!cfg.ok()) {
    std::fprintf(stderr, "CASE FAILED: %s\n", cfg.status().ToString().c_str());
    return 1;
  }
  ClusterTrainFlags f;
  f.eval_batches = static_cast<int>(CaseIntArg("eval_batches", eval_batches));
  f.quiet = true;
  f.metrics_out = CaseArg("metrics_out", "");
  f.replica_check_every = 5;
  f.resume = CaseArg("resume", "");
  f.kill_rank = static_cast<int>(CaseIntArg("kill_rank", -1));
  f.kill_step = CaseIntArg("kill_step", -1);
  f.kill_in_checkpoint_step = CaseIntArg("kill_in_checkpoint_step", -1);
  f.term_step = CaseIntArg("term_step", -1);
  return RunClusterTrain(*cfg, f);
}

}  // namespace ips::testing

#endif  // IPS_TESTS_PS_CLUSTER_TRAIN_CASE_H_
