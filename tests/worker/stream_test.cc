// Streaming training (worker/stream.h): tailing a growing file and a pipe (every line exactly
// once, partial lines held back, stop/idle/EOF ends), bad-line errors, the bounded user history
// store, the example builder (history before the event, no positive among the negatives,
// determinism, uniform negatives) and the train/publish loop (publish cadence, partial batches on
// a slow stream, errors stop it). The drift experiment is stream_drift_test.cc.
#include "worker/stream.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/random.h"
#include "tests/models/trainer_test_util.h"
#include "tests/testing/status_matchers.h"
#include "worker/record_parsers.h"

namespace ips {
namespace {

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/ips_stream_test_" +
         std::to_string(getpid()) + "_" + name;
}

// Event i of a small deterministic stream: 7 users, 40 items, category = item % 5 + 1.
Event TestEvent(int64_t i) {
  Event e;
  e.user = 1 + Mix64(i) % 7;
  e.item = 1 + Mix64(i + 1000) % 40;
  e.category = e.item % 5 + 1;
  e.timestamp = 1700000000 + i;
  e.action = Action::kView;
  return e;
}

std::string Line(const Event& e) {
  std::string s;
  AppendEventLine(e, &s);
  return s;
}

void AppendToFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::app | std::ios::binary);
  f << bytes;
  f.flush();
}

EventSourceOptions FastPolling() {
  EventSourceOptions o;
  o.poll_min_s = 0.0005;
  o.poll_max_s = 0.005;
  return o;
}

// ---- EventStreamSource ------------------------------------------------------------------------

// A writer appends lines in pieces (splitting lines mid-way, several lines per write, pauses in
// between) while the source follows the file: every line comes out exactly once, in order, and a
// trailing unterminated line is never returned while following.
TEST(EventStreamSource, TailsGrowingFileEveryLineOnceWithPartialLines) {
  const std::string path = TempPath("grow.tsv");
  std::remove(path.c_str());
  AppendToFile(path, "");
  constexpr int kLines = 400;
  std::string all;
  for (int i = 0; i < kLines; ++i) all += Line(TestEvent(i));
  all += "\n";                     // a blank line is skipped (it still counts as a line)
  all += Line(TestEvent(kLines));  // one more complete line ...
  all += "7\t3\t2\t17000";         // ... and a partial one that never gets its newline
  auto src = EventStreamSource::Open(path, FastPolling());
  ASSERT_TRUE(src.ok()) << src.status();

  std::thread writer([&] {
    Rng rng(3);
    size_t pos = 0;
    while (pos < all.size()) {
      const size_t n = std::min<size_t>(all.size() - pos, 1 + rng.UniformInt(90));
      AppendToFile(path, all.substr(pos, n));
      pos += n;
      if (rng.UniformInt(4) == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  std::vector<StreamEvent> got;
  StreamEvent e;
  double last_read = 0;
  while (static_cast<int>(got.size()) < kLines + 1) {
    auto r = (*src)->Next(&e);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(*r);
    EXPECT_GE(e.read_time, last_read);
    last_read = e.read_time;
    got.push_back(e);
  }
  writer.join();
  for (int i = 0; i <= kLines; ++i) {
    const Event want = TestEvent(i);
    EXPECT_EQ(got[i].index, i);
    EXPECT_EQ(got[i].line, i < kLines ? i + 1 : i + 2);  // the blank line counts
    EXPECT_EQ(got[i].event.user, want.user) << i;
    EXPECT_EQ(got[i].event.item, want.item) << i;
    EXPECT_EQ(got[i].event.category, want.category) << i;
    EXPECT_EQ(got[i].event.timestamp, want.timestamp) << i;
  }
  // Nothing more: the partial line stays pending until the follow stops (by Stop here).
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    (*src)->Stop();
  });
  auto r = (*src)->Next(&e);
  stopper.join();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(*r);
  EXPECT_EQ((*src)->events(), kLines + 1);
  EXPECT_EQ((*src)->pending_bytes(), static_cast<int64_t>(std::string("7\t3\t2\t17000").size()));
  auto again = (*src)->Next(&e);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  std::remove(path.c_str());
}

// The newline of a line that was partial at the first read arrives later: the line is returned
// once, whole.
TEST(EventStreamSource, PartialLineCompletedLaterIsReadOnce) {
  const std::string path = TempPath("partial.tsv");
  std::remove(path.c_str());
  const std::string l0 = Line(TestEvent(0)), l1 = Line(TestEvent(1));
  AppendToFile(path, l0 + l1.substr(0, 5));
  EventSourceOptions o = FastPolling();
  o.idle_timeout_s = 0.2;
  auto src = EventStreamSource::Open(path, o);
  ASSERT_TRUE(src.ok());
  StreamEvent e;
  auto r = (*src)->Next(&e);
  ASSERT_TRUE(r.ok() && *r);
  EXPECT_EQ(e.event.item, TestEvent(0).item);
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
    AppendToFile(path, l1.substr(5));
  });
  r = (*src)->Next(&e);
  writer.join();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(*r);
  EXPECT_EQ(e.event.item, TestEvent(1).item);
  EXPECT_EQ(e.event.user, TestEvent(1).user);
  EXPECT_EQ(e.line, 2);
  r = (*src)->Next(&e);  // idle timeout ends the follow
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
  std::remove(path.c_str());
}

// A pipe ends when its writer closes it, and an unterminated last line is then complete.
TEST(EventStreamSource, PipeEndsAtCloseAndParsesUnterminatedLastLine) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  auto src = EventStreamSource::FromFd(fds[0], /*owned=*/true, "pipe", FastPolling());
  std::thread writer([&] {
    for (int i = 0; i < 50; ++i) {
      std::string l = Line(TestEvent(i));
      if (i == 49) l.pop_back();  // no final newline
      ASSERT_EQ(write(fds[1], l.data(), l.size()), static_cast<ssize_t>(l.size()));
      if (i % 10 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
    close(fds[1]);
  });
  int n = 0;
  StreamEvent e;
  while (true) {
    auto r = src->Next(&e);
    ASSERT_TRUE(r.ok()) << r.status();
    if (!*r) break;
    EXPECT_EQ(e.event.item, TestEvent(n).item);
    ++n;
  }
  writer.join();
  EXPECT_EQ(n, 50);
}

// Stop() wakes a reader waiting at the end of a followed file, and a pipe without data.
TEST(EventStreamSource, StopWakesBlockedReader) {
  const std::string path = TempPath("empty.tsv");
  std::remove(path.c_str());
  AppendToFile(path, "");
  EventSourceOptions o;
  o.poll_max_s = 0.05;
  auto src = EventStreamSource::Open(path, o);
  ASSERT_TRUE(src.ok());
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  auto pipe_src = EventStreamSource::FromFd(fds[0], true, "pipe", o);
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    (*src)->Stop();
    pipe_src->Stop();
  });
  StreamEvent e;
  const double t0 = StreamNowSeconds();
  auto r = (*src)->Next(&e);
  auto rp = pipe_src->Next(&e);
  stopper.join();
  ASSERT_TRUE(r.ok() && rp.ok());
  EXPECT_FALSE(*r);
  EXPECT_FALSE(*rp);
  EXPECT_LT(StreamNowSeconds() - t0, 2.0);
  close(fds[1]);
  std::remove(path.c_str());
}

