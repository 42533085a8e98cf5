// A checkpoint removed while it is being read (worker/checkpoint.h): `ips eval --checkpoint ROOT`
// or `ips export --checkpoint ROOT` on the root of a job that is still training, whose writer
// removes checkpoints beyond checkpoint.keep_last. The reader's race hook
// (CheckpointReader::SetRaceHookForTesting) lets the writer publish newer checkpoints, and so
// remove the one the reader picked, exactly between the reader's choice and its reading of the
// files. Opening a root then picks the newest checkpoint again (a bounded number of times) and
// says the checkpoint was removed while being read when it gives up; opening one ckpt-<step> that
// vanishes says so naming it; a damaged checkpoint keeps its DATA_LOSS (and is skipped with a
// warning when older ones load), as before.
#include <glog/logging.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ps/checkpoint_io.h"
#include "ps/dynamic_table.h"
#include "tests/testing/scoped_race_hook.h"
#include "worker/checkpoint.h"

namespace ips {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/ips_ckpt_race_XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  EXPECT_NE(d, nullptr);
  return d;
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A small training state: one dense tensor, a blob and one table. Step k writes k everywhere, so
// a restored state tells which checkpoint it came from.
struct State {
  std::vector<float> dense;
  std::unique_ptr<ps::DynamicTable> table;
  CheckpointContent content;

  explicit State(size_t dense_size = 16) : dense(dense_size, 0.f) {
    ps::TableOptions o;
    o.name = "item";
    o.dim = 4;
    o.num_shards = 2;
    o.rows_per_slab = 16;
    table = std::move(ps::DynamicTable::Create(o)).value();
    content.tensors.push_back({"dense/w", dense.data(), static_cast<int64_t>(dense.size())});
    content.tables.push_back(table.get());
  }

  void SetStep(int64_t step) {
    for (float& v : dense) v = static_cast<float>(step);
    content.blobs["run/step"] = std::to_string(step);
    table->AdvanceStep(step);
    std::vector<uint64_t> keys = {static_cast<uint64_t>(step), 1000};
    std::vector<float> rows(keys.size() * 4), grads(keys.size() * 4, 0.5f);
    ASSERT_TRUE(table->Pull(keys.data(), keys.size(), rows.data()).ok());
    ASSERT_TRUE(table->Push(keys.data(), keys.size(), grads.data()).ok());
  }
};

// A training job writing checkpoints into `dir` with retention.
struct Job {
  State state;
  std::unique_ptr<CheckpointWriter> writer;
  int64_t step = 0;

