// Tests of training checkpoints (worker/checkpoint.h): bit-exact round trip of a DIN model's
// dense weights, dense optimizer state, Dice running statistics, blobs and tables; incremental
// chains with retention; corrupt, truncated and missing files rejected naming the file with
// nothing loaded; a writer stopped mid-write (and one killed with SIGKILL) leaves the previous
// checkpoint loadable and no partial one visible; re-sharding through the reader; a checkpoint of
// another model or configuration is rejected saying which model (and settings) wrote it and what
// the config says, falling back to the misfit tensor where the checkpoint records no config. A
// root resolves to its newest checkpoint that validates (LATEST is a hint: a kill between the
// publishing rename and LATEST leaves it behind), and a resumed run whose checkpoint was saved
// mid-epoch is refused when its data.seed, data.shuffle, data.batch_size or dataset layout changed.
#include "worker/checkpoint.h"

#include <glog/logging.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/random.h"
#include "models/din.h"
#include "proto/config.pb.h"
#include "ps/checkpoint_io.h"
#include "worker/serving_fixture.h"

namespace ips {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/ips_ckpt_XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  EXPECT_NE(d, nullptr);
  return d;
}

ps::TableOptions TableOpts(const std::string& name) {
  ps::TableOptions o;
  o.name = name;
  o.dim = 4;
  o.optimizer.type = ps::OptimizerOptions::Type::kAdam;
  o.optimizer.learning_rate = 0.01;
  o.has_padding_key = true;
  o.num_shards = 4;
  o.rows_per_slab = 64;
  o.seed = 3;
  return o;
}

// The state of one "trainer": a DIN with Dice (so it has running statistics), its optimizer and
// two tables.
struct State {
  std::unique_ptr<models::Din<float>> model;
  std::unique_ptr<DenseOptimizer> opt;
  std::vector<std::unique_ptr<ps::DynamicTable>> tables;
  CheckpointContent content;

  explicit State(uint64_t seed) {
    models::DinOptions o;
    o.embedding_dim = 4;
    o.max_len = 5;
    o.max_batch = 8;
    o.attention_hidden1 = 6;
    o.attention_hidden2 = 5;
    o.mlp_hidden = {7, 4};
    o.activation = models::MlpActivation::kDice;
    o.seed = seed;
    model = std::move(models::Din<float>::Create(o)).value();
    opt = std::make_unique<DenseOptimizer>(kernels::OptimizerHyper::Adam(1e-3),
                                           model->params().size());
    for (const char* n : {"item", "category"})
      tables.push_back(std::move(ps::DynamicTable::Create(TableOpts(n))).value());
    AddModelState(model.get(), opt.get(), &content);
    for (auto& t : tables) content.tables.push_back(t.get());
    content.config_text = "name: \"test\"";
  }

  // Random dense values, optimizer state and model state; `steps` of table traffic.
  void Perturb(uint64_t seed, int64_t first_step, int steps) {
    Rng rng(seed);
    for (auto& t : content.tensors)
      for (int64_t i = 0; i < t.size; ++i) t.data[i] = static_cast<float>(rng.Normal());
    for (int s = 0; s < steps; ++s) {
      for (auto& t : tables) {
        t->AdvanceStep(first_step + s);
        std::vector<uint64_t> keys(32);
        for (auto& k : keys)
          k = 1 + rng.UniformInt(100 + 20 * static_cast<uint64_t>(first_step + s));
        std::vector<float> rows(keys.size() * 4), grads(keys.size() * 4);
        ASSERT_TRUE(t->Pull(keys.data(), 32, rows.data()).ok());
        for (auto& g : grads) g = static_cast<float>(rng.Normal());
        ASSERT_TRUE(t->Push(keys.data(), 32, grads.data()).ok());
      }
    }
  }
};

std::map<uint64_t, std::vector<float>> Rows(const ps::DynamicTable& t) {
  std::map<uint64_t, std::vector<float>> out;
  t.ForEachRowSince(0, [&](const ps::RowRecord& r) {
    auto& v = out[r.key];
    v.assign(r.value, r.value + t.dim());
    if (r.state) v.insert(v.end(), r.state, r.state + t.dim() * t.state_count());
    v.push_back(static_cast<float>(r.last_step));
    v.push_back(static_cast<float>(r.freq));
  });
  return out;
}

void ExpectSameState(State& got, State& want) {
  ASSERT_EQ(got.content.tensors.size(), want.content.tensors.size());
  for (size_t i = 0; i < want.content.tensors.size(); ++i) {
    const auto& g = got.content.tensors[i];
    const auto& w = want.content.tensors[i];
    ASSERT_EQ(g.name, w.name);
    ASSERT_EQ(g.size, w.size);
    EXPECT_EQ(std::memcmp(g.data, w.data, static_cast<size_t>(g.size) * 4), 0) << g.name;
  }
  for (size_t t = 0; t < want.tables.size(); ++t) {
    EXPECT_TRUE(Rows(*got.tables[t]) == Rows(*want.tables[t])) << want.tables[t]->options().name;
    EXPECT_EQ(got.tables[t]->optimizer_step(), want.tables[t]->optimizer_step());
    EXPECT_EQ(got.tables[t]->step(), want.tables[t]->step());
  }
}

void Poison(State* s) {
  for (auto& t : s->content.tensors)
    for (int64_t i = 0; i < t.size; ++i) t.data[i] = std::numeric_limits<float>::quiet_NaN();
}

TEST(Checkpoint, RoundTrip_BitExact_DenseOptimizerModelStateBlobsTables) {
  const std::string dir = TempDir();
  State a(1);
  a.Perturb(10, 1, 5);
  a.content.blobs["reader/position"] = std::string("\x01\x00\x02", 3);
  a.content.blobs["rng/worker0"] = "state-bytes";
  bool has_state = false;
  for (const auto& t : a.content.tensors) has_state |= t.name.rfind("model_state/", 0) == 0;
  ASSERT_TRUE(has_state) << "Dice running statistics should be checkpointed";
  CheckpointOptions o;
  o.dir = dir;
  auto w = CheckpointWriter::Create(o);
  ASSERT_TRUE(w.ok()) << w.status();
  auto info = SaveCheckpoint(w->get(), 5, a.content);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->path, dir + "/ckpt-5");
  EXPECT_EQ(ps::ReadSmallFile(dir + "/LATEST").value(), "ckpt-5\n");

  State b(2);
  Poison(&b);
  std::map<std::string, std::string> blobs;
  auto step = LoadCheckpoint(dir, b.content, &blobs);
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ(*step, 5);
  EXPECT_EQ(blobs, a.content.blobs);
  ExpectSameState(b, a);
  auto reader = CheckpointReader::Open(dir);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->config_text(), "name: \"test\"");
  EXPECT_EQ((*reader)->table_names(), (std::vector<std::string>{"category", "item"}));

  // A model of another shape does not half-load.
  models::DinOptions other;
  other.embedding_dim = 4;
  other.max_len = 5;
  other.max_batch = 8;
  auto big = std::move(models::Din<float>::Create(other)).value();
  CheckpointContent wrong;
  AddModelState(big.get(), nullptr, &wrong);
  const Status s = (*reader)->Restore(wrong, nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("tensor"), std::string::npos) << s;
  ps::RemoveTree(dir);
}

TEST(Checkpoint, IncrementalChain_RestoreEqualsFullState_RetentionKeepsAncestors) {
  const std::string dir = TempDir();
  State a(1);
  CheckpointOptions o;
  o.dir = dir;
  o.incremental = true;
  o.full_every = 3;
  o.keep_last = 2;
  auto w = std::move(CheckpointWriter::Create(o)).value();
  std::vector<CheckpointInfo> infos;
  for (int k = 1; k <= 5; ++k) {
    a.Perturb(100 + k, 10 * k, 3);
    auto info = w->Write(10 * k, a.content);
    ASSERT_TRUE(info.ok()) << info.status();
    infos.push_back(*info);
  }
  // Kinds: full, inc, inc, full, inc.
  EXPECT_FALSE(infos[0].incremental);
  EXPECT_TRUE(infos[1].incremental);
  EXPECT_EQ(infos[1].parent, "ckpt-10");
  EXPECT_TRUE(infos[2].incremental);
  EXPECT_EQ(infos[2].parent, "ckpt-20");
  EXPECT_FALSE(infos[3].incremental);
  EXPECT_TRUE(infos[4].incremental);
  EXPECT_LT(infos[1].table_rows, a.tables[0]->Stats().rows + a.tables[1]->Stats().rows);
  // keep_last 2 keeps ckpt-40 (full) and ckpt-50 (its child); ckpt-10..30 are gone.
  auto list = ListCheckpoints(dir).value();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].second, "ckpt-40");
  EXPECT_EQ(list[1].second, "ckpt-50");

  State b(2);
  auto r = CheckpointReader::Open(dir);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->chain().size(), 2u);
  ASSERT_TRUE((*r)->Restore(b.content, nullptr).ok());
  ExpectSameState(b, a);
  ps::RemoveTree(dir);
}