// A file that is not followed ends at its end.
TEST(EventStreamSource, UnfollowedFileEndsAtEof) {
  const std::string path = TempPath("static.tsv");
  std::remove(path.c_str());
  AppendToFile(path, Line(TestEvent(0)) + "\r\n" + Line(TestEvent(1)).substr(0, 20));
  EventSourceOptions o;
  o.follow = false;
  auto src = EventStreamSource::Open(path, o);
  ASSERT_TRUE(src.ok());
  StreamEvent e;
  auto r = (*src)->Next(&e);
  ASSERT_TRUE(r.ok() && *r);
  // The stripped Line(TestEvent(0)) ends in "\n": the extra "\r\n" is a blank CRLF line.
  r = (*src)->Next(&e);  // the truncated last line is complete at the end: and malformed
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(":3:"), std::string::npos) << r.status();
  std::remove(path.c_str());
}

Status FirstError(const std::string& contents, const std::string& name) {
  const std::string path = TempPath(name);
  std::remove(path.c_str());
  AppendToFile(path, contents);
  EventSourceOptions o;
  o.follow = false;
  o.max_line_bytes = 200;
  auto src = EventStreamSource::Open(path, o);
  if (!src.ok()) return src.status();
  StreamEvent e;
  Status s;
  for (int i = 0; i < 100; ++i) {
    auto r = (*src)->Next(&e);
    if (!r.ok()) {
      s = r.status();
      // The error is sticky.
      auto again = (*src)->Next(&e);
      if (again.ok() || again.status().message() != s.message())
        s = InternalError("error was not sticky: " + s.ToString());
      break;
    }
    if (!*r) break;
  }
  std::remove(path.c_str());
  return s;
}

TEST(EventStreamSource, BadLineErrorNamesSourceLineAndField) {
  const std::string good = Line(TestEvent(0)) + Line(TestEvent(1));
  const std::string path = TempPath("bad_item.tsv");
  Status s = FirstError(good + "5\tabc\t3\t1700000000\tpv\t0\n", "bad_item.tsv");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(path + ":3:"), std::string::npos) << s;
  EXPECT_NE(s.message().find("item"), std::string::npos) << s;
  EXPECT_NE(s.message().find("abc"), std::string::npos) << s;

  s = FirstError(good + "5\t6\t3\t1700000000\tjump\t0\n", "bad_action.tsv");
  EXPECT_NE(s.message().find(":3: action"), std::string::npos) << s;
  s = FirstError(good + "5\t6\t3\t1700000000\tpv\n", "bad_fields.tsv");
  EXPECT_NE(s.message().find(":3: line"), std::string::npos) << s;
  s = FirstError(Line(TestEvent(0)) + "5\t6\t0\t1700000000\tpv\t0\n", "bad_cat.tsv");
  EXPECT_NE(s.message().find(":2: category"), std::string::npos) << s;
  // Ids beyond the trainer's 32-bit keys are rejected, not silently truncated.
  s = FirstError("5\t4294967296\t3\t1700000000\tpv\t0\n", "wide.tsv");
  EXPECT_NE(s.message().find(":1: item"), std::string::npos) << s;
  EXPECT_NE(s.message().find("2^32"), std::string::npos) << s;
  // A line without a newline longer than max_line_bytes.
  s = FirstError(good + std::string(500, '1'), "long.tsv");
  EXPECT_NE(s.message().find(":3: line"), std::string::npos) << s;
  // Gzip is refused with a hint instead of garbage-line errors.
  s = FirstError(std::string("\x1f\x8b\x08\x00rest", 8), "gz.tsv");
  EXPECT_NE(s.message().find("gzip"), std::string::npos) << s;
}

// ---- Rotation (tail -F) ---------------------------------------------------------------------

// Opens a source whose notices it collects and reads it on its own thread until it ends. Going
// out of scope stops the source and joins the thread (a failed assertion must not leave it
// running).
struct Collector {
  std::mutex mu;
  std::vector<StreamEvent> events;   // guarded by mu
  std::vector<std::string> notices;  // guarded by mu
  std::atomic<int> count{0};
  Status status;  // the end: OK (ended) or the error
  std::unique_ptr<EventStreamSource> src;
  std::thread thread;

  ~Collector() {
    if (thread.joinable()) {
      src->Stop();
      thread.join();
    }
  }
  Status Open(const std::string& path, EventSourceOptions o) {
    o.log = Sink();
    IPS_ASSIGN_OR_RETURN(src, EventStreamSource::Open(path, o));
    thread = std::thread([this] {
      StreamEvent e;
      while (true) {
        auto r = src->Next(&e);
        if (!r.ok()) {
          status = r.status();
          return;
        }
        if (!*r) return;
        std::lock_guard<std::mutex> lock(mu);
        events.push_back(e);
        count.store(static_cast<int>(events.size()));
      }
    });
    return Status();
  }
  std::function<void(const std::string&)> Sink() {
    return [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(mu);
      notices.push_back(line);
    };
  }
  // Waits (up to 20 s) until at least n events were read.
  bool WaitFor(int n) {
    for (int i = 0; i < 20000 && count.load() < n; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return count.load() >= n;
  }
  int Notices(const std::string& needle) {
    std::lock_guard<std::mutex> lock(mu);
    int n = 0;
    for (const auto& l : notices) n += l.find(needle) != std::string::npos;
    return n;
  }
};

std::string Lines(int64_t from, int64_t to) {
  std::string s;
  for (int64_t i = from; i < to; ++i) s += Line(TestEvent(i));
  return s;
}

std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) != nullptr ? std::string(buf) : path;
}

// Events [0, n) in order, each once: event i's item/user/timestamp, and the file and line it
// came from.
void ExpectSequence(const std::vector<StreamEvent>& got, int n,
                    const std::function<std::pair<int64_t, int64_t>(int)>& file_line) {
  ASSERT_EQ(static_cast<int>(got.size()), n);
  for (int i = 0; i < n; ++i) {
    const Event want = TestEvent(i);
    ASSERT_EQ(got[i].index, i);
    ASSERT_EQ(got[i].event.timestamp, want.timestamp) << i;  // unique per event
    ASSERT_EQ(got[i].event.item, want.item) << i;
    ASSERT_EQ(got[i].event.user, want.user) << i;
    const auto [file, line] = file_line(i);
    ASSERT_EQ(got[i].file, file) << i;
    ASSERT_EQ(got[i].line, line) << i;
  }
}