  Job(const std::string& dir, int keep_last, bool incremental = false, size_t dense_size = 16)
      : state(dense_size) {
    CheckpointOptions o;
    o.dir = dir;
    o.keep_last = keep_last;
    o.incremental = incremental;
    o.full_every = 2;
    writer = std::move(CheckpointWriter::Create(o)).value();
  }
  // Trains one step and writes its checkpoint (retention removes the oldest beyond keep_last).
  void Checkpoint() {
    state.SetStep(++step);
    auto info = writer->Write(step, state.content);
    ASSERT_TRUE(info.ok()) << info.status();
  }
};

// The QA scenario: the reader picks ckpt-2 (LATEST and the newest), and before it reads the
// files, the job writes two more checkpoints, whose retention (keep_last 2) removes ckpt-2. The
// reader picks again and opens the newest one, ckpt-4, and restores exactly it.
TEST(CheckpointRace, RootOpen_PickedCheckpointRemovedByRetention_OpensTheNewestAgain) {
  for (const bool incremental : {false, true}) {
    SCOPED_TRACE(incremental ? "incremental" : "full");
    const std::string dir = TempDir();
    Job job(dir, /*keep_last=*/2, incremental);
    for (int k = 0; k < 2; ++k) job.Checkpoint();
    testing::ScopedRaceHook picked("picked", [&](size_t n, const std::string&) {
      if (n != 1) return;
      job.Checkpoint();
      job.Checkpoint();
    });
    auto reader = CheckpointReader::Open(dir);
    ASSERT_TRUE(reader.ok()) << reader.status();
    EXPECT_EQ((*reader)->step(), 4);
    EXPECT_EQ((*reader)->dir(), dir + "/ckpt-4");
    EXPECT_EQ(picked.seen(), (std::vector<std::string>{dir + "/ckpt-2", dir + "/ckpt-4"}));
    EXPECT_FALSE(ps::IsDirectory(dir + "/ckpt-2"));
    State restored;
    std::map<std::string, std::string> blobs;
    ASSERT_TRUE((*reader)->Restore(restored.content, &blobs).ok());
    EXPECT_EQ(blobs["run/step"], "4");
    EXPECT_EQ(restored.dense[0], 4.f);
    EXPECT_EQ(restored.table->Stats().rows, job.state.table->Stats().rows);
    ps::RemoveTree(dir);
  }
}

// A job that removes whatever the reader picks, every time: the reader gives up after a bounded
// number of attempts with an error that says what happened (and how to avoid it), not one that
// reads like a corrupt checkpoint.
TEST(CheckpointRace, RootOpen_RemovedOnEveryAttempt_GivesUpSayingRemovedWhileBeingRead) {
  const std::string dir = TempDir();
  Job job(dir, /*keep_last=*/1);
  job.Checkpoint();
  auto picked = std::make_unique<testing::ScopedRaceHook>(
      "picked", [&](size_t, const std::string&) { job.Checkpoint(); });
  auto reader = CheckpointReader::Open(dir);
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(picked->seen().size(), 5u);
  const Status& s = reader.status();
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_TRUE(Contains(s.message(), "removed while being read")) << s;
  EXPECT_TRUE(Contains(s.message(), "5 times")) << s;
  EXPECT_TRUE(Contains(s.message(), "checkpoint.keep_last")) << s;
  EXPECT_TRUE(Contains(s.message(), dir + "/ckpt-5")) << s;  // the last one picked
  EXPECT_FALSE(Contains(s.message(), "no checkpoint of")) << s;
  picked.reset();
  // Once the job pauses, the root opens.
  auto later = CheckpointReader::Open(dir);
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ((*later)->step(), 6);
  ps::RemoveTree(dir);
}

// One ckpt-<step> directory (not a root) is not resolved again: its removal is the error, naming
// the checkpoint.
TEST(CheckpointRace, CheckpointDirOpen_RemovedWhileRead_SaysSoNamingIt) {
  const std::string dir = TempDir();
  Job job(dir, /*keep_last=*/2);
  for (int k = 0; k < 2; ++k) job.Checkpoint();
  testing::ScopedRaceHook picked("picked", [&](size_t, const std::string& d) {
    if (d != dir + "/ckpt-2") return;
    job.Checkpoint();
    job.Checkpoint();
  });
  auto reader = CheckpointReader::Open(dir + "/ckpt-2");
  ASSERT_FALSE(reader.ok());
  const Status& s = reader.status();
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_TRUE(Contains(s.message(), dir + "/ckpt-2: checkpoint removed while being read")) << s;
  EXPECT_TRUE(Contains(s.message(), "checkpoint.keep_last")) << s;
  ps::RemoveTree(dir);
}

// `ips eval` and `ips train --resume` (LoadCheckpoint): removed between Open and the end of
// Restore's checks, nothing loaded yet: the root is opened again.
TEST(CheckpointRace, LoadCheckpoint_RemovedBetweenOpenAndRestore_OpensTheRootAgain) {
  const std::string dir = TempDir();
  Job job(dir, /*keep_last=*/2);
  for (int k = 0; k < 2; ++k) job.Checkpoint();
  testing::ScopedRaceHook opened("opened", [&](size_t n, const std::string&) {
    if (n != 1) return;
    job.Checkpoint();
    job.Checkpoint();
  });
  State restored;
  std::map<std::string, std::string> blobs;
  auto step = LoadCheckpoint(dir, restored.content, &blobs);
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ(*step, 4);
  EXPECT_EQ(opened.seen(), (std::vector<std::string>{dir + "/ckpt-2", dir + "/ckpt-4"}));
  EXPECT_EQ(blobs["run/step"], "4");
  EXPECT_EQ(restored.dense[0], 4.f);
  ps::RemoveTree(dir);
}

// A reader that already opened its checkpoint reads it later (`ips export` reads the dense file
// after Open): once the checkpoint is removed, the error says so.
TEST(CheckpointRace, ReadAfterOpen_CheckpointRemoved_ErrorSaysRemovedWhileBeingRead) {
  const std::string dir = TempDir();
  Job job(dir, /*keep_last=*/1);
  job.Checkpoint();
  auto reader = CheckpointReader::Open(dir);
  ASSERT_TRUE(reader.ok()) << reader.status();
  job.Checkpoint();
  std::map<std::string, std::vector<float>> tensors;
  const Status s = (*reader)->ReadDense(&tensors, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_TRUE(Contains(s.message(), dir + "/ckpt-1: checkpoint removed while being read")) << s;
  State restored;
  const Status r = (*reader)->Restore(restored.content, nullptr);
  EXPECT_TRUE(Contains(r.message(), "removed while being read")) << r;
  const Status t = (*reader)->ExplainReadError(NotFoundError("x: missing"));
  EXPECT_TRUE(Contains(t.message(), "removed while being read")) << t;
  ps::RemoveTree(dir);
}

// Damage is not removal: a corrupt or truncated file (still there) keeps its DATA_LOSS, and a
// damaged newer checkpoint is still skipped with a warning when an older one loads; a file
// deleted from a checkpoint that is still there is NOT_FOUND "missing", as before.
TEST(CheckpointRace, DamagedCheckpoint_KeepsItsErrorAndIsSkippedWithAWarning) {
  const std::string dir = TempDir();
  Job job(dir, /*keep_last=*/3);
  for (int k = 0; k < 2; ++k) job.Checkpoint();
  const std::string dense2 = dir + "/ckpt-2/dense.bin";
  const int64_t size = ps::DigestFile(dense2).value().bytes;
  ASSERT_EQ(::truncate(dense2.c_str(), size - 7), 0);

  FLAGS_logtostderr = true;
  ::testing::internal::CaptureStderr();
  auto older = CheckpointReader::Open(dir);
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(older.ok()) << older.status();
  EXPECT_EQ((*older)->step(), 1);
  EXPECT_TRUE(Contains(err, "checkpoint " + dir + "/ckpt-2 cannot be loaded (DATA_LOSS: " + dense2))
      << err;

  auto one = CheckpointReader::Open(dir + "/ckpt-2");
  ASSERT_FALSE(one.ok());
  EXPECT_EQ(one.status().code(), StatusCode::kDataLoss) << one.status();
  EXPECT_FALSE(Contains(one.status().message(), "removed while being read")) << one.status();

  const std::string dense1 = dir + "/ckpt-1/dense.bin";
  ASSERT_EQ(std::remove(dense1.c_str()), 0);
  auto none = CheckpointReader::Open(dir);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kDataLoss) << none.status();
  EXPECT_EQ(none.status().message().rfind(dense2 + ": truncated", 0), 0u) << none.status();
  EXPECT_TRUE(Contains(none.status().message(), "NOT_FOUND: " + dense1 + ": missing"))
      << none.status();
  EXPECT_FALSE(Contains(none.status().message(), "removed while being read")) << none.status();
  ps::RemoveTree(dir);
}

// A real writer thread with keep_last 1 against a reader opening the root and reading its dense
// file in a loop: every read either succeeds or says the checkpoint was removed while being read;
// none sees a half-removed checkpoint as damaged (retention renames a checkpoint away before it
// deletes its files).
TEST(CheckpointRace, ConcurrentRetention_ReaderNeverSeesAHalfRemovedCheckpoint) {
  const std::string dir = TempDir();
  // 16 MB of dense weights: reading a checkpoint takes long enough to overlap its removal.
  Job job(dir, /*keep_last=*/1, /*incremental=*/false, /*dense_size=*/1 << 22);
  job.Checkpoint();
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int k = 0; k < 20; ++k) job.Checkpoint();
    done = true;
  });
  int reads = 0, removed = 0;
  while (!done) {
    auto reader = CheckpointReader::Open(dir, /*warn=*/false);
    Status s = reader.ok() ? (*reader)->ReadDense(nullptr, nullptr) : reader.status();
    ++reads;
    if (s.ok()) continue;
    ++removed;
    EXPECT_TRUE(Contains(s.message(), "removed while being read")) << s;
  }
  writer.join();
  EXPECT_GT(reads, 0);
  LOG(INFO) << reads << " reads, " << removed << " of them found their checkpoint removed";
  ps::RemoveTree(dir);
}

}  // namespace
}  // namespace ips