TEST(Checkpoint, IncrementalChain_ThreeLinks_RestoreEqualsFullState) {
  const std::string dir = TempDir();
  State a(1);
  CheckpointOptions o;
  o.dir = dir;
  o.incremental = true;
  o.keep_last = 1;  // retention must keep the ancestors of the newest
  auto w = std::move(CheckpointWriter::Create(o)).value();
  for (int k = 1; k <= 3; ++k) {
    a.Perturb(200 + k, 10 * k, 4);
    ASSERT_TRUE(w->Write(10 * k, a.content).ok());
  }
  EXPECT_EQ(ListCheckpoints(dir).value().size(), 3u);
  State b(2);
  auto r = CheckpointReader::Open(dir);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->chain().size(), 3u);
  ASSERT_TRUE((*r)->Restore(b.content, nullptr).ok());
  ExpectSameState(b, a);
  ps::RemoveTree(dir);
}

void Corrupt(const std::string& path, long offset) {
  FILE* f = std::fopen(path.c_str(), "r+b");
  ASSERT_NE(f, nullptr) << path;
  std::fseek(f, offset, SEEK_SET);
  const int c = std::fgetc(f);
  std::fseek(f, offset, SEEK_SET);
  std::fputc(c ^ 0x10, f);
  std::fclose(f);
}

TEST(Checkpoint, CorruptTruncatedMissingFiles_FailNamingTheFile_NothingLoaded) {
  for (const std::string file : {"dense.bin", "table-item-r0.bin", "MANIFEST"}) {
    for (const std::string damage : {"corrupt", "truncated", "missing"}) {
      SCOPED_TRACE(file + " " + damage);
      const std::string dir = TempDir();
      State a(1);
      a.Perturb(7, 1, 3);
      CheckpointOptions o;
      o.dir = dir;
      ASSERT_TRUE(std::move(CheckpointWriter::Create(o)).value()->Write(3, a.content).ok());
      const std::string path = dir + "/ckpt-3/" + file;
      const int64_t size = ps::DigestFile(path).value().bytes;
      if (damage == "corrupt") Corrupt(path, static_cast<long>(size / 2));
      if (damage == "truncated") {
        ASSERT_EQ(::truncate(path.c_str(), size - 7), 0);
      }
      if (damage == "missing") {
        ASSERT_EQ(std::remove(path.c_str()), 0);
      }
      State b(2);
      Poison(&b);
      auto step = LoadCheckpoint(dir, b.content, nullptr);
      ASSERT_FALSE(step.ok());
      EXPECT_NE(step.status().message().find(path), std::string::npos) << step.status();
      const std::string want = damage == "corrupt"     ? "checksum"
                               : damage == "truncated" ? "truncated"
                                                       : "missing";
      EXPECT_NE(step.status().message().find(want), std::string::npos) << step.status();
      for (const auto& t : b.content.tensors) EXPECT_TRUE(std::isnan(t.data[0])) << t.name;
      for (const auto& t : b.tables) EXPECT_EQ(t->Stats().rows, 0);
      ps::RemoveTree(dir);
    }
  }
}

TEST(Checkpoint, WriterStoppedMidWrite_PreviousStaysLatest_NoPartialVisible) {
  for (const std::string event : {"file:dense.bin", "file:table-item-r0.bin", "publish"}) {
    SCOPED_TRACE(event);
    const std::string dir = TempDir();
    State a(1);
    a.Perturb(1, 1, 3);
    CheckpointOptions o;
    o.dir = dir;
    ASSERT_TRUE(std::move(CheckpointWriter::Create(o)).value()->Write(3, a.content).ok());
    State snapshot(3);
    ASSERT_TRUE(LoadCheckpoint(dir, snapshot.content, nullptr).ok());

    a.Perturb(2, 4, 3);
    o.fault_hook = [event](const std::string& e) {
      return e == event ? AbortedError("killed at " + e) : Status::Ok();
    };
    auto w = std::move(CheckpointWriter::Create(o)).value();
    EXPECT_FALSE(w->Write(6, a.content).ok());
    auto list = ListCheckpoints(dir).value();
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0].second, "ckpt-3");
    State b(2);
    auto step = LoadCheckpoint(dir, b.content, nullptr);
    ASSERT_TRUE(step.ok()) << step.status();
    EXPECT_EQ(*step, 3);
    ExpectSameState(b, snapshot);
    // The next writer removes the leftover temporary directory.
    bool tmp_left = false;
    const auto before = ps::ListDir(dir).value();
    for (const auto& n : before) tmp_left |= n.rfind("tmp-", 0) == 0;
    EXPECT_TRUE(tmp_left);
    o.fault_hook = nullptr;
    w.reset();  // the stopped writer's process is gone (its lock with it)
    auto w2 = std::move(CheckpointWriter::Create(o)).value();
    const auto after = ps::ListDir(dir).value();
    for (const auto& n : after) EXPECT_NE(n.rfind("tmp-", 0), 0u) << n;
    ps::RemoveTree(dir);
  }
}

TEST(Checkpoint, WriterKilledWithSigkill_LatestAlwaysLoadable) {
  const std::string dir = TempDir();
  for (int round = 0; round < 4; ++round) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Child: checkpoint a growing state as fast as it can until killed.
      State a(1);
      CheckpointOptions o;
      o.dir = dir;
      o.keep_last = 2;
      auto w = std::move(CheckpointWriter::Create(o)).value();
      for (int64_t step = 1000 * round + 1;; ++step) {
        a.Perturb(static_cast<uint64_t>(step), step, 4);
        if (!w->Write(step, a.content).ok()) ::_exit(3);
      }
    }
    ::usleep(static_cast<useconds_t>(150000 + 70000 * round));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the child stopped on its own: " << status;
    State b(2);
    auto step = LoadCheckpoint(dir, b.content, nullptr);
    ASSERT_TRUE(step.ok()) << "round " << round << ": " << step.status();
    EXPECT_GT(*step, 1000 * round) << "round " << round;
  }
  ps::RemoveTree(dir);
}

// LATEST naming a missing directory (a writer killed between moving a same-step checkpoint
// aside and updating LATEST): the reader falls back to the newest ckpt-<step>, and says so.
TEST(Checkpoint, LatestNamesMissingDirectory_FallsBackToNewest_WithAWarningNamingBoth) {
  const std::string dir = TempDir();
  State a(1);
  a.Perturb(3, 1, 2);
  CheckpointOptions o;
  o.dir = dir;
  o.keep_last = 5;
  {
    auto w = std::move(CheckpointWriter::Create(o)).value();
    ASSERT_TRUE(w->Write(4, a.content).ok());
    ASSERT_TRUE(w->Write(7, a.content).ok());
    ASSERT_TRUE(w->Write(9, a.content).ok());
  }
  ASSERT_TRUE(ps::WriteFileAtomically(dir + "/LATEST", "ckpt-12\n").ok());
  FLAGS_logtostderr = true;  // glog's warnings to stderr, where the test reads them
  testing::internal::CaptureStderr();
  auto r = CheckpointReader::Open(dir);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->step(), 9);
  EXPECT_EQ((*r)->dir(), dir + "/ckpt-9");
  EXPECT_NE(err.find(dir + "/LATEST names 'ckpt-12', which is missing; using " + dir + "/ckpt-9"),
            std::string::npos)
      << err;
  // LATEST naming the newest checkpoint: used, and nothing logged.
  ASSERT_TRUE(ps::WriteFileAtomically(dir + "/LATEST", "ckpt-9\n").ok());
  testing::internal::CaptureStderr();
  auto r9 = CheckpointReader::Open(dir);
  const std::string quiet = testing::internal::GetCapturedStderr();
  EXPECT_EQ(quiet.find("LATEST"), std::string::npos) << quiet;
  ASSERT_TRUE(r9.ok()) << r9.status();
  EXPECT_EQ((*r9)->step(), 9);
  // An older one is a named checkpoint, not the root: DIR/ckpt-7.
  auto r7 = CheckpointReader::Open(dir + "/ckpt-7");
  ASSERT_TRUE(r7.ok()) << r7.status();
  EXPECT_EQ((*r7)->step(), 7);
  // Nothing to fall back to: the error names LATEST and what it names.
  const std::string empty = TempDir();
  ASSERT_TRUE(ps::WriteFileAtomically(empty + "/LATEST", "ckpt-3\n").ok());
  auto none = CheckpointReader::Open(empty);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find(empty + "/LATEST: names 'ckpt-3', which is missing"),
            std::string::npos)
      << none.status();
  ps::RemoveTree(empty);
  ps::RemoveTree(dir);
}