// `mv log log.1` then a new `log` (the QA scenario): the old file is read to its end (including
// what the writer appended to it after the rename, and its unterminated last line, which is
// complete and never joined with the new file's first bytes), then the new file from its start,
// with one notice; every event exactly once, line numbers per file.
TEST(EventStreamSource, FollowsRotationByRenameEveryEventOnce) {
  const std::string path = TempPath("rot.tsv"), old_path = TempPath("rot.tsv.1");
  std::remove(path.c_str());
  std::remove(old_path.c_str());
  AppendToFile(path, Lines(0, 300));
  Collector c;
  EventSourceOptions o = FastPolling();
  o.idle_timeout_s = 1.5;
  o.rotate_grace_s = 0.2;
  ASSERT_TRUE(c.Open(path, o).ok());
  ASSERT_TRUE(c.WaitFor(300));
  AppendToFile(path, Lines(300, 400));
  ASSERT_TRUE(c.WaitFor(400));
  ASSERT_EQ(std::rename(path.c_str(), old_path.c_str()), 0);
  // The writer still holds the old file: what it appends before it reopens the path is read.
  std::string last = Line(TestEvent(449));
  last.pop_back();  // the old file's last line has no newline: complete at its end
  AppendToFile(old_path, Lines(400, 449) + last);
  AppendToFile(path, Lines(450, 700));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  AppendToFile(path, Lines(700, 1000));
  c.thread.join();  // the idle timeout ends it
  ASSERT_TRUE(c.status.ok()) << c.status;
  ExpectSequence(c.events, 1000, [](int i) {
    return i < 450 ? std::make_pair<int64_t, int64_t>(0, i + 1)
                   : std::make_pair<int64_t, int64_t>(1, i - 449);
  });
  EXPECT_EQ(c.src->rotations(), 1);
  EXPECT_EQ(c.src->pending_bytes(), 0);
  ASSERT_EQ(c.Notices("was rotated"), 1) << ::testing::PrintToString(c.notices);
  EXPECT_EQ(c.Notices("(450 lines; now '" + RealPath(old_path) + "')"), 1)
      << ::testing::PrintToString(c.notices);
  std::remove(path.c_str());
  std::remove(old_path.c_str());
}

// The path vanishes for a while (renamed, created later): the open file is still followed (its
// late lines are read) and the name is waited for; then the new file from its start. A second
// rotation (to a deleted file this time) is followed as well.
TEST(EventStreamSource, FollowsRotationWithDelayedCreation) {
  const std::string path = TempPath("rotd.tsv"), old_path = TempPath("rotd.tsv.1");
  std::remove(path.c_str());
  std::remove(old_path.c_str());
  AppendToFile(path, Lines(0, 200));
  Collector c;
  EventSourceOptions o = FastPolling();
  o.idle_timeout_s = 1.5;
  o.rotate_grace_s = 0.2;
  ASSERT_TRUE(c.Open(path, o).ok());
  ASSERT_TRUE(c.WaitFor(200));
  ASSERT_EQ(std::rename(path.c_str(), old_path.c_str()), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  AppendToFile(old_path, Lines(200, 260));  // read while the name is gone
  ASSERT_TRUE(c.WaitFor(260));
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  AppendToFile(path, Lines(260, 500));  // the name reappears
  ASSERT_TRUE(c.WaitFor(500));
  // Second rotation: the current file is deleted and a new one created at once.
  ASSERT_EQ(std::remove(path.c_str()), 0);
  AppendToFile(path, Lines(500, 600));
  c.thread.join();
  ASSERT_TRUE(c.status.ok()) << c.status;
  ExpectSequence(c.events, 600, [](int i) {
    return i < 260   ? std::make_pair<int64_t, int64_t>(0, i + 1)
           : i < 500 ? std::make_pair<int64_t, int64_t>(1, i - 259)
                     : std::make_pair<int64_t, int64_t>(2, i - 499);
  });
  EXPECT_EQ(c.src->rotations(), 2);
  // (Once for the rename; the remove-and-create may be seen as a second, short absence.)
  EXPECT_GE(c.Notices("the path is gone"), 1) << ::testing::PrintToString(c.notices);
  EXPECT_EQ(c.Notices("was rotated"), 2) << ::testing::PrintToString(c.notices);
  EXPECT_EQ(c.Notices("now deleted"), 1) << ::testing::PrintToString(c.notices);
  std::remove(path.c_str());
  std::remove(old_path.c_str());
}

// logrotate's order: rename, create the new file, then signal the writer, which writes to the
// old file until it reopens the path. What it appends to the old file after the new one exists
// (within rotate_grace_s of quiet) is read, before the new file's events: none lost, in order.
TEST(EventStreamSource, RotationWaitsForTheOldFilesWriterToReopen) {
  const std::string path = TempPath("rotw.tsv"), old_path = TempPath("rotw.tsv.1");
  std::remove(path.c_str());
  std::remove(old_path.c_str());
  AppendToFile(path, Lines(0, 100));
  Collector c;
  EventSourceOptions o = FastPolling();
  o.idle_timeout_s = 1.5;
  o.rotate_grace_s = 1.0;
  ASSERT_TRUE(c.Open(path, o).ok());
  ASSERT_TRUE(c.WaitFor(100));
  ASSERT_EQ(std::rename(path.c_str(), old_path.c_str()), 0);
  AppendToFile(path, Lines(150, 300));  // the new file, already written by another writer
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  AppendToFile(old_path, Lines(100, 120));  // the old writer, not reopened yet
  ASSERT_TRUE(c.WaitFor(120));
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  AppendToFile(old_path, Lines(120, 150));  // its last lines (quiet for 0.4 s < the grace)
  c.thread.join();
  ASSERT_TRUE(c.status.ok()) << c.status;
  ExpectSequence(c.events, 300, [](int i) {
    return i < 150 ? std::make_pair<int64_t, int64_t>(0, i + 1)
                   : std::make_pair<int64_t, int64_t>(1, i - 149);
  });
  EXPECT_EQ(c.src->rotations(), 1);
  std::remove(path.c_str());
  std::remove(old_path.c_str());
}

// Bad lines around a rotation name the file they are in now, with its own line numbers: the old
// file's under its new name, the new file's under the path. (Skipped under max_bad_records, so
// both are seen in one run.)
TEST(EventStreamSource, BadLinesAcrossRotationNameTheirFile) {
  const std::string path = TempPath("rotb.tsv"), old_path = TempPath("rotb.tsv.1");
  std::remove(path.c_str());
  std::remove(old_path.c_str());
  AppendToFile(path, Lines(0, 10));
  Collector c;
  EventSourceOptions o = FastPolling();
  o.idle_timeout_s = 1.0;
  o.rotate_grace_s = 0.2;
  o.max_bad_records = 5;
  ASSERT_TRUE(c.Open(path, o).ok());
  ASSERT_TRUE(c.WaitFor(10));
  ASSERT_EQ(std::rename(path.c_str(), old_path.c_str()), 0);
  AppendToFile(old_path, "5\tx\t3\t1700000000\tpv\t0\n" + Lines(10, 12));                // line 11
  AppendToFile(path, Lines(12, 14) + "5\t6\t3\t1700000000\tjump\t0\n" + Lines(14, 20));  // line 3
  c.thread.join();
  ASSERT_TRUE(c.status.ok()) << c.status;
  ExpectSequence(c.events, 20, [](int i) {
    return i < 12   ? std::make_pair<int64_t, int64_t>(0, i < 10 ? i + 1 : i + 2)
           : i < 14 ? std::make_pair<int64_t, int64_t>(1, i - 11)
                    : std::make_pair<int64_t, int64_t>(1, i - 10);
  });
  EXPECT_EQ(c.src->bad_lines(), 2);
  EXPECT_EQ(c.Notices("warning: skipping bad line " + RealPath(old_path) + ":11: item"), 1)
      << ::testing::PrintToString(c.notices);
  EXPECT_EQ(c.Notices("warning: skipping bad line " + path + ":3: action"), 1)
      << ::testing::PrintToString(c.notices);
  std::remove(path.c_str());
  std::remove(old_path.c_str());
}

// Truncation in place (copytruncate) is still a DATA_LOSS error, not a rotation.
TEST(EventStreamSource, TruncatedInPlaceIsDataLoss) {
  const std::string path = TempPath("trunc.tsv");
  std::remove(path.c_str());
  AppendToFile(path, Lines(0, 50));
  Collector c;
  EventSourceOptions o = FastPolling();
  o.idle_timeout_s = 5;
  ASSERT_TRUE(c.Open(path, o).ok());
  ASSERT_TRUE(c.WaitFor(50));
  ASSERT_EQ(truncate(path.c_str(), 0), 0);
  c.thread.join();
  EXPECT_EQ(c.status.code(), StatusCode::kDataLoss) << c.status;
  EXPECT_NE(c.status.message().find("shrank"), std::string::npos) << c.status;
  EXPECT_EQ(c.src->rotations(), 0);
  std::remove(path.c_str());
}

// QA: a file truncated in place and written again past its old size before the reader looked
// (the writer faster than the poll) was not noticed: only a read of 0 bytes compared the size
// with what was read, so reading went on at the old offset, mid-way through the new content
// (events skipped, a line fragment parsed as an event), exit 0. The bytes just before the read
// position are compared with those read there at every read and wait: DATA_LOSS, as for a file
// that shrank. Also a file rewritten to exactly its old size (seen while waiting).
TEST(EventStreamSource, TruncatedInPlaceAndWrittenAgainIsDataLoss) {
  const std::string first = Lines(0, 50);
  std::string same_size;  // the same lines in reverse order: as long, other bytes at the end
  for (int64_t i = 49; i >= 0; --i) same_size += Line(TestEvent(i));
  ASSERT_EQ(same_size.size(), first.size());
  for (const std::string& again : {Lines(50, 400), same_size}) {
    SCOPED_TRACE(again.size());
    const std::string path = TempPath("trunc_again.tsv");
    std::remove(path.c_str());
    AppendToFile(path, first);
    Collector c;
    // The reader waits 1 s between looks at the end of the file: the truncation and the new
    // content land inside one wait, never seen apart.
    EventSourceOptions o;
    o.poll_min_s = o.poll_max_s = 1.0;
    o.idle_timeout_s = 3;
    ASSERT_TRUE(c.Open(path, o).ok());
    ASSERT_TRUE(c.WaitFor(50));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    {
      std::ofstream f(path, std::ios::trunc | std::ios::binary);
      f << again;
    }
    c.thread.join();
    EXPECT_EQ(c.status.code(), StatusCode::kDataLoss) << c.status;
    EXPECT_NE(c.status.message().find("event stream '" + path +
                                      "' was truncated in place and written again while being "
                                      "read: its 64 bytes before offset " +
                                      std::to_string(first.size()) + " (the end of what was read)"),
              std::string::npos)
        << c.status;
    EXPECT_EQ(c.events.size(), 50u);
    EXPECT_EQ(c.src->rotations(), 0);
    std::remove(path.c_str());
  }
}

// A file that only grows is never taken for a truncated one, also when its reader is a
// descriptor passed in at another offset than 0 (stdin redirected from a file that was read
// from before): the comparison is with what was read from that offset on.
TEST(EventStreamSource, DescriptorPassedInMidFileIsFollowedWithoutFalseTruncation) {
  const std::string path = TempPath("midfile.tsv");
  std::remove(path.c_str());
  const std::string skipped = Lines(0, 10);
  AppendToFile(path, skipped + Lines(10, 30));
  const int fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(lseek(fd, static_cast<off_t>(skipped.size()), SEEK_SET),
            static_cast<off_t>(skipped.size()));
  EventSourceOptions o = FastPolling();
  o.idle_timeout_s = 0.5;
  auto src = EventStreamSource::FromFd(fd, /*owned=*/true, "stdin", o);
  std::thread writer([&] {
    for (int i = 30; i < 60; i += 5) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      AppendToFile(path, Lines(i, i + 5));
    }
  });
  StreamEvent e;
  int64_t n = 0;
  for (;;) {
    auto r = src->Next(&e);
    ASSERT_TRUE(r.ok()) << r.status();
    if (!*r) break;
    EXPECT_EQ(e.event.timestamp, TestEvent(10 + n).timestamp) << n;
    ++n;
  }
  writer.join();
  EXPECT_EQ(n, 50);
  std::remove(path.c_str());
}

// QA: `ips data convert` skips a UTF-8 byte order mark at the start of a file, the stream
// failed on it ("user: ... (got '\xef\xbb\xbf101')"). Skipped at the start of a file (and of a
// pipe, also when it arrives in pieces), and only there: elsewhere it is part of the line.
TEST(EventStreamSource, ByteOrderMarkAtTheStartIsSkippedOnlyThere) {
  const std::string bom = "\xef\xbb\xbf";
  const std::string path = TempPath("bom.tsv");
  std::remove(path.c_str());
  AppendToFile(path, bom + Lines(0, 20));
  EventSourceOptions o = FastPolling();
  o.follow = false;
  auto src = EventStreamSource::Open(path, o);
  ASSERT_TRUE(src.ok()) << src.status();
  StreamEvent e;
  for (int i = 0; i < 20; ++i) {
    auto r = (*src)->Next(&e);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(*r);
    EXPECT_EQ(e.event.user, TestEvent(i).user) << i;
    EXPECT_EQ(e.line, i + 1);
  }
  auto end = (*src)->Next(&e);
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_FALSE(*end);

  // Not at the start of the file: the first field's error.
  std::remove(path.c_str());
  AppendToFile(path, Lines(0, 2) + bom + Lines(2, 4));
  src = EventStreamSource::Open(path, o);
  ASSERT_TRUE(src.ok()) << src.status();
  for (int i = 0; i < 2; ++i) ASSERT_TRUE((*src)->Next(&e).value());
  auto bad = (*src)->Next(&e);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument) << bad.status();
  EXPECT_NE(bad.status().message().find(path + ":3: user:"), std::string::npos) << bad.status();
  std::remove(path.c_str());

  // A pipe whose mark arrives in pieces.
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  auto piped = EventStreamSource::FromFd(p[0], /*owned=*/true, "pipe", FastPolling());
  std::thread writer([&] {
    const std::string rest = bom.substr(1) + Lines(0, 5);
    ASSERT_EQ(write(p[1], bom.data(), 1), 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    ASSERT_EQ(write(p[1], rest.data(), rest.size()), static_cast<ssize_t>(rest.size()));
    close(p[1]);
  });
  int64_t n = 0;
  for (;;) {
    auto r = piped->Next(&e);
    ASSERT_TRUE(r.ok()) << r.status();
    if (!*r) break;
    EXPECT_EQ(e.event.timestamp, TestEvent(n).timestamp) << n;
    ++n;
  }
  writer.join();
  EXPECT_EQ(n, 5);
}