// The state `kill -9` leaves between the publishing rename of ckpt-<step> and the replacement of
// LATEST (1 in 8 random kills of `ips train` with checkpoint.every_steps=7): a complete, newer
// checkpoint and LATEST naming the one before. The reader used to follow LATEST, so `--resume DIR`
// resumed the older one and the run was then refused for the newer one in DIR, with the advice to
// run `--resume DIR`, the command that had just failed. The root now resolves to the newest
// complete checkpoint (with a warning naming both), PeekCheckpoint agrees without the warning,
// the run is accepted, and the next checkpoint puts LATEST right.
TEST(Checkpoint, LatestBehindANewerCompleteCheckpoint_RootResolvesToTheNewest) {
  const std::string dir = TempDir();
  State a(1);
  a.Perturb(3, 1, 2);
  CheckpointOptions o;
  o.dir = dir;
  o.keep_last = 5;
  auto w = std::move(CheckpointWriter::Create(o)).value();
  ASSERT_TRUE(w->Write(4, a.content).ok());
  a.Perturb(4, 3, 2);
  ASSERT_TRUE(w->Write(7, a.content).ok());
  w.reset();  // killed: its lock goes with it
  ASSERT_TRUE(ps::WriteFileAtomically(dir + "/LATEST", "ckpt-4\n").ok());

  FLAGS_logtostderr = true;
  testing::internal::CaptureStderr();
  auto head = PeekCheckpoint(dir);
  const std::string peek_err = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->dir, dir + "/ckpt-7");
  EXPECT_EQ(head->step, 7);
  EXPECT_EQ(head->config_text, "name: \"test\"");
  EXPECT_EQ(peek_err.find("LATEST"), std::string::npos)
      << "Open, which follows, warns: " << peek_err;
  // What `ips train --resume DIR` then checks of DIR, which is its checkpoint.dir too.
  EXPECT_TRUE(CheckCheckpointDirForRun(dir, head->step).ok())
      << CheckCheckpointDirForRun(dir, head->step);

  testing::internal::CaptureStderr();
  State b(2);
  Poison(&b);
  auto step = LoadCheckpoint(dir, b.content, nullptr);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ(*step, 7);
  ExpectSameState(b, a);
  EXPECT_NE(err.find(dir + "/LATEST names 'ckpt-4', but " + dir +
                     "/ckpt-7 is newer and complete (a writer stopped after publishing it, "
                     "before updating LATEST); using it"),
            std::string::npos)
      << err;

  // The resumed run's writer: its first checkpoint replaces LATEST.
  auto w2 = std::move(CheckpointWriter::Create(o)).value();
  ASSERT_TRUE(w2->Write(8, b.content).ok());
  EXPECT_EQ(ps::ReadSmallFile(dir + "/LATEST").value(), "ckpt-8\n");
  ps::RemoveTree(dir);
}

// A newer checkpoint that does not validate (damaged after it was published: a ckpt-<step> is
// only ever renamed into place complete) is skipped with a warning naming it and what is wrong;
// the run resumed from the older one is refused while the damaged one is in DIR, and the advice
// is to move it away (then run the same command), never `--resume DIR`, which just resolved to
// the older one. With a loadable checkpoint between the two, the advice names that one. When no
// checkpoint loads, the error is the newest one's, naming the file.
TEST(Checkpoint, NewestCheckpointDamaged_FallsBackWithAWarning_AdviceIsNotTheFailedCommand) {
  const std::string dir = TempDir();
  State a(1);
  CheckpointOptions o;
  o.dir = dir;
  o.keep_last = 5;
  {
    auto w = std::move(CheckpointWriter::Create(o)).value();
    a.Perturb(3, 1, 2);
    ASSERT_TRUE(w->Write(4, a.content).ok());
    a.Perturb(4, 3, 2);
    ASSERT_TRUE(w->Write(7, a.content).ok());
  }
  State at7(5);
  ASSERT_TRUE(LoadCheckpoint(dir, at7.content, nullptr).ok());
  const std::string damaged = dir + "/ckpt-7/dense.bin";
  Corrupt(damaged, 40);

  FLAGS_logtostderr = true;
  testing::internal::CaptureStderr();
  State b(2);
  auto step = LoadCheckpoint(dir, b.content, nullptr);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ(*step, 4);
  EXPECT_NE(err.find("checkpoint " + dir + "/ckpt-7 cannot be loaded (DATA_LOSS: " + damaged),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("using " + dir + "/ckpt-4, the newest checkpoint of " + dir + " that can"),
            std::string::npos)
      << err;
  auto head = PeekCheckpoint(dir);
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->step, 4);

  const Status refused = CheckCheckpointDirForRun(dir, 4);
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition) << refused;
  for (const std::string& part : std::vector<std::string>{
           "checkpoint.dir " + dir + " holds 1 checkpoint(s) newer than the resumed step 4",
           "Of these, 1 cannot be loaded: " + dir + "/ckpt-7 (DATA_LOSS: " + damaged,
           "Move the damaged checkpoint(s) out of " + dir + " and run this command again"})
    EXPECT_NE(refused.message().find(part), std::string::npos) << part << "\n" << refused;
  EXPECT_EQ(refused.message().find("--resume"), std::string::npos)
      << "--resume DIR resolved to step 4: " << refused;

  // A loadable checkpoint between the resumed one and the damaged one: continue from it.
  ASSERT_EQ(std::system(("cp -r " + dir + "/ckpt-4 " + dir + "/ckpt-2").c_str()), 0);
  // (ckpt-2 holds the manifest of step 4: loadable, which is all the check asks.)
  const Status from2 = CheckCheckpointDirForRun(dir, 2);
  EXPECT_EQ(from2.code(), StatusCode::kFailedPrecondition) << from2;
  EXPECT_NE(from2.message().find("then continue from the newest that loads (" + dir +
                                 "/ckpt-4) with --resume " + dir),
            std::string::npos)
      << from2;

  // Nothing loads: the newest one's error, naming its file, and the others'.
  ps::RemoveTree(dir + "/ckpt-2");
  Corrupt(dir + "/ckpt-4/dense.bin", 40);
  auto none = CheckpointReader::Open(dir);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(none.status().message().rfind(damaged, 0), 0u) << none.status();
  const std::string older =
      "no checkpoint of " + dir + " loads; the 1 older: DATA_LOSS: " + dir + "/ckpt-4/dense.bin";
  EXPECT_NE(none.status().message().find(older), std::string::npos) << none.status();
  ps::RemoveTree(dir);
}

// Two runs writing one checkpoint.dir would interleave checkpoints and delete each other's staging
// directories: the second writer is refused, naming the directory and the first one's pid, and
// the first one's staging directory survives. The lock goes with the writer (or its process).
TEST(Checkpoint, SecondWriterOnTheSameDir_FailedPreconditionNamingDirAndPid) {
  const std::string dir = TempDir();
  State a(1);
  a.Perturb(3, 1, 2);
  CheckpointOptions o;
  o.dir = dir;
  auto w = std::move(CheckpointWriter::Create(o)).value();
  ASSERT_TRUE(w->Write(2, a.content).ok());
  const std::string staging = w->Begin(5).value();  // a checkpoint being written
  auto second = CheckpointWriter::Create(o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(
      second.status().message().find("checkpoint.dir " + dir + " is in use by another run (pid " +
                                     std::to_string(::getpid()) + ")"),
      std::string::npos)
      << second.status();
  EXPECT_TRUE(ps::IsDirectory(staging)) << "the refused writer removed a live staging directory";
  // Another process is refused too (flock, not a per-process table).
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto s = CheckpointWriter::Create(o);
    ::_exit(!s.ok() && s.status().code() == StatusCode::kFailedPrecondition ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // Readers take no lock.
  EXPECT_TRUE(CheckpointReader::Open(dir).ok());
  w.reset();
  auto third = CheckpointWriter::Create(o);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_FALSE(ps::IsDirectory(staging));  // the stale staging directory of the old writer
  EXPECT_TRUE((*third)->Write(6, a.content).ok());
  ps::RemoveTree(dir);
}

// `ips config check` probes the lock a writer would take: a DIR held by a writer (of this process
// or another) is refused with Create's message; a DIR without LOCK, or without DIR, is accepted
// with nothing created; the probe does not keep the lock (a writer takes it right after), and a
// LOCK left by a finished writer is free.
TEST(Checkpoint, CheckNotLocked_RefusesADirHeldByAWriter_CreatesNothing_KeepsNoLock) {
  const std::string dir = TempDir();
  const std::string ck = dir + "/ck";
  EXPECT_TRUE(CheckpointWriter::CheckNotLocked(ck).ok());
  EXPECT_FALSE(ps::PathExists(ck));
  ASSERT_TRUE(ps::MakeDirs(ck).ok());
  EXPECT_TRUE(CheckpointWriter::CheckNotLocked(ck).ok());
  EXPECT_FALSE(ps::PathExists(ck + "/LOCK"));

  CheckpointOptions o;
  o.dir = ck;
  auto w = CheckpointWriter::Create(o);
  ASSERT_TRUE(w.ok()) << w.status();
  const Status held = CheckpointWriter::CheckNotLocked(ck);
  EXPECT_EQ(held.code(), StatusCode::kFailedPrecondition) << held;
  EXPECT_EQ(held.message(), "checkpoint.dir " + ck + " is in use by another run (pid " +
                                std::to_string(::getpid()) +
                                "): give each run its own checkpoint.dir (lock: " + ck + "/LOCK)");
  // The same message as the second writer's.
  auto second = CheckpointWriter::Create(o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().ToString(), held.ToString());
  // Another process's probe sees it too.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const Status s = CheckpointWriter::CheckNotLocked(ck);
    ::_exit(s.code() == StatusCode::kFailedPrecondition ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  w->reset();  // the run is over: LOCK stays, free
  ASSERT_TRUE(ps::PathExists(ck + "/LOCK"));
  EXPECT_TRUE(CheckpointWriter::CheckNotLocked(ck).ok());
  EXPECT_TRUE(CheckpointWriter::Create(o).ok()) << "the probe kept the lock";
  ps::RemoveTree(dir);
}

// The writer lock checkpoints and serving bundle roots share (DirLock): the label names the
// directory as the user gave it, the holder's pid is recorded, the probe and a second writer see
// the holder whatever label they use (one lock file, DIR/LOCK), and destroying the holder frees it.
TEST(Checkpoint, DirLock_OneHolderPerDirWhateverTheLabel) {
  const std::string dir = TempDir();
  const DirLockLabel bundle{"--output", "wait for it"};
  auto held = DirLock::Acquire(dir, bundle);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(ps::ReadSmallFile(dir + "/LOCK").value(), std::to_string(::getpid()) + "\n");
  const std::string want = "--output " + dir + " is in use by another run (pid " +
                           std::to_string(::getpid()) + "): wait for it (lock: " + dir + "/LOCK)";
  auto second = DirLock::Acquire(dir, bundle);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(second.status().message(), want);
  EXPECT_EQ(DirLock::CheckNotLocked(dir, bundle).message(), want);
  EXPECT_NE(CheckpointWriter::CheckNotLocked(dir).message().find("checkpoint.dir " + dir +
                                                                 " is in use by another run"),
            std::string::npos);
  held->reset();
  EXPECT_TRUE(DirLock::CheckNotLocked(dir, bundle).ok());
  EXPECT_TRUE(DirLock::Acquire(dir, bundle).ok());
  ps::RemoveTree(dir);
}

// A writer whose DIR holds higher steps (another run's: CheckCheckpointDirForRun refuses that at
// the start of a run, but a file system without flock or a library caller can still get here)
// used to have keep_last retention (newest by step) delete the checkpoint it had just written,
// leaving LATEST naming a missing directory. The one just written and its chain stay.
TEST(Checkpoint, Retention_NeverRemovesTheCheckpointJustWritten) {
  const std::string dir = TempDir();
  State a(1);
  a.Perturb(5, 1, 2);
  CheckpointOptions o;
  o.dir = dir;
  o.keep_last = 2;
  {
    auto earlier = std::move(CheckpointWriter::Create(o)).value();
    for (int64_t step : {100, 110, 120}) ASSERT_TRUE(earlier->Write(step, a.content).ok());
  }
  o.incremental = true;
  auto w = std::move(CheckpointWriter::Create(o)).value();
  a.Perturb(6, 3, 2);
  auto info = w->Write(5, a.content);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(ps::IsDirectory(dir + "/ckpt-5")) << "retention removed the checkpoint just written";
  EXPECT_EQ(ps::ReadSmallFile(dir + "/LATEST").value(), "ckpt-5\n");
  // An incremental one keeps its parent too.
  a.Perturb(7, 5, 2);
  info = w->Write(6, a.content);
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_TRUE(info->incremental);
  EXPECT_EQ(ps::ReadSmallFile(dir + "/LATEST").value(), "ckpt-6\n");
  // The root resolves to its highest step that loads, the other run's (LATEST is a hint), which
  // is why a run that would mix with another run's checkpoints is refused at its start.
  auto root = PeekCheckpoint(dir);
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_EQ(root->step, 120);
  auto reader = CheckpointReader::Open(dir + "/ckpt-6");
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->step(), 6);
  EXPECT_EQ((*reader)->chain().size(), 2u);
  State b(2);
  ASSERT_TRUE((*reader)->Restore(b.content, nullptr).ok());
  ExpectSameState(b, a);
  // The other run's keep_last newest are kept as well.
  const auto list = ListCheckpoints(dir).value();
  std::vector<std::string> names;
  for (const auto& entry : list) names.push_back(entry.second);
  EXPECT_EQ(names, (std::vector<std::string>{"ckpt-5", "ckpt-6", "ckpt-110", "ckpt-120"}));
  ps::RemoveTree(dir);
}

// The start-of-run check of `ips train` (single-process and worker 0 under mpirun) and of
// `ips config check`: a fresh run needs a DIR without checkpoints, a resumed one a DIR without
// checkpoints newer than the resumed step.
TEST(Checkpoint, CheckDirForRun_FreshRunNeedsNoCheckpoints_ResumedRunNoneNewer) {
  const std::string dir = TempDir();
  EXPECT_TRUE(CheckCheckpointDirForRun(dir + "/missing", -1).ok());
  EXPECT_TRUE(CheckCheckpointDirForRun(dir, -1).ok());  // empty
  State a(1);
  CheckpointOptions o;
  o.dir = dir;
  auto w = std::move(CheckpointWriter::Create(o)).value();
  // The writer's own LOCK and LATEST are not checkpoints.
  EXPECT_TRUE(CheckCheckpointDirForRun(dir, -1).ok());
  ASSERT_TRUE(w->Write(10, a.content).ok());
  ASSERT_TRUE(w->Write(20, a.content).ok());
  ASSERT_TRUE(ps::MakeDirs(dir + "/not-a-checkpoint").ok());

  const Status fresh = CheckCheckpointDirForRun(dir, -1);
  EXPECT_EQ(fresh.code(), StatusCode::kFailedPrecondition) << fresh;
  for (const std::string& part : std::vector<std::string>{
           "checkpoint.dir " + dir +
               " already holds 2 checkpoint(s) of an earlier run (newest: " + dir + "/ckpt-20)",
           "no --resume", "--resume " + dir, "an empty or new checkpoint.dir"})
    EXPECT_NE(fresh.message().find(part), std::string::npos) << part << "\n" << fresh;

  const Status older = CheckCheckpointDirForRun(dir, 10);
  EXPECT_EQ(older.code(), StatusCode::kFailedPrecondition) << older;
  for (const std::string& part : std::vector<std::string>{
           "checkpoint.dir " + dir +
               " holds 1 checkpoint(s) newer than the resumed step 10 (newest: " + dir +
               "/ckpt-20)",
           "--resume " + dir, "an empty or new checkpoint.dir"})
    EXPECT_NE(older.message().find(part), std::string::npos) << part << "\n" << older;
  EXPECT_TRUE(CheckCheckpointDirForRun(dir, 20).ok());
  EXPECT_TRUE(CheckCheckpointDirForRun(dir, 25).ok());  // resumed from elsewhere, further on

  // PeekCheckpoint resolves like the reader, from the manifest alone.
  auto head = PeekCheckpoint(dir);
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->dir, dir + "/ckpt-20");
  EXPECT_EQ(head->step, 20);
  EXPECT_EQ(head->dense_path, dir + "/ckpt-20/dense.bin");
  head = PeekCheckpoint(dir + "/ckpt-10/");
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->step, 10);
  EXPECT_EQ(PeekCheckpoint(dir + "/nothing").status().code(), StatusCode::kNotFound);
  ps::RemoveTree(dir);
}