// max_bad_records: up to N malformed lines (parse errors and ids beyond 32 bits) are skipped,
// each logged with file:line: field and counted; the N+1-th fails, saying so.
TEST(EventStreamSource, MaxBadRecordsSkipsAndCountsThenFails) {
  const std::string path = TempPath("badrec.tsv");
  std::remove(path.c_str());
  AppendToFile(path, Lines(0, 3) + "5\tabc\t3\t1700000000\tpv\t0\n" + Lines(3, 6) +
                         "5\t4294967296\t3\t1700000000\tpv\t0\n" + Lines(6, 9) +
                         "5\t6\t3\tnever\tpv\t0\n" + Lines(9, 10));
  for (int budget : {0, 2, 3}) {
    std::vector<std::string> notices;
    EventSourceOptions o;
    o.follow = false;
    o.max_bad_records = budget;
    o.log = [&](const std::string& l) { notices.push_back(l); };
    auto src = EventStreamSource::Open(path, o);
    ASSERT_TRUE(src.ok());
    int n = 0;
    Status s;
    StreamEvent e;
    while (true) {
      auto r = (*src)->Next(&e);
      if (!r.ok()) {
        s = r.status();
        break;
      }
      if (!*r) break;
      EXPECT_EQ(e.event.timestamp, TestEvent(n).timestamp);
      ++n;
    }
    SCOPED_TRACE(budget);
    if (budget == 0) {
      EXPECT_EQ(n, 3);
      EXPECT_EQ(s.message().rfind(path + ":4: item: expected ", 0), 0u) << s;
      EXPECT_EQ(s.message().find("more than"), std::string::npos) << s;  // today's message
    } else if (budget == 2) {
      EXPECT_EQ(n, 9);
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
      EXPECT_NE(s.message().find(path + ":12: timestamp"), std::string::npos) << s;
      EXPECT_NE(s.message().find("[more than --stream_max_bad_records=2 bad lines]"),
                std::string::npos)
          << s;
    } else {
      EXPECT_TRUE(s.ok()) << s;
      EXPECT_EQ(n, 10);
    }
    EXPECT_EQ((*src)->bad_lines(), std::min(budget, 3));
    ASSERT_EQ(static_cast<int>(notices.size()), std::min(budget, 3));
    if (budget > 0) {
      EXPECT_EQ(notices[0].rfind("warning: skipping bad line " + path + ":4: item", 0), 0u)
          << notices[0];
      EXPECT_EQ(notices[1].rfind("warning: skipping bad line " + path + ":8: item", 0), 0u)
          << notices[1];
      EXPECT_NE(notices[1].find("2^32"), std::string::npos) << notices[1];
    }
  }
  std::remove(path.c_str());
}

TEST(EventStreamSource, MissingFileIsNotFound) {
  auto src = EventStreamSource::Open(TempPath("does_not_exist"), EventSourceOptions());
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), StatusCode::kNotFound);
  EXPECT_NE(src.status().message().find("does_not_exist"), std::string::npos);
}

// ---- UserHistoryStore -------------------------------------------------------------------------

TEST(UserHistoryStore, KeepsLastMaxLenOldestFirst) {
  UserHistoryStore h(3, 10);
  uint32_t it[3], ct[3];
  EXPECT_EQ(h.Get(42, it, ct), 0);
  for (uint32_t i = 1; i <= 5; ++i) h.Append(42, i, 100 + i);
  h.Append(7, 99, 9);
  ASSERT_EQ(h.Get(42, it, ct), 3);
  EXPECT_EQ(it[0], 3u);
  EXPECT_EQ(it[1], 4u);
  EXPECT_EQ(it[2], 5u);
  EXPECT_EQ(ct[0], 103u);
  EXPECT_EQ(ct[2], 105u);
  ASSERT_EQ(h.Get(7, it, ct), 1);
  EXPECT_EQ(it[0], 99u);
  EXPECT_EQ(h.users(), 2);
}

TEST(UserHistoryStore, EvictsLeastRecentlyActiveUserWhole) {
  UserHistoryStore h(4, 3);
  uint32_t it[4], ct[4];
  h.Append(1, 10, 1);
  h.Append(2, 20, 2);
  h.Append(3, 30, 3);
  h.Append(1, 11, 1);  // user 1 is now the most recent; user 2 the least
  h.Append(4, 40, 4);  // evicts user 2
  EXPECT_EQ(h.users(), 3);
  EXPECT_EQ(h.evictions(), 1);
  EXPECT_EQ(h.Get(2, it, ct), 0);
  EXPECT_EQ(h.Get(1, it, ct), 2);
  EXPECT_EQ(h.Get(3, it, ct), 1);
  // Get does not refresh recency: user 3 is the least recent and goes next.
  h.Append(5, 50, 5);
  EXPECT_EQ(h.Get(3, it, ct), 0);
  // A returning evicted user starts empty, with its slot reused (no stale entries).
  h.Append(2, 21, 2);
  ASSERT_EQ(h.Get(2, it, ct), 1);
  EXPECT_EQ(it[0], 21u);
  EXPECT_EQ(h.evictions(), 3);
}

// Against a reference (map of deques + recency list) over a random workload much larger than the
// bound; memory never exceeds the reported bound.
TEST(UserHistoryStore, MatchesReferenceAndStaysWithinMemoryBound) {
  constexpr int kLen = 5;
  constexpr int64_t kUsers = 50;
  UserHistoryStore h(kLen, kUsers);
  std::map<uint64_t, std::deque<uint32_t>> ref;
  std::vector<uint64_t> recency;  // most recent last
  Rng rng(11);
  int64_t max_mem = 0;
  for (int i = 0; i < 20000; ++i) {
    const uint64_t u = 1 + rng.UniformInt(i < 10000 ? 60 : 400);
    const uint32_t item = 1 + static_cast<uint32_t>(rng.UniformInt(1000));
    auto pos = std::find(recency.begin(), recency.end(), u);
    if (pos != recency.end()) {
      recency.erase(pos);
    } else if (static_cast<int64_t>(recency.size()) == kUsers) {
      ref.erase(recency.front());
      recency.erase(recency.begin());
    }
    recency.push_back(u);
    auto& d = ref[u];
    d.push_back(item);
    if (d.size() > kLen) d.pop_front();
    h.Append(u, item, item % 7 + 1);
    max_mem = std::max(max_mem, h.MemoryBytes());
    if (i % 97 == 0) {
      for (uint64_t v = 1; v <= 400; ++v) {
        uint32_t it[kLen], ct[kLen];
        const int n = h.Get(v, it, ct);
        const auto f = ref.find(v);
        ASSERT_EQ(n, f == ref.end() ? 0 : static_cast<int>(f->second.size())) << "user " << v;
        for (int j = 0; j < n; ++j) {
          ASSERT_EQ(it[j], f->second[j]);
          ASSERT_EQ(ct[j], it[j] % 7 + 1);
        }
      }
    }
  }
  EXPECT_EQ(h.users(), kUsers);
  EXPECT_GT(h.evictions(), 1000);
  EXPECT_LE(max_mem, UserHistoryStore::MemoryBound(kLen, kUsers));
  EXPECT_GE(max_mem, kUsers * kLen * 8);  // the histories themselves are counted
}

// ---- StreamExampleBuilder ---------------------------------------------------------------------

StreamEvent Ev(int64_t i, const Event& e) {
  StreamEvent s;
  s.event = e;
  s.index = i;
  return s;
}