// A run on a dataset records its vocabulary in every checkpoint; a resume or an evaluation on a
// dataset of another vocabulary is refused naming both, the same vocabulary (another path, e.g.
// converted again with other evaluation lists) is accepted, and so is a checkpoint without the
// record (older, or synthetic data).
TEST(Checkpoint, Vocabulary_RecordedInEveryCheckpoint_AnotherOneRefusedNamingBoth) {
  const std::string dir = TempDir();
  DatasetVocabulary v;
  v.train_dir = "/data/ml100k";
  v.format = "movielens100k";
  v.crc32c = 0x1234abcd;
  v.bytes = 40960;
  v.users = 943;
  v.items = 1682;
  v.categories = 19;
  State a(1);
  a.content.blobs["run/x"] = "y";
  a.content.vocabulary = v;
  CheckpointOptions o;
  o.dir = dir;
  auto w = std::move(CheckpointWriter::Create(o)).value();
  ASSERT_TRUE(w->Write(7, a.content).ok());
  EXPECT_EQ(a.content.blobs.count(kVocabularyBlob), 0u) << "the caller's content is not changed";

  State b(2);
  std::map<std::string, std::string> blobs;
  ASSERT_TRUE(LoadCheckpoint(dir, b.content, &blobs).ok());
  EXPECT_EQ(blobs["run/x"], "y");
  ASSERT_EQ(blobs.count(kVocabularyBlob), 1u);
  auto decoded = DecodeVocabulary(blobs[kVocabularyBlob]);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->train_dir, v.train_dir);
  EXPECT_EQ(decoded->format, v.format);
  EXPECT_TRUE(decoded->SameAs(v));

  DatasetVocabulary same = v;
  same.train_dir = "/data/ml100k_eval50";  // converted again: only the lists differ
  EXPECT_TRUE(CheckCheckpointVocabulary(dir + "/ckpt-7", blobs, same).ok());
  DatasetVocabulary other;
  other.train_dir = "/data/taobao";
  other.format = "taobao";
  other.crc32c = 0x0badf00d;
  other.bytes = 81920;
  other.users = 1000;
  other.items = 5000;
  other.categories = 100;
  const Status s = CheckCheckpointVocabulary(dir + "/ckpt-7", blobs, other);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("the checkpoint at " + dir +
                             "/ckpt-7 was trained on data.train_dir '/data/ml100k' "
                             "(movielens100k: 943 users, 1682 items, 19 categories, vocab.ips "
                             "crc32c 0x1234abcd, 40960 bytes), but data.train_dir '/data/taobao' "
                             "(taobao: 1000 users, 5000 items, 100 categories, vocab.ips crc32c "
                             "0x0badf00d, 81920 bytes) has another vocabulary"),
            std::string::npos)
      << s;
  // Counts alone do not make a vocabulary: the same counts with another vocab.ips are refused.
  DatasetVocabulary shifted = v;
  shifted.crc32c ^= 1;
  EXPECT_FALSE(CheckCheckpointVocabulary(dir + "/ckpt-7", blobs, shifted).ok());

  // Without the record: accepted. A damaged one: DATA_LOSS naming the blob.
  EXPECT_TRUE(CheckCheckpointVocabulary(dir, {{"run/x", "y"}}, other).ok());
  const Status bad = CheckCheckpointVocabulary(dir, {{kVocabularyBlob, "items=many\n"}}, other);
  EXPECT_EQ(bad.code(), StatusCode::kDataLoss) << bad;
  EXPECT_NE(bad.message().find(kVocabularyBlob), std::string::npos) << bad;
  ps::RemoveTree(dir);
}

// The blob "run/dataset" of a dataset run's checkpoint (worker/internal/run_steps.h): epoch,
// position, steps, samples, epoch steps, epoch samples, trainer steps.
std::string RunDatasetBlob(int64_t epoch, int64_t position) {
  const int64_t v[7] = {epoch, position, 10, position, 10, position, 10};
  return std::string(reinterpret_cast<const char*>(v), sizeof(v));
}

DatasetVocabulary Ml100k(const std::string& dir, std::vector<uint64_t> shard_rows) {
  DatasetVocabulary v;
  v.train_dir = dir;
  v.format = "movielens100k";
  v.crc32c = 0x1234abcd;
  v.bytes = 40960;
  v.users = 943;
  v.items = 1682;
  v.categories = 19;
  v.protocol = "seqrec";
  v.shard_rows = std::move(shard_rows);
  return v;
}

// A run resumed mid-epoch continues the epoch's order at the saved position: another data.seed or
// data.shuffle (the permutation and the negatives), data.batch_size (the batches) or dataset
// layout (another --shards) used to continue silently with other examples. Each is refused
// naming the field, both values and how to continue; at an epoch's start or end any of them is
// accepted (with a warning). The layout rides in the vocabulary blob and is not part of the
// vocabulary. What a checkpoint does not record is not compared.
TEST(Checkpoint, ResumeEpochOrder_MidEpochChangesRefusedNamingBothValues_EpochEndAccepted) {
  const std::string ck = "/ck/ckpt-17";
  const std::string cfg32 = "data { train_dir: \"/data/a\" batch_size: 32 seed: 3 }";
  const DatasetVocabulary a = Ml100k("/data/a", {19381, 19381});
  std::map<std::string, std::string> blobs = {{"run/dataset", RunDatasetBlob(0, 544)},
                                              {kVocabularyBlob, EncodeVocabulary(a)}};
  const int64_t per_epoch = 77524;
  // The layout survives the blob and is not part of the vocabulary.
  auto decoded = DecodeVocabulary(blobs[kVocabularyBlob]);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->shard_rows, a.shard_rows);
  EXPECT_EQ(decoded->protocol, "seqrec");
  const DatasetVocabulary three = Ml100k("/data/b", {12000, 13000, 13762});
  EXPECT_TRUE(decoded->SameAs(three));
  EXPECT_FALSE(decoded->SameLayoutAs(three));

  EXPECT_TRUE(CheckResumeEpochOrder(ck, cfg32, blobs, cfg32, a, per_epoch).ok());
  // Unrelated settings may change.
  EXPECT_TRUE(CheckResumeEpochOrder(ck, cfg32, blobs,
                                    cfg32 + " train { epochs: 9 } optimizer { learning_rate: 1 }",
                                    a, per_epoch)
                  .ok());

  struct Case {
    std::string config;
    DatasetVocabulary data;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {"data { train_dir: \"/data/a\" batch_size: 32 seed: 4 }",
       a,
       {"data.seed is 4, the checkpoint's run had 3: it draws the epoch's shuffle and its "
        "sampled negatives",
        "To continue that run, set data.seed back to 3; or train from scratch"}},
      {"data { train_dir: \"/data/a\" batch_size: 64 seed: 3 }",
       a,
       {"data.batch_size is 64, the checkpoint's run had 32: it cuts the rest of the epoch into "
        "other batches",
        "set data.batch_size back to 32"}},
      {"data { train_dir: \"/data/a\" batch_size: 32 seed: 3 shuffle: false }",
       a,
       {"data.shuffle is false, the checkpoint's run had true", "set data.shuffle back to true"}},
      {cfg32,
       three,
       {"data.train_dir is '/data/b' (3 shards of 12000 + 13000 + 13762 training rows, protocol "
        "seqrec), the checkpoint's run had '/data/a' (2 shards of 19381 + 19381 training rows, "
        "protocol seqrec): the epoch's order is a permutation of the rows of every shard in turn",
        "set data.train_dir back to '/data/a' (or to the same input converted again with "
        "--shards 2)"}},
      // Two at once (the default batch size, 512, for an unset field): both, joined.
      {"data { train_dir: \"/data/a\" seed: 4 }",
       a,
       {"data.seed is 4", "data.batch_size is 512, the checkpoint's run had 32",
        "set data.seed back to 3 and set data.batch_size back to 32"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.config);
    const Status s = CheckResumeEpochOrder(ck, cfg32, blobs, c.config, c.data, per_epoch);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("the checkpoint at /ck/ckpt-17 was saved in the middle of epoch 1 "
                               "(at position 544 of the epoch's order)"),
              std::string::npos)
        << s;
    for (const std::string& part : c.parts)
      EXPECT_NE(s.message().find(part), std::string::npos) << part << "\n" << s;
    // At the end of the epoch (the position a run's last checkpoint has) and at the start of
    // one, the same change is accepted, with a warning.
    for (const int64_t at : {per_epoch, int64_t{0}}) {
      std::map<std::string, std::string> boundary = blobs;
      boundary["run/dataset"] = RunDatasetBlob(1, at);
      FLAGS_logtostderr = true;
      testing::internal::CaptureStderr();
      const Status ok = CheckResumeEpochOrder(ck, cfg32, boundary, c.config, c.data, per_epoch);
      const std::string err = testing::internal::GetCapturedStderr();
      EXPECT_TRUE(ok.ok()) << ok;
      EXPECT_NE(err.find("resuming the checkpoint at /ck/ckpt-17 at the " +
                         std::string(at == 0 ? "start" : "end") +
                         " of epoch 2 with other settings than the run that wrote it: "),
                std::string::npos)
          << err;
      EXPECT_NE(err.find(c.parts[0]), std::string::npos) << err;
    }
  }

  // Not recorded, not compared: a checkpoint without a data section in its config (a library
  // caller's), without the layout (older), without a reader position (synthetic data).
  const std::string seed4 = "data { train_dir: \"/data/a\" batch_size: 32 seed: 4 }";
  EXPECT_TRUE(CheckResumeEpochOrder(ck, "name: \"test\"", blobs, seed4, a, per_epoch).ok());
  EXPECT_TRUE(CheckResumeEpochOrder(ck, "", blobs, seed4, a, per_epoch).ok());
  DatasetVocabulary unlaid = a;
  unlaid.shard_rows.clear();
  const std::map<std::string, std::string> older = {{"run/dataset", RunDatasetBlob(0, 544)},
                                                    {kVocabularyBlob, EncodeVocabulary(unlaid)}};
  EXPECT_EQ(EncodeVocabulary(unlaid).find("shard_rows"), std::string::npos);
  EXPECT_TRUE(CheckResumeEpochOrder(ck, cfg32, older, cfg32, three, per_epoch).ok());
  EXPECT_TRUE(CheckResumeEpochOrder(ck, cfg32, {}, seed4, a, per_epoch).ok());
  const Status bad = CheckResumeEpochOrder(
      ck, cfg32, {{"run/dataset", RunDatasetBlob(0, 544)}, {kVocabularyBlob, "shard_rows=1,x\n"}},
      cfg32, a, per_epoch);
  EXPECT_EQ(bad.code(), StatusCode::kDataLoss) << bad;
}

// Restore runs the check only for a run that continues the checkpoint
// (resume_examples_per_epoch set), before anything is loaded; `ips eval` may use any batch size.
TEST(Checkpoint, ResumeEpochOrder_CheckedByRestoreOnlyForAResume) {
  const std::string dir = TempDir();
  State a(1);
  a.Perturb(3, 1, 2);
  a.content.config_text = "data { train_dir: \"/data/a\" batch_size: 32 seed: 3 }";
  a.content.vocabulary = Ml100k("/data/a", {19381, 19381});
  a.content.blobs["run/dataset"] = RunDatasetBlob(0, 544);
  CheckpointOptions o;
  o.dir = dir;
  ASSERT_TRUE(std::move(CheckpointWriter::Create(o)).value()->Write(17, a.content).ok());

  State b(2);
  Poison(&b);
  b.content.config_text = "data { train_dir: \"/data/a\" batch_size: 64 seed: 3 }";
  b.content.vocabulary = a.content.vocabulary;
  b.content.resume_examples_per_epoch = 77524;
  auto refused = LoadCheckpoint(dir, b.content, nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument) << refused.status();
  EXPECT_NE(refused.status().message().find("the checkpoint at " + dir +
                                            "/ckpt-17 was saved in the middle of epoch 1"),
            std::string::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find("set data.batch_size back to 32"), std::string::npos)
      << refused.status();
  for (const auto& t : b.content.tensors) EXPECT_TRUE(std::isnan(t.data[0])) << t.name;
  for (const auto& t : b.tables) EXPECT_EQ(t->Stats().rows, 0);

  b.content.resume_examples_per_epoch = -1;  // an evaluation
  auto evaluated = LoadCheckpoint(dir, b.content, nullptr);
  ASSERT_TRUE(evaluated.ok()) << evaluated.status();
  ExpectSameState(b, a);
  ps::RemoveTree(dir);
}