// Every row's history is exactly the user's events before this one (last max_len, left-padded);
// the first row is the positive; negatives are pool items with their categories, never the
// positive; the first event has no negatives.
TEST(StreamExampleBuilder, HistoryBeforeEventAndNoPositiveAmongNegatives) {
  StreamExampleOptions o;
  o.max_len = 4;
  o.negatives = 3;
  o.seed = 9;
  auto b = StreamExampleBuilder::Create(o);
  ASSERT_TRUE(b.ok());
  StreamBatch batch(64, 4, false);
  std::map<uint64_t, std::vector<uint32_t>> hist;
  std::map<uint32_t, uint32_t> seen_cat;
  int64_t negatives = 0;
  for (int i = 0; i < 2000; ++i) {
    const Event e = TestEvent(i);
    batch.Clear();
    auto rows = (*b)->Add(Ev(i, e), &batch);
    ASSERT_TRUE(rows.ok()) << rows.status();
    size_t others = seen_cat.size() - seen_cat.count(e.item);
    ASSERT_EQ(*rows, 1 + static_cast<int>(std::min<size_t>(3, others))) << i;
    ASSERT_EQ(batch.size, *rows);
    const auto& h = hist[e.user];
    const int n = static_cast<int>(std::min<size_t>(4, h.size()));
    for (int r = 0; r < batch.size; ++r) {
      ASSERT_EQ(batch.length[r], n);
      for (int t = 0; t < 4; ++t) {
        const uint32_t want = t < 4 - n ? 0 : h[h.size() - n + (t - (4 - n))];
        ASSERT_EQ(batch.hist_item[r * 4 + t], want) << "event " << i << " row " << r;
        ASSERT_EQ(batch.hist_cat[r * 4 + t], want == 0 ? 0 : want % 5 + 1);
      }
      ASSERT_EQ(batch.event_index[r], i);
      ASSERT_EQ(batch.user[r], e.user);
      if (r == 0) {
        ASSERT_EQ(batch.label[r], 1.0f);
        ASSERT_EQ(batch.item[r], e.item);
        ASSERT_EQ(batch.cat[r], e.category);
      } else {
        ++negatives;
        ASSERT_EQ(batch.label[r], 0.0f);
        ASSERT_NE(batch.item[r], e.item) << "positive sampled as a negative at event " << i;
        ASSERT_EQ(seen_cat.count(batch.item[r]), 1u) << "negative never seen";
        ASSERT_EQ(batch.cat[r], seen_cat[batch.item[r]]);
      }
    }
    hist[e.user].push_back(static_cast<uint32_t>(e.item));
    seen_cat[static_cast<uint32_t>(e.item)] = static_cast<uint32_t>(e.category);
  }
  EXPECT_GT(negatives, 5000);
  EXPECT_EQ((*b)->pool_size(), 40);
}

TEST(StreamExampleBuilder, DeterministicGivenSeed) {
  const auto run = [](uint64_t seed) {
    StreamExampleOptions o;
    o.max_len = 6;
    o.negatives = 2;
    o.seed = seed;
    o.aux_negatives = true;
    auto b = StreamExampleBuilder::Create(o);
    StreamBatch batch(3000, 6, true);
    for (int i = 0; i < 900; ++i) {
      auto r = (*b)->Add(Ev(i, TestEvent(i)), &batch);
      EXPECT_TRUE(r.ok());
    }
    std::vector<uint32_t> out(batch.item.begin(), batch.item.begin() + batch.size);
    out.insert(out.end(), batch.neg_item.begin(), batch.neg_item.begin() + batch.size * 6);
    out.insert(out.end(), batch.hist_item.begin(), batch.hist_item.begin() + batch.size * 6);
    return out;
  };
  const auto a = run(5), b = run(5), c = run(6);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

// DIEN's auxiliary negatives: one pool item per valid history position (never that position's
// own item), zero on padding.
TEST(StreamExampleBuilder, AuxNegativesCoverHistoryAndAvoidItsItem) {
  StreamExampleOptions o;
  o.max_len = 5;
  o.negatives = 1;
  o.aux_negatives = true;
  auto b = StreamExampleBuilder::Create(o);
  ASSERT_TRUE(b.ok());
  StreamBatch batch(2, 5, true);
  for (int i = 0; i < 3000; ++i) {
    batch.Clear();
    const int64_t pool_before = (*b)->pool_size();
    ASSERT_TRUE((*b)->Add(Ev(i, TestEvent(i)), &batch).ok());
    for (int r = 0; r < batch.size; ++r) {
      for (int t = 0; t < 5; ++t) {
        const int p = r * 5 + t;
        if (t < 5 - batch.length[r]) {
          ASSERT_EQ(batch.neg_item[p], 0u);
          ASSERT_EQ(batch.neg_cat[p], 0u);
        } else {
          ASSERT_NE(batch.neg_item[p], 0u);
          if (pool_before > 1) {
            ASSERT_NE(batch.neg_item[p], batch.hist_item[p]);
          }
          ASSERT_EQ(batch.neg_cat[p], batch.neg_item[p] % 5 + 1);
        }
      }
    }
  }
}

// Negatives are uniform over the distinct items seen so far (excluding the positive): with 10
// items seen and the positive fixed, each of the other 9 gets about 1/9 of the draws.
TEST(StreamExampleBuilder, NegativesUniformOverSeenItems) {
  StreamExampleOptions o;
  o.max_len = 2;
  o.negatives = 5;
  o.seed = 1;
  auto b = StreamExampleBuilder::Create(o);
  ASSERT_TRUE(b.ok());
  StreamBatch batch(6, 2, false);
  for (int i = 1; i <= 10; ++i) {
    Event e;
    e.user = 1;
    e.item = i;
    e.category = 1;
    batch.Clear();
    ASSERT_TRUE((*b)->Add(Ev(i, e), &batch).ok());
  }
  std::map<uint32_t, int> count;
  constexpr int kEvents = 9000;
  for (int i = 0; i < kEvents; ++i) {
    Event e;
    e.user = 2 + i;
    e.item = 3;
    e.category = 1;
    batch.Clear();
    ASSERT_TRUE((*b)->Add(Ev(10 + i, e), &batch).ok());
    for (int r = 1; r < batch.size; ++r) ++count[batch.item[r]];
  }
  EXPECT_EQ(count.size(), 9u);
  EXPECT_EQ(count.count(3), 0u);
  const double expect = kEvents * 5.0 / 9;  // 5000 per item; sd about 67
  for (const auto& [item, c] : count) EXPECT_NEAR(c, expect, 5 * std::sqrt(expect)) << item;
}

// With a pool bound, the pool holds a uniform sample of the distinct items (reservoir): the
// first and the last items seen are about equally likely to remain.
TEST(StreamExampleBuilder, BoundedPoolIsReservoirSample) {
  int early = 0, late = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    StreamExampleOptions o;
    o.max_len = 1;
    o.negatives = 0;
    o.max_items = 20;
    o.seed = seed;
    auto b = StreamExampleBuilder::Create(o);
    StreamBatch batch(1, 1, false);
    for (int i = 1; i <= 100; ++i) {
      Event e;
      e.user = 1;
      e.item = i;
      e.category = 2;
      batch.Clear();
      ASSERT_TRUE((*b)->Add(Ev(i, e), &batch).ok());
    }
    ASSERT_EQ((*b)->pool_size(), 20);
    ASSERT_EQ((*b)->items_seen(), 100);
    for (uint32_t i = 1; i <= 10; ++i) early += (*b)->PoolCategory(i) != 0;
    for (uint32_t i = 91; i <= 100; ++i) late += (*b)->PoolCategory(i) != 0;
  }
  // Each item stays with probability 0.2: 400 expected in each group (sd about 18).
  EXPECT_NEAR(early, 400, 90);
  EXPECT_NEAR(late, 400, 90);
}