// A resumed checkpoint whose position lies beyond the run (CheckResumeFitsRun, the one check of
// `ips train --resume`, its mpirun workers and `ips config check --resume`): refused through
// CheckpointContent::check_resume by Restore before anything is loaded (the tables of a large
// run are not read first), FAILED_PRECONDITION naming the checkpoint and the value to set.
TEST(Checkpoint, ResumeFitsRun_RefusedByRestoreBeforeAnythingLoads) {
  const std::string dir = TempDir();
  State a(1);
  a.Perturb(3, 1, 2);
  a.content.blobs["run/dataset"] = RunDatasetBlob(1, 544);  // epoch 2 (0-based 1)
  CheckpointOptions o;
  o.dir = dir;
  ASSERT_TRUE(std::move(CheckpointWriter::Create(o)).value()->Write(64, a.content).ok());

  config::Config cfg;
  cfg.mutable_train()->set_epochs(1);
  State b(2);
  Poison(&b);
  b.content.check_resume = [&cfg](const std::string& checkpoint,
                                  const std::map<std::string, std::string>& blobs) {
    return CheckResumeFitsRun(cfg, checkpoint, blobs);
  };
  auto refused = LoadCheckpoint(dir, b.content, nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_EQ(refused.status().message(),
            "the checkpoint at " + dir +
                "/ckpt-64 was saved in epoch 2, beyond this run's train.epochs 1: set "
                "train.epochs to at least 2 to continue it (--set train.epochs=2)");
  for (const auto& t : b.content.tensors) EXPECT_TRUE(std::isnan(t.data[0])) << t.name;
  for (const auto& t : b.tables) EXPECT_EQ(t->Stats().rows, 0);

  cfg.mutable_train()->set_epochs(2);  // the run that fits
  auto resumed = LoadCheckpoint(dir, b.content, nullptr);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ExpectSameState(b, a);
  ps::RemoveTree(dir);
}

// The synthetic form: the step (warm-up included) against warmup_steps + steps, capped by
// train.max_steps; every field that falls short is named. A missing or mis-sized blob is left to
// the trainer (OK here).
TEST(Checkpoint, ResumeFitsRun_SyntheticStepBeyondTheRunNamesEveryFieldToRaise) {
  const int64_t step = 3;
  const std::map<std::string, std::string> blobs = {
      {"run/synthetic_step", std::string(reinterpret_cast<const char*>(&step), sizeof(step))}};
  config::Config cfg;
  cfg.mutable_data()->mutable_synthetic()->set_warmup_steps(1);
  cfg.mutable_data()->mutable_synthetic()->set_steps(1);
  Status s = CheckResumeFitsRun(cfg, "/ck/ckpt-3", blobs);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(s.message(),
            "the checkpoint at /ck/ckpt-3 was saved at step 3, beyond this run's 2 steps "
            "(data.synthetic.warmup_steps 1 + data.synthetic.steps 1): set data.synthetic.steps "
            "to at least 2 to continue it (--set data.synthetic.steps=2)");
  cfg.mutable_train()->set_max_steps(1);
  s = CheckResumeFitsRun(cfg, "/ck/ckpt-3", blobs);
  EXPECT_NE(s.message().find(", capped by train.max_steps 1): set data.synthetic.steps and "
                             "train.max_steps to at least 2 to continue it (--set "
                             "data.synthetic.steps=2 --set train.max_steps=2)"),
            std::string::npos)
      << s;
  cfg.mutable_data()->mutable_synthetic()->set_steps(5);
  cfg.mutable_train()->set_max_steps(2);
  EXPECT_TRUE(CheckResumeFitsRun(cfg, "/ck/ckpt-3", blobs).ok());
  cfg.mutable_train()->set_max_steps(0);
  EXPECT_TRUE(CheckResumeFitsRun(cfg, "/ck/ckpt-3", blobs).ok());
  EXPECT_TRUE(CheckResumeFitsRun(cfg, "/ck/ckpt-3", {}).ok());
  EXPECT_TRUE(CheckResumeFitsRun(cfg, "/ck/ckpt-3", {{"run/synthetic_step", "x"}}).ok());
}

// QA: as root, CheckDir's permission test passed under /proc and /sys, so `ips train` went on to
// create checkpoint.dir there (on a cgroup mount, a new directory is a cgroup). CheckDir refuses
// a kernel pseudo file system first, naming it and where DIR would be created; only the checks
// run here (nothing is created under /proc or /sys). A directory on a disk file system passes.
TEST(Checkpoint, CheckDir_RefusesAKernelPseudoFileSystem_DiskPasses) {
  const std::string tag = std::to_string(::getpid());
  EXPECT_EQ(ps::PseudoFileSystemOf("/proc"), "procfs");
  EXPECT_EQ(ps::PseudoFileSystemOf("/proc/self"), "procfs");
  EXPECT_EQ(ps::PseudoFileSystemOf("/tmp"), "");
  EXPECT_EQ(ps::PseudoFileSystemOf("/no/such/path"), "");
  const std::string proc = "/proc/ips_ck_" + tag;
  Status s = CheckpointWriter::CheckDir(proc + "/a");
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(s.message(), "checkpoint.dir " + proc +
                             "/a would be created in /proc, which is on procfs, a kernel pseudo "
                             "file system that holds no checkpoint files: choose a directory on a "
                             "disk file system");
  s = CheckpointWriter::CheckDir("/proc/");
  EXPECT_EQ(s.message().rfind("checkpoint.dir /proc/ is on procfs, ", 0), 0u) << s;
  if (ps::PseudoFileSystemOf("/sys") == "sysfs") {
    s = CheckpointWriter::CheckDir("/sys/ips_ck_" + tag);
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find("would be created in /sys, which is on sysfs"), std::string::npos)
        << s;
  }
  EXPECT_FALSE(ps::PathExists(proc));
  // The same check, for another writer's directory (`ips export --output`).
  s = ps::CheckNotOnPseudoFileSystem("/proc/x", "--output", "serving bundle files");
  EXPECT_EQ(s.message().rfind("--output /proc/x would be created in /proc, which is on procfs, a "
                              "kernel pseudo file system that holds no serving bundle files",
                              0),
            0u)
      << s;
  const std::string dir = TempDir();
  EXPECT_TRUE(CheckpointWriter::CheckDir(dir + "/ck/a").ok());
  EXPECT_TRUE(ps::CheckNotOnPseudoFileSystem(dir, "checkpoint.dir", "checkpoint files").ok());
  EXPECT_FALSE(ps::PathExists(dir + "/ck"));
  ps::RemoveTree(dir);
}

// MakeDirs's error takes its code from mkdir(2)'s errno (StatusFromErrno), as every file error:
// a path under a regular file cannot exist (NOT_FOUND, "Not a directory"), not an INTERNAL error.
TEST(Checkpoint, MakeDirs_ErrorCodeFollowsErrno) {
  const std::string dir = TempDir();
  FILE* f = std::fopen((dir + "/file").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  const Status s = ps::MakeDirs(dir + "/file/sub/x");
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_EQ(s.message(), dir + "/file/sub: cannot create directory: Not a directory");
  EXPECT_TRUE(ps::MakeDirs(dir + "/a/b").ok());
  ps::RemoveTree(dir);
}

TEST(Checkpoint, Reshard_TwoWritersIntoThreeTables_ThroughTheReader) {
  // A checkpoint of one table per "server" rank is emulated by two checkpoints of one table each;
  // the reader's TableFiles + ps::LoadTableChain with a keep predicate do the re-sharding.
  const std::string dir = TempDir();
  State a(1);
  a.Perturb(5, 1, 6);
  CheckpointOptions o;
  o.dir = dir;
  ASSERT_TRUE(std::move(CheckpointWriter::Create(o)).value()->Write(6, a.content).ok());
  auto r = std::move(CheckpointReader::Open(dir)).value();
  const auto want = Rows(*a.tables[0]);
  std::map<uint64_t, std::vector<float>> merged;
  for (int rank = 0; rank < 3; ++rank) {
    auto t = std::move(ps::DynamicTable::Create(TableOpts("item"))).value();
    ASSERT_TRUE(ps::LoadTableChain(
                    r->TableFiles("item"), t.get(),
                    [rank](uint64_t k) { return Mix64(k) % 3 == static_cast<uint64_t>(rank); },
                    nullptr)
                    .ok());
    for (const auto& [k, v] : Rows(*t)) {
      EXPECT_EQ(Mix64(k) % 3, static_cast<uint64_t>(rank));
      merged[k] = v;
    }
  }
  EXPECT_TRUE(merged == want);
  ps::RemoveTree(dir);
}

// ---- A checkpoint of another model: the error says which model wrote it -----------------------

constexpr char kDinConfig[] = R"(
version: 1
data { max_history: 5 }
model { type: DIN embedding_dim: 4 attention_hidden: [6, 5] mlp_hidden: [7, 4] }
tables { name: "item" dim: 4 }
tables { name: "category" dim: 4 }
)";

// kDinConfig with each `from` replaced by its `to`.
std::string DinConfigWith(const std::vector<std::pair<std::string, std::string>>& edits) {
  std::string c = kDinConfig;
  for (const auto& [from, to] : edits) {
    const size_t p = c.find(from);
    EXPECT_NE(p, std::string::npos) << from;
    if (p != std::string::npos) c.replace(p, from.size(), to);
  }
  return c;
}

// Writes the state of `config` (a model at random weights, keys 1..6 in each table) as
// <dir>/ckpt-3, recording `recorded_config` as its config.
void WriteCheckpointOf(const std::string& config, const std::string& recorded_config,
                       const std::string& dir) {
  auto state = MakeServingState(config, 8, {6, 6}, ps::TableOptions(), 0.5, 1);
  ASSERT_TRUE(state.ok()) << state.status();
  (*state)->content.config_text = recorded_config;
  CheckpointOptions o;
  o.dir = dir;
  auto info = std::move(CheckpointWriter::Create(o)).value()->Write(3, (*state)->content);
  ASSERT_TRUE(info.ok()) << info.status();
}

// LoadCheckpoint (what `ips eval`, `ips train --resume` and the cluster worker's resume call) of
// the checkpoint in `dir` into the state of `config`, whose content records `given_config`;
// checks that nothing was loaded and returns the error.
Status LoadInto(const std::string& dir, const std::string& config,
                const std::string& given_config) {
  auto state = MakeServingState(config, 8, {0, 0}, ps::TableOptions(), 0, 0);
  EXPECT_TRUE(state.ok()) << state.status();
  if (!state.ok()) return state.status();
  (*state)->content.config_text = given_config;
  for (auto& t : (*state)->content.tensors)
    for (int64_t i = 0; i < t.size; ++i) t.data[i] = std::numeric_limits<float>::quiet_NaN();
  auto step = LoadCheckpoint(dir, (*state)->content, nullptr);
  EXPECT_FALSE(step.ok());
  for (const auto& t : (*state)->content.tensors) EXPECT_TRUE(std::isnan(t.data[0])) << t.name;
  for (const auto& t : (*state)->tables) EXPECT_EQ(t->Stats().rows, 0);
  return step.status();
}

TEST(Checkpoint, CheckpointOfAnotherModel_ErrorSaysWhichModelWroteItAndWhatTheConfigSays) {
  const std::string dir = TempDir();
  WriteCheckpointOf(kDinConfig, kDinConfig, dir);
  const std::string at = "the checkpoint at " + dir + "/ckpt-3 was written by ";
  {
    SCOPED_TRACE("another model type");
    const std::string dien = DinConfigWith({{"type: DIN", "type: DIEN rnn_hidden: 8"}});
    const Status s = LoadInto(dir, dien, dien);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(at + "a DIN model (model.embedding_dim 4), the config says DIEN "
                                    "(model.embedding_dim 4)"),
              std::string::npos)
        << s;
    EXPECT_NE(s.message().find("model.rnn_hidden (checkpoint 36, config 8)"), std::string::npos)
        << s;
    // The tensor that did not fit is still named, after the explanation.
    EXPECT_NE(s.message().find("first misfit: " + dir + "/ckpt-3: no tensor 'dense/"),
              std::string::npos)
        << s;
  }
  {
    SCOPED_TRACE("another embedding width");
    const std::string cfg = DinConfigWith({{"embedding_dim: 4", "embedding_dim: 8"},
                                           {"\"item\" dim: 4", "\"item\" dim: 8"},
                                           {"\"category\" dim: 4", "\"category\" dim: 8"}});
    const Status s = LoadInto(dir, cfg, cfg);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(at + "a DIN model (model.embedding_dim 4), the config says DIN "
                                    "(model.embedding_dim 8); it also differs in "
                                    "tables['item'].dim (checkpoint 4, config 8), "
                                    "tables['category'].dim (checkpoint 4, config 8)"),
              std::string::npos)
        << s;
  }
  {
    SCOPED_TRACE("same model and width, other layers");
    const std::string cfg = DinConfigWith({{"mlp_hidden: [7, 4]", "mlp_hidden: [9, 4]"}});
    const Status s = LoadInto(dir, cfg, cfg);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(at + "a DIN model (model.embedding_dim 4) with other settings than "
                                    "the config's: model.mlp_hidden (checkpoint [7, 4], config "
                                    "[9, 4])"),
              std::string::npos)
        << s;
  }
  ps::RemoveTree(dir);
}

// Checkpoints that record no config (library callers; or a placeholder without a model section)
// and loaders that give none keep the misfit message; what is known is added, nothing guessed.
TEST(Checkpoint, CheckpointOfAnotherModel_WithoutConfigs_FallsBackToTheMisfit) {
  const std::string dien = DinConfigWith({{"type: DIN", "type: DIEN rnn_hidden: 8"}});
  for (const std::string& recorded : {std::string(), std::string("name: \"placeholder\"")}) {
    SCOPED_TRACE("recorded config '" + recorded + "'");
    const std::string dir = TempDir();
    WriteCheckpointOf(kDinConfig, recorded, dir);
    const Status s = LoadInto(dir, dien, dien);
    EXPECT_NE(s.message().find(dir + "/ckpt-3: no tensor 'dense/"), std::string::npos) << s;
    EXPECT_EQ(s.message().find("written by"), std::string::npos) << s;
    ps::RemoveTree(dir);
  }
  const std::string dir = TempDir();
  WriteCheckpointOf(kDinConfig, kDinConfig, dir);
  const Status s = LoadInto(dir, dien, "");
  EXPECT_NE(s.message().find(dir + "/ckpt-3: no tensor 'dense/"), std::string::npos) << s;
  EXPECT_NE(s.message().find("(the checkpoint was written by a DIN model (model.embedding_dim 4))"),
            std::string::npos)
      << s;
  ps::RemoveTree(dir);
}

// One training step as the trainer does it (pull -> forward -> backward -> push -> dense update
// -> advance the tables' clock), on a batch drawn from `rng`; returns the loss.
double TrainStep(State* s, Rng* rng, int64_t step) {
  const int64_t B = 8, T = 5, D = 4;
  std::vector<int32_t> lengths(B);
  std::vector<uint64_t> item_keys(B * T + B, 0), cat_keys(B * T + B, 0);
  std::vector<float> labels(B);
  for (int64_t b = 0; b < B; ++b) {
    lengths[b] = static_cast<int32_t>(rng->UniformInt(T + 1));
    for (int64_t t = T - lengths[b]; t < T; ++t) {
      item_keys[b * T + t] = 1 + rng->UniformInt(60);
      cat_keys[b * T + t] = 1 + item_keys[b * T + t] % 7;
    }
    item_keys[B * T + b] = 1 + rng->UniformInt(60);
    cat_keys[B * T + b] = 1 + item_keys[B * T + b] % 7;
    labels[b] = rng->Uniform() < 0.5 ? 1.0f : 0.0f;
  }
  const int64_t n = B * T + B;
  std::vector<float> item_rows(n * D), cat_rows(n * D), d_item(n * D), d_cat(n * D);
  EXPECT_TRUE(s->tables[0]->Pull(item_keys.data(), n, item_rows.data()).ok());
  EXPECT_TRUE(s->tables[1]->Pull(cat_keys.data(), n, cat_rows.data()).ok());
  std::vector<int64_t> index(n);
  for (int64_t i = 0; i < n; ++i) index[i] = i;
  models::CtrInputs<float> in;
  in.batch = B;
  in.lengths = lengths.data();
  in.item_index = index.data();
  in.cat_index = index.data();
  in.item_rows = item_rows.data();
  in.num_item_rows = n;
  in.cat_rows = cat_rows.data();
  in.num_cat_rows = n;
  in.labels = labels.data();
  kernels::Context ctx;
  float loss = 0;
  EXPECT_TRUE(s->model->Forward(ctx, in, /*training=*/true, &loss).ok());
  EXPECT_TRUE(s->model->Backward(ctx, in, d_item.data(), d_cat.data()).ok());
  EXPECT_TRUE(s->tables[0]->Push(item_keys.data(), n, d_item.data()).ok());
  EXPECT_TRUE(s->tables[1]->Push(cat_keys.data(), n, d_cat.data()).ok());
  auto& p = s->model->params();
  EXPECT_TRUE(s->opt->Apply(ctx, step, p.values(), p.grads()).ok());
  for (auto& t : s->tables) t->AdvanceStep(step);
  return loss;
}

std::string RngBytes(const Rng& rng) {
  return std::string(reinterpret_cast<const char*>(&rng), sizeof(Rng));
}

TEST(Checkpoint, Resume_LossSequenceBitIdenticalToAnUninterruptedRun) {
  const std::string dir = TempDir();
  // Uninterrupted: 12 steps, checkpointing (incrementally) after steps 4 and 8.
  State a(1);
  Rng rng(77);
  CheckpointOptions o;
  o.dir = dir;
  o.incremental = true;
  auto w = std::move(CheckpointWriter::Create(o)).value();
  std::vector<double> losses;
  for (int64_t step = 1; step <= 12; ++step) {
    losses.push_back(TrainStep(&a, &rng, step));
    if (step % 4 == 0 && step < 12) {
      a.content.blobs["rng/batches"] = RngBytes(rng);
      a.content.blobs["trainer/steps"] = std::to_string(step);
      ASSERT_TRUE(w->Write(step, a.content).ok());
    }
  }
  // Resume from the latest (ckpt-8, an incremental one) in a fresh process state.
  State b(99);
  std::map<std::string, std::string> blobs;
  auto step0 = LoadCheckpoint(dir, b.content, &blobs);
  ASSERT_TRUE(step0.ok()) << step0.status();
  ASSERT_EQ(*step0, 8);
  ASSERT_EQ(blobs["trainer/steps"], "8");
  Rng resumed(0);
  ASSERT_EQ(blobs["rng/batches"].size(), sizeof(Rng));
  std::memcpy(static_cast<void*>(&resumed), blobs["rng/batches"].data(), sizeof(Rng));
  for (int64_t step = 9; step <= 12; ++step) {
    const double loss = TrainStep(&b, &resumed, step);
    EXPECT_EQ(loss, losses[step - 1]) << "step " << step;  // bit for bit
  }
  ExpectSameState(b, a);
  ps::RemoveTree(dir);
}

}  // namespace
}  // namespace ips