TEST(StreamExampleBuilder, RejectsBadOptionsAndFullBatch) {
  StreamExampleOptions o;
  o.max_len = 0;
  EXPECT_EQ(StreamExampleBuilder::Create(o).status().code(), StatusCode::kInvalidArgument);
  o.max_len = 3;
  o.negatives = -1;
  EXPECT_EQ(StreamExampleBuilder::Create(o).status().code(), StatusCode::kInvalidArgument);
  o.negatives = 2;
  auto b = StreamExampleBuilder::Create(o);
  ASSERT_TRUE(b.ok());
  StreamBatch small(2, 3, false);
  EXPECT_EQ((*b)->Add(Ev(0, TestEvent(0)), &small).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(small.size, 0);
  StreamBatch wrong_len(8, 4, false);
  EXPECT_EQ((*b)->Add(Ev(0, TestEvent(0)), &wrong_len).status().code(),
            StatusCode::kFailedPrecondition);
}

// ---- StreamTrainer ----------------------------------------------------------------------------

struct SmallSetup {
  std::unique_ptr<ps::LocalEmbeddingStore> store;
  std::unique_ptr<Trainer> trainer;
};

SmallSetup MakeTrainer(int max_batch, int max_len) {
  SmallSetup s;
  s.store = testing_util::MakeStore(3, ps::OptimizerOptions::Type::kAdam, 1e-2, 41, 6);
  auto t = Trainer::Create(testing_util::SmallTrainerOptions(max_batch, max_len), s.store.get());
  if (t.ok()) s.trainer = std::move(*t);
  return s;
}

std::string StreamFile(const std::string& name, int events, const std::string& extra = "") {
  const std::string path = TempPath(name);
  std::remove(path.c_str());
  std::string all;
  for (int i = 0; i < events; ++i) all += Line(TestEvent(i));
  AppendToFile(path, all + extra);
  return path;
}

struct Published {
  int64_t step, newest;
  double read_time;
};

// Publishes every 3 steps and at the end; every event is trained, scored and published once.
TEST(StreamTrainer, TrainsEveryEventAndPublishesOnSchedule) {
  SmallSetup s = MakeTrainer(32, 4);
  ASSERT_NE(s.trainer, nullptr);
  StreamTrainerOptions o;
  o.batch_size = 32;
  o.examples.max_len = 4;
  o.examples.negatives = 1;
  o.publish_every_steps = 3;
  o.window_events = 100;
  std::vector<Published> pubs;
  auto st = StreamTrainer::Create(o, s.trainer.get(), [&](int64_t step, int64_t newest, double t) {
    pubs.push_back({step, newest, t});
    return Status();
  });
  ASSERT_TRUE(st.ok()) << st.status();
  const std::string path = StreamFile("train.tsv", 1000);
  EventSourceOptions so;
  so.follow = false;
  auto src = EventStreamSource::Open(path, so);
  ASSERT_TRUE(src.ok());
  auto r = (*st)->Run(src->get(), RunSinks{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->events, 1000);
  EXPECT_EQ(r->examples, 1999);  // the first event has no negative
  EXPECT_EQ(r->steps, s.trainer->steps());
  // 16 events (32 rows) per full batch.
  EXPECT_EQ(r->steps, (1999 + 31) / 32);
  ASSERT_EQ(r->publishes, static_cast<int64_t>(pubs.size()));
  ASSERT_GE(pubs.size(), 2u);
  for (size_t i = 0; i < pubs.size(); ++i) {
    if (i + 1 < pubs.size()) {
      EXPECT_EQ(pubs[i].step, 3 * static_cast<int64_t>(i + 1));
    }
    if (i > 0) {
      EXPECT_GT(pubs[i].newest, pubs[i - 1].newest);
    }
    EXPECT_GT(pubs[i].read_time, 0);
  }
  EXPECT_EQ(pubs.back().newest, 999);
  EXPECT_EQ(pubs.back().step, r->steps);
  ASSERT_EQ(r->windows.size(), 10u);
  int64_t ex = 0;
  for (size_t w = 0; w < r->windows.size(); ++w) {
    EXPECT_EQ(r->windows[w].first_event, 100 * static_cast<int64_t>(w));
    EXPECT_EQ(r->windows[w].last_event, 100 * static_cast<int64_t>(w) + 99);
    EXPECT_FALSE(std::isnan(r->windows[w].auc));
    ex += r->windows[w].examples;
  }
  EXPECT_EQ(ex, r->examples);
  EXPECT_GT(r->freshness_p50_s, 0);
  EXPECT_LE(r->freshness_p50_s, r->freshness_p99_s);
  EXPECT_LE(r->freshness_p99_s, r->freshness_max_s);
  EXPECT_EQ(r->history_users, 7);
  EXPECT_LE(r->history_memory_bytes, r->history_memory_bound);
  std::remove(path.c_str());
}

// On a stream that pauses, a partial batch is trained and published after max_batch_delay_s
// without waiting for the batch to fill or the stream to end: the publisher sees event 2 while
// the writer still holds the pipe open.
TEST(StreamTrainer, SlowStreamTrainsPartialBatchWithinDelay) {
  SmallSetup s = MakeTrainer(64, 4);
  ASSERT_NE(s.trainer, nullptr);
  StreamTrainerOptions o;
  o.batch_size = 64;
  o.examples.max_len = 4;
  o.max_batch_delay_s = 0.05;
  o.publish_every_steps = 1;
  std::promise<void> saw_three;
  std::atomic<bool> signalled{false};
  std::vector<Published> pubs;
  auto st = StreamTrainer::Create(o, s.trainer.get(), [&](int64_t step, int64_t newest, double t) {
    pubs.push_back({step, newest, t});
    if (newest >= 2 && !signalled.exchange(true)) saw_three.set_value();
    return Status();
  });
  ASSERT_TRUE(st.ok()) << st.status();
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  auto src = EventStreamSource::FromFd(fds[0], true, "pipe", FastPolling());
  std::atomic<bool> published_before_close{false};
  std::thread writer([&] {
    std::string l;
    for (int i = 0; i < 3; ++i) l += Line(TestEvent(i));
    ASSERT_EQ(write(fds[1], l.data(), l.size()), static_cast<ssize_t>(l.size()));
    auto f = saw_three.get_future();
    published_before_close = f.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
    l = Line(TestEvent(3));
    ASSERT_EQ(write(fds[1], l.data(), l.size()), static_cast<ssize_t>(l.size()));
    close(fds[1]);
  });
  auto r = (*st)->Run(src.get(), RunSinks{});
  writer.join();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(published_before_close);
  EXPECT_EQ(r->events, 4);
  ASSERT_GE(pubs.size(), 2u);
  EXPECT_EQ(pubs[0].newest, 2);
  EXPECT_EQ(pubs.back().newest, 3);
  // Freshness of the first three events: about the batch delay (+ a step), far below the 10 s
  // the writer would have waited.
  EXPECT_LT(r->freshness_p50_s, 5.0);
}

// Freshness on a live stream: a writer appends 2500 events/s to a followed file (below what the
// small model trains), publishes every 50 ms: every event is published well within a second of
// being read (p99 about publish interval + batch delay + a step when the machine is idle).
TEST(StreamTrainer, FreshnessOnPacedStream) {
  SmallSetup s = MakeTrainer(64, 4);
  ASSERT_NE(s.trainer, nullptr);
  StreamTrainerOptions o;
  o.batch_size = 64;
  o.examples.max_len = 4;
  o.publish_every_s = 0.05;
  o.max_batch_delay_s = 0.02;
  int64_t publishes = 0;
  auto st = StreamTrainer::Create(o, s.trainer.get(), [&](int64_t, int64_t, double) {
    ++publishes;
    return Status();
  });
  ASSERT_TRUE(st.ok()) << st.status();
  const std::string path = TempPath("paced.tsv");
  std::remove(path.c_str());
  AppendToFile(path, "");
  EventSourceOptions so = FastPolling();
  so.idle_timeout_s = 0.3;
  auto src = EventStreamSource::Open(path, so);
  ASSERT_TRUE(src.ok());
  constexpr int kEvents = 1500;
  std::thread writer([&] {
    for (int i = 0; i < kEvents; i += 25) {
      std::string chunk;
      for (int j = i; j < i + 25; ++j) chunk += Line(TestEvent(j));
      AppendToFile(path, chunk);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  auto r = (*st)->Run(src->get(), RunSinks{});
  writer.join();
  std::remove(path.c_str());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->events, kEvents);
  EXPECT_EQ(r->publishes, publishes);
  EXPECT_GE(publishes, 5);
  std::printf(
      "paced stream (2500 events/s): %lld steps, %lld publishes, freshness p50 %.1f ms "
      "p99 %.1f ms max %.1f ms\n",
      static_cast<long long>(r->steps), static_cast<long long>(publishes), 1e3 * r->freshness_p50_s,
      1e3 * r->freshness_p99_s, 1e3 * r->freshness_max_s);
  EXPECT_LT(r->freshness_p99_s, 1.0);
}

// A bad line ends the stream with its error (exit 1 in the CLI), after training and publishing
// the events before it: the default publish_every_s would otherwise lose up to 10 s of training.
TEST(StreamTrainer, BadLineStopsWithItsErrorAfterPublishingWhatItTrained) {
  SmallSetup s = MakeTrainer(32, 4);
  ASSERT_NE(s.trainer, nullptr);
  StreamTrainerOptions o;
  o.batch_size = 32;
  o.examples.max_len = 4;
  int publishes = 0;
  int64_t newest = -1;
  auto st = StreamTrainer::Create(o, s.trainer.get(), [&](int64_t, int64_t n, double) {
    ++publishes;
    newest = n;
    return Status();
  });
  ASSERT_TRUE(st.ok());
  const std::string path = StreamFile("bad.tsv", 300, "1\t2\t3\tnot-a-time\tpv\t0\n");
  EventSourceOptions so;
  so.follow = true;  // an error ends a followed stream too
  auto src = EventStreamSource::Open(path, so);
  ASSERT_TRUE(src.ok());
  auto r = (*st)->Run(src->get(), RunSinks{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(path + ":301: timestamp"), std::string::npos) << r.status();
  // What was trained before the bad line is not lost: trained and published (one final publish).
  EXPECT_NE(r.status().message().find("(the 300 events before it were trained and published)"),
            std::string::npos)
      << r.status();
  EXPECT_EQ(publishes, 1);
  EXPECT_EQ(newest, 299);
  EXPECT_EQ(s.trainer->steps(), (599 + 31) / 32);
  std::remove(path.c_str());
}

// With a bad-line budget the stream goes on past bad lines and reports how many it skipped.
TEST(StreamTrainer, SkippedBadLinesAreCountedInTheResult) {
  SmallSetup s = MakeTrainer(32, 4);
  ASSERT_NE(s.trainer, nullptr);
  StreamTrainerOptions o;
  o.batch_size = 32;
  o.examples.max_len = 4;
  auto st = StreamTrainer::Create(o, s.trainer.get(), nullptr);
  ASSERT_TRUE(st.ok());
  const std::string path =
      StreamFile("skip.tsv", 200, "1\t2\t3\tnot-a-time\tpv\t0\n1\t2\n" + Lines(200, 300));
  EventSourceOptions so;
  so.follow = false;
  so.max_bad_records = 2;
  std::vector<std::string> notices;
  so.log = [&](const std::string& l) { notices.push_back(l); };
  auto src = EventStreamSource::Open(path, so);
  ASSERT_TRUE(src.ok());
  auto r = (*st)->Run(src->get(), RunSinks{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->events, 300);
  EXPECT_EQ(r->bad_lines, 2);
  EXPECT_EQ(r->rotations, 0);
  ASSERT_EQ(notices.size(), 2u);
  EXPECT_NE(notices[0].find(path + ":201: timestamp"), std::string::npos) << notices[0];
  EXPECT_NE(notices[1].find(path + ":202: line"), std::string::npos) << notices[1];
  std::remove(path.c_str());
}

TEST(StreamTrainer, PublisherErrorStopsStream) {
  SmallSetup s = MakeTrainer(32, 4);
  ASSERT_NE(s.trainer, nullptr);
  StreamTrainerOptions o;
  o.batch_size = 32;
  o.examples.max_len = 4;
  o.publish_every_steps = 2;
  auto st = StreamTrainer::Create(o, s.trainer.get(), [&](int64_t, int64_t, double) {
    return UnavailableError("bundle directory full");
  });
  ASSERT_TRUE(st.ok());
  const std::string path = StreamFile("pub.tsv", 500);
  EventSourceOptions so;
  so.follow = true;  // the error must also end a stream that would otherwise wait for ever
  auto src = EventStreamSource::Open(path, so);
  ASSERT_TRUE(src.ok());
  auto r = (*st)->Run(src->get(), RunSinks{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("bundle directory full"), std::string::npos);
  EXPECT_EQ(s.trainer->steps(), 2);
  std::remove(path.c_str());
}

TEST(StreamTrainer, MaxEventsEndsAFollowedStream) {
  SmallSetup s = MakeTrainer(32, 4);
  ASSERT_NE(s.trainer, nullptr);
  StreamTrainerOptions o;
  o.batch_size = 32;
  o.examples.max_len = 4;
  o.max_events = 250;
  auto st = StreamTrainer::Create(o, s.trainer.get(), nullptr);
  ASSERT_TRUE(st.ok());
  const std::string path = StreamFile("max.tsv", 400);
  auto src = EventStreamSource::Open(path, EventSourceOptions());
  ASSERT_TRUE(src.ok());
  auto r = (*st)->Run(src->get(), RunSinks{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->events, 250);
  EXPECT_EQ(r->publishes, 1);  // the final one (an empty publisher still marks the point)
  std::remove(path.c_str());
}

TEST(StreamTrainer, RejectsOptionsThatDoNotFitTheModel) {
  SmallSetup s = MakeTrainer(32, 4);
  ASSERT_NE(s.trainer, nullptr);
  StreamTrainerOptions o;
  o.batch_size = 32;
  o.examples.max_len = 5;
  EXPECT_EQ(StreamTrainer::Create(o, s.trainer.get(), nullptr).status().code(),
            StatusCode::kInvalidArgument);
  o.examples.max_len = 4;
  o.batch_size = 33;
  EXPECT_EQ(StreamTrainer::Create(o, s.trainer.get(), nullptr).status().code(),
            StatusCode::kInvalidArgument);
  o.batch_size = 2;
  o.examples.negatives = 2;
  EXPECT_EQ(StreamTrainer::Create(o, s.trainer.get(), nullptr).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ips
