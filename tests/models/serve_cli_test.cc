// `ips export` and `ips serve` as a user runs them: a checkpoint written by the library is
// exported (RESULT export ...), requests piped to `ips serve` are answered one per line with the
// bad ones answered by errors naming the line (RESULT serve ... errors=N), and usage errors exit 2.
// The export records the synthetic catalogue's item -> category map, so requests may omit
// categories; a bundle without a map answers such requests with an error naming the field.
// Histories longer than max_history are counted (response field, stderr note, RESULT
// truncated_histories=), so are ids the bundle has no row for (response field, stderr note,
// RESULT unknown_ids= requests_with_unknown_ids=), "top_n" ranks candidates, category 0 is
// refused, and a damaged bundle file is named as a bundle's.
// `ips export --delta` onto an empty root writes a full bundle and says so; `ips export` with a
// dataset of another vocabulary than the checkpoint's is refused naming both; `ips eval` and `ips
// train --resume` of another model's checkpoint name the model that wrote it. Bundle writers: two
// streams publishing into one root (the second is refused before it trains; the root serves), an
// export into a checkpoint or a converted dataset, and `ips train --stream` flags and models it
// cannot run are refused. `ips serve` stops gracefully on SIGTERM and SIGINT while it waits for a
// request (RESULT ... status=stopped, exit 0), uses no CPU while it waits, and still hot-reloads.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ps/checkpoint_io.h"
#include "tests/testing/run_ips.h"
#include "worker/checkpoint.h"
#include "worker/data_reader.h"
#include "worker/serving_fixture.h"

namespace ips {
namespace {

using ::ips::testing::RunIps;
using ::ips::testing::RunIpsSplit;

constexpr char kConfig[] = R"(
version: 1
name: "serve_cli_test"
data { batch_size: 32 max_history: 5 synthetic { num_items: 10 num_categories: 3 } }
model { type: DIN embedding_dim: 4 attention_hidden: [6, 5] mlp_hidden: [7, 4] }
tables { name: "item" dim: 4 }
tables { name: "category" dim: 4 }
)";

std::string LastLine(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const size_t nl = t.find_last_of('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

TEST(ServeCli, ExportThenServe_ResultLines_ErrorsNameTheLine) {
  char tmpl[] = "/tmp/ips_serve_cli_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  // The model at its init, keys 1..6 of both tables.
  auto state = MakeServingState(kConfig, 8, {6, 6}, ps::TableOptions(), 0, 0);
  ASSERT_TRUE(state.ok()) << state.status();
  CheckpointContent& content = (*state)->content;
  CheckpointOptions co;
  co.dir = dir + "/ckpt";
  ASSERT_TRUE(std::move(CheckpointWriter::Create(co)).value()->Write(7, content).ok());
  // The same state under a config that names no data: its bundle has no map.
  std::string no_data = kConfig;
  const std::string synth = " synthetic { num_items: 10 num_categories: 3 }";
  no_data.erase(no_data.find(synth), synth.size());
  content.config_text = no_data;
  CheckpointOptions co2;
  co2.dir = dir + "/ckpt_no_data";
  ASSERT_TRUE(std::move(CheckpointWriter::Create(co2)).value()->Write(7, content).ok());

  auto ex = RunIpsSplit("export --checkpoint " + co.dir + " --output " + dir + "/bundle --fp16");
  ASSERT_EQ(ex.exit_code, 0) << ex.output << ex.error;
  EXPECT_EQ(LastLine(ex.output).rfind("RESULT export ", 0), 0u) << ex.output;
  EXPECT_NE(ex.output.find("version=1"), std::string::npos) << ex.output;
  EXPECT_NE(ex.output.find("rows=12"), std::string::npos) << ex.output;
  EXPECT_NE(ex.output.find("item_cats=true"), std::string::npos) << ex.output;

  const std::string requests = dir + "/requests.jsonl";
  {
    std::ofstream f(requests);
    f << R"({"user":"a","history":[1,2,3],"history_cats":[1,2,3],"candidates":[4,5,99]})"
      << "\n";
    f << R"({"user":"b","history":[1],"candidates":[2],"shoe_size":44})"
      << "\n";
    f << "\n";
    f << R"({"user":"c","history":[],"candidates":[6]})"
      << "\n";
  }
  auto sv = RunIpsSplit("serve --bundle " + dir + "/bundle < " + requests);
  ASSERT_EQ(sv.exit_code, 0) << sv.output << sv.error;
  EXPECT_NE(sv.output.find(R"({"user":"a","version":1,"scores":[)"), std::string::npos)
      << sv.output;
  EXPECT_NE(sv.output.find(R"({"user":"b","line":2,"error":"line 2: )"), std::string::npos)
      << sv.output;
  EXPECT_NE(sv.output.find("shoe_size"), std::string::npos) << sv.output;
  EXPECT_NE(sv.output.find(R"({"user":"c","version":1,"scores":[)"), std::string::npos);
  EXPECT_EQ(LastLine(sv.output).rfind("RESULT serve requests=3 errors=1 ", 0), 0u) << sv.output;
  EXPECT_NE(sv.error.find("line 2"), std::string::npos) << sv.error;

  // No map: a request without categories is answered with an error naming the field; with them
  // it is scored. A --dataset that does not open fails the export naming it.
  auto ex2 = RunIpsSplit("export --checkpoint " + co2.dir + " --output " + dir + "/bundle2");
  ASSERT_EQ(ex2.exit_code, 0) << ex2.output << ex2.error;
  EXPECT_NE(ex2.output.find("item_cats=false"), std::string::npos) << ex2.output;
  EXPECT_NE(ex2.error.find("--dataset"), std::string::npos) << ex2.error;
  {
    std::ofstream f(requests);
    f << R"({"user":"a","history":[1,2,3],"history_cats":[1,2,3],"candidates":[4,5,99],)"
      << R"("candidate_cats":[1,2,3]})"
      << "\n";
    f << R"({"user":"d","history":[1,2],"candidates":[4]})"
      << "\n";
  }
  auto sv2 = RunIpsSplit("serve --bundle " + dir + "/bundle2 < " + requests);
  ASSERT_EQ(sv2.exit_code, 0) << sv2.output << sv2.error;
  EXPECT_NE(sv2.output.find(R"({"user":"d","line":2,"error":"line 2: no history_cats)"),
            std::string::npos)
      << sv2.output;
  EXPECT_EQ(LastLine(sv2.output).rfind("RESULT serve requests=2 errors=1 ", 0), 0u) << sv2.output;
  // --dataset: a converted dataset's vocab is the map; a request without categories then scores
  // as the same request with the dataset's categories.
  auto synthed = RunIps("data synth --output " + dir +
                        "/events.tsv --truth none --events 300 "
                        "--users 20 --items 40 --categories 16 --domain1_fraction 0");
  ASSERT_EQ(synthed.exit_code, 0) << synthed.output;
  auto conv =
      RunIps("data convert --format events --input " + dir + "/events.tsv --output " + dir + "/ds");
  ASSERT_EQ(conv.exit_code, 0) << conv.output;
  auto ds = Dataset::Open(dir + "/ds");
  ASSERT_TRUE(ds.ok()) << ds.status();
  const auto cat = [&](uint64_t i) {
    return std::to_string(i < (*ds)->item_cat().size ? (*ds)->item_cat()[i] : 0);
  };
  // (The map matters: some of these items have a category with a row, keys 1..6.)
  bool some_row = false;
  for (uint64_t i = 1; i <= 5; ++i) some_row = some_row || std::stoi(cat(i)) <= 6;
  ASSERT_TRUE(some_row);
  auto ex3 = RunIpsSplit("export --checkpoint " + co2.dir + " --output " + dir +
                         "/bundle4 --dataset " + dir + "/ds");
  ASSERT_EQ(ex3.exit_code, 0) << ex3.output << ex3.error;
  EXPECT_NE(ex3.output.find("item_cats=true"), std::string::npos) << ex3.output;
  {
    std::ofstream f(requests);
    f << R"({"user":"x","history":[1,2,3],"candidates":[4,5]})"
      << "\n";
    f << R"({"user":"x","history":[1,2,3],"history_cats":[)" << cat(1) << "," << cat(2) << ","
      << cat(3) << R"(],"candidates":[4,5],"candidate_cats":[)" << cat(4) << "," << cat(5)
      << "]}\n";
  }
  auto sv3 = RunIpsSplit("serve --bundle " + dir + "/bundle4 < " + requests);
  ASSERT_EQ(sv3.exit_code, 0) << sv3.output << sv3.error;
  {
    std::istringstream lines(sv3.output);
    std::string a, b;
    std::getline(lines, a);
    std::getline(lines, b);
    EXPECT_EQ(a.rfind(R"({"user":"x","version":1,"scores":[)", 0), 0u) << sv3.output;
    EXPECT_EQ(a, b) << sv3.output;
  }
  auto bad_ds = RunIps("export --checkpoint " + co2.dir + " --output " + dir +
                       "/bundle3 --dataset " + dir + "/no_dataset");
  EXPECT_EQ(bad_ds.exit_code, 1);
  EXPECT_NE(bad_ds.output.find(dir + "/no_dataset"), std::string::npos) << bad_ds.output;

  // Usage and input errors.
  EXPECT_EQ(RunIps("serve").exit_code, 2);
  EXPECT_EQ(RunIps("export --checkpoint " + co.dir).exit_code, 2);
  EXPECT_EQ(RunIps("serve --bundle " + dir + "/nothing_here").exit_code, 1);
  auto missing = RunIps("export --checkpoint " + dir + "/none --output " + dir + "/b2");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find(dir + "/none"), std::string::npos) << missing.output;
  ps::RemoveTree(dir);
}

// A fresh temporary directory (dir) holding checkpoint step 7 of kConfig's small model (ckpt),
// exported into the bundle root dir/bundle (root); weight_stddev > 0 draws its dense weights
// (MakeServingState).
struct ExportedCheckpoint {
  std::string dir, ckpt, root;
};
void ExportSmallCheckpoint(ExportedCheckpoint* out, double weight_stddev = 0,
                           uint64_t weight_seed = 0) {
  char tmpl[] = "/tmp/ips_serve_cli_XXXXXX";
  out->dir = ::mkdtemp(tmpl);
  auto state = MakeServingState(kConfig, 8, {6, 6}, ps::TableOptions(), weight_stddev, weight_seed);
  ASSERT_TRUE(state.ok()) << state.status();
  CheckpointOptions co;
  co.dir = out->ckpt = out->dir + "/ckpt";
  ASSERT_TRUE(std::move(CheckpointWriter::Create(co)).value()->Write(7, (*state)->content).ok());
  out->root = out->dir + "/bundle";
  auto ex = RunIpsSplit("export --checkpoint " + out->ckpt + " --output " + out->root);
  ASSERT_EQ(ex.exit_code, 0) << ex.output << ex.error;
}

// `ips serve` answers every request line with one valid JSON line: invalid UTF-8 in the request
// (the user value, an unknown field's name) is replaced by \ufffd instead of echoed raw, and
// history or candidate item 0 (the padding id) and a negative top_n are errors naming their field
// (and the entry). A bundle root
// nothing was exported into says so (it said "BUNDLE/CURRENT: cannot open").
TEST(ServeCli, ResponsesAreValidJsonLines_BadIdsNameTheField_EmptyRootSaysExportFirst) {
  ExportedCheckpoint exported;
  ASSERT_NO_FATAL_FAILURE(ExportSmallCheckpoint(&exported));
  const std::string& dir = exported.dir;
  const std::string requests = dir + "/requests.jsonl";
  {
    std::ofstream f(requests, std::ios::binary);
    f << "{\"user\":\"\xff\xfe\",\"history\":[1,2],\"candidates\":[3]}\n";
    f << "{\"user\":1,\"hist\xff\":[1]}\n";
    f << R"({"user":2,"history":[1],"candidates":[4,0]})"
      << "\n";
    f << R"({"user":3,"history":[1],"top_n":-1})"
      << "\n";
    f << R"({"user":4,"history":[5,0,1],"candidates":[2]})"
      << "\n";
  }
  auto sv = RunIpsSplit("serve --bundle " + dir + "/bundle < " + requests);
  ASSERT_EQ(sv.exit_code, 0) << sv.output << sv.error;
  std::istringstream lines(sv.output);
  std::vector<std::string> got;
  for (std::string l; std::getline(lines, l);) got.push_back(l);
  ASSERT_EQ(got.size(), 6u) << sv.output;
  EXPECT_EQ(got[0].rfind(R"({"user":"\ufffd\ufffd","version":1,"scores":[)", 0), 0u) << got[0];
  EXPECT_EQ(got[1].rfind(R"({"user":1,"line":2,"error":"line 2: column 19: unknown field )"
                         R"(\"hist\ufffd\")",
                         0),
            0u)
      << got[1];
  EXPECT_NE(got[2].find(R"(field \"candidates\": id 0 (entry 1) is the padding id)"),
            std::string::npos)
      << got[2];
  EXPECT_NE(got[3].find(R"(field \"top_n\": expected an integer in 0..100000)"), std::string::npos)
      << got[3];
  EXPECT_EQ(got[4],
            R"({"user":4,"line":5,"error":"line 5: column 24: field \"history\": id 0 (entry 1) )"
            R"x(is the padding id, not an item (item ids are >= 1)"})x")
      << got[4];
  for (size_t i = 0; i < 5; ++i)
    for (char c : got[i]) EXPECT_LT(static_cast<unsigned char>(c), 0x80) << "line " << i + 1;
  EXPECT_EQ(got[5].rfind("RESULT serve requests=5 errors=4 ", 0), 0u) << sv.output;

  ASSERT_EQ(::mkdir((dir + "/empty_root").c_str(), 0755), 0);
  auto empty = RunIpsSplit("serve --bundle " + dir + "/empty_root < " + requests);
  EXPECT_EQ(empty.exit_code, 1) << empty.output << empty.error;
  EXPECT_NE(empty.error.find("error: " + dir +
                             "/empty_root: no bundle version yet (no CURRENT, no MANIFEST): run "
                             "`ips export --checkpoint CKPT --output " +
                             dir + "/empty_root` first"),
            std::string::npos)
      << empty.error;
  ps::RemoveTree(dir);
}

// What `ips serve` did without a word: a history longer than the model's data.max_history (5) is
// scored by its newest 5 entries, as training does, and each such response says how many were
// dropped; stderr notes it once and the RESULT line counts those requests (truncated_histories=).
// "top_n" with "candidates" answers the top_n of them, best first; a category id 0 is an error
// naming the field and entry. A damaged bundle file is named as a bundle's, not a checkpoint's.
TEST(ServeCli, LongHistoriesCounted_TopNRanksCandidates_CategoryZeroRefused_DamagedBundle) {
  ExportedCheckpoint exported;
  ASSERT_NO_FATAL_FAILURE(ExportSmallCheckpoint(&exported, 0.3, 4));
  const std::string& dir = exported.dir;
  const std::string requests = dir + "/requests.jsonl";
  {
    std::ofstream f(requests);
    f << R"({"user":1,"history":[6,6,1,2,3,4,5],"candidates":[2,3]})"
      << "\n";
    f << R"({"user":2,"history":[1,2,3,4,5],"candidates":[2,3]})"
      << "\n";
    f << R"({"user":3,"history":[1,2,3,4,5,6,1,2,3],"candidates":[2,3,4],"top_n":2})"
      << "\n";
    f << R"({"user":4,"history":[1],"candidates":[2,3],"candidate_cats":[1,0]})"
      << "\n";
  }
  auto sv = RunIpsSplit("serve --bundle " + dir + "/bundle < " + requests);
  ASSERT_EQ(sv.exit_code, 0) << sv.output << sv.error;
  std::istringstream lines(sv.output);
  std::vector<std::string> got;
  for (std::string l; std::getline(lines, l);) got.push_back(l);
  ASSERT_EQ(got.size(), 5u) << sv.output;
  // The newest 5 of request 1 are request 2's history: the same scores.
  const std::string scores2 = got[1].substr(got[1].find("\"scores\""));
  EXPECT_EQ(got[0], R"({"user":1,"version":1,)" + scores2.substr(0, scores2.size() - 1) +
                        R"(,"history_dropped":2})")
      << got[0] << "\n"
      << got[1];
  EXPECT_EQ(got[1].find("history_dropped"), std::string::npos) << got[1];
  EXPECT_EQ(got[2].rfind(R"({"user":3,"version":1,"items":[)", 0), 0u) << got[2];
  EXPECT_NE(got[2].find(R"(],"history_dropped":4})"), std::string::npos) << got[2];
  EXPECT_EQ(got[3],
            R"({"user":4,"line":4,"error":"line 4: column 64: field \"candidate_cats\": id 0 )"
            R"x((entry 1) is the padding id, not a category (category ids are >= 1)"})x")
      << got[3];
  EXPECT_EQ(got[4].rfind("RESULT serve requests=4 errors=1 truncated_histories=2 ", 0), 0u)
      << sv.output;
  // One note on stderr (the first truncated request), not one per request.
  const std::string note =
      "note: stdin line 1: the history has 7 entries, the model reads the newest 5 "
      "(data.max_history)";
  EXPECT_NE(sv.error.find(note), std::string::npos) << sv.error;
  EXPECT_EQ(sv.error.find("note: stdin line 3"), std::string::npos) << sv.error;

  // A bundle file replaced by another intact one (its trailer matches its body, the manifest's
  // CRC does not): named, and a bundle is among its possible origins (it said "checkpoint").
  const std::string rows = dir + "/bundle/v-1/rows-item.bin";
  {
    std::string bytes = std::move(ps::ReadSmallFile(rows)).value();
    bytes.resize(bytes.size() - 4);
    bytes[60] ^= 0x40;
    auto w = std::move(ps::CrcFileWriter::Create(rows)).value();
    ASSERT_TRUE(w->Write(bytes.data(), bytes.size()).ok());
    ASSERT_TRUE(w->Finish().ok());
  }
  auto damaged = RunIpsSplit("serve --bundle " + dir + "/bundle < " + requests);
  EXPECT_EQ(damaged.exit_code, 1) << damaged.output << damaged.error;
  EXPECT_NE(damaged.error.find("error: " + rows + ": checksum mismatch"), std::string::npos)
      << damaged.error;
  EXPECT_NE(damaged.error.find("belongs to another checkpoint or bundle version"),
            std::string::npos)
      << damaged.error;
  ps::RemoveTree(dir);
}

// QA: a request of ids the bundle has no row for (a client sending a dataset's raw ids instead
// of its dense ids) was scored with zero rows without a word: plausible scores, errors=0. Each
// such response says how many of its ids have no row (,"unknown_ids":N, before
// "history_dropped"), stderr notes the first such request once (its line, the first such id and
// field, and that requests carry the model's ids), and the RESULT line counts the ids and the
// requests after its older keys. The scores stay those of zero rows; error lines do not count.
TEST(ServeCli, UnknownIdsCounted_ResponseStderrNoteAndResultLine_ScoresUnchanged) {
  ExportedCheckpoint exported;  // keys 1..6
  ASSERT_NO_FATAL_FAILURE(ExportSmallCheckpoint(&exported, 0.3, 4));
  const std::string& dir = exported.dir;
  const std::string requests = dir + "/requests.jsonl";
  {
    std::ofstream f(requests);
    f << R"({"user":1,"history":[1,2,3],"candidates":[4,5]})"
      << "\n";
    f << R"({"user":2,"history":[1,100002,3],"candidates":[4,100005]})"
      << "\n";
    f << R"({"user":2,"history":[1,100012,3],"candidates":[4,100009]})"
      << "\n";
    f << R"({"user":4,"history":[1,2,3,4,5,6,100007],"history_cats":[1,2,3,1,2,3,70],)"
      << R"("candidates":[2]})"
      << "\n";
    f << R"({"user":5,"history":[100001],"candidates":[0]})"
      << "\n";
  }
  auto sv = RunIpsSplit("serve --bundle " + dir + "/bundle < " + requests);
  ASSERT_EQ(sv.exit_code, 0) << sv.output << sv.error;
  std::istringstream lines(sv.output);
  std::vector<std::string> got;
  for (std::string l; std::getline(lines, l);) got.push_back(l);
  ASSERT_EQ(got.size(), 6u) << sv.output;
  EXPECT_EQ(got[0].find("unknown_ids"), std::string::npos) << got[0];
  EXPECT_EQ(got[1].rfind(R"({"user":2,"version":1,"scores":[)", 0), 0u) << got[1];
  EXPECT_EQ(got[1].substr(got[1].size() - 18), R"(],"unknown_ids":2})") << got[1];
  // Other unknown ids: the same zero rows, the same answer.
  EXPECT_EQ(got[2], got[1]);
  // The newest 5 entries are scored: item 100007 and category 70 have no row.
  EXPECT_EQ(got[3].substr(got[3].size() - 38), R"(],"unknown_ids":2,"history_dropped":2})")
      << got[3];
  EXPECT_NE(got[4].find(R"("line":5,"error":)"), std::string::npos) << got[4];
  const std::string& result = got[5];
  EXPECT_EQ(result.rfind("RESULT serve requests=5 errors=1 truncated_histories=1 reloads=0 ", 0),
            0u)
      << result;
  const size_t seconds = result.find(" seconds=");
  const size_t unknown = result.find(" unknown_ids=6 requests_with_unknown_ids=3");
  ASSERT_NE(unknown, std::string::npos) << result;
  EXPECT_LT(seconds, unknown) << result;
  EXPECT_EQ(unknown + std::strlen(" unknown_ids=6 requests_with_unknown_ids=3"), result.size())
      << result;
  // One note, at the first such request, naming the first unknown id and what ids to send.
  EXPECT_NE(sv.error.find("note: stdin line 2: 2 ids of the request have no row in the bundle "
                          "and scored as zeros (the first: \"history\" entry 1, id 100002): "
                          "requests carry the model's ids (for a bundle trained on a converted "
                          "dataset, the dataset's dense ids"),
            std::string::npos)
      << sv.error;
  EXPECT_EQ(sv.error.find("no row in the bundle"), sv.error.rfind("no row in the bundle"))
      << sv.error;

  // Requests whose ids all have rows: no note, zero counts.
  {
    std::ofstream f(requests);
    f << R"({"user":1,"history":[1,2,3],"candidates":[4,5]})"
      << "\n";
  }
  auto known = RunIpsSplit("serve --bundle " + dir + "/bundle < " + requests);
  ASSERT_EQ(known.exit_code, 0) << known.output << known.error;
  EXPECT_NE(known.output.find(" unknown_ids=0 requests_with_unknown_ids=0"), std::string::npos)
      << known.output;
  EXPECT_EQ(known.error.find("no row"), std::string::npos) << known.error;
  ps::RemoveTree(dir);
}

// `ips export --delta` onto a root with no version: a full bundle is published (a publisher that
// always passes --delta needs no special first run), but not silently: stderr says there was no
// base and the RESULT line says delta=false delta_reason=no_base. The next --delta is a delta.
TEST(ServeCli, ExportDeltaOntoAnEmptyRoot_WritesAFullBundleAndSaysSo) {
  char tmpl[] = "/tmp/ips_serve_cli_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  auto state = MakeServingState(kConfig, 8, {6, 6}, ps::TableOptions(), 0, 0);
  ASSERT_TRUE(state.ok()) << state.status();
  CheckpointOptions co;
  co.dir = dir + "/ckpt";
  ASSERT_TRUE(std::move(CheckpointWriter::Create(co)).value()->Write(7, (*state)->content).ok());
  const std::string export_delta =
      "export --checkpoint " + co.dir + " --output " + dir + "/bundle --delta";
  auto first = RunIpsSplit(export_delta);
  ASSERT_EQ(first.exit_code, 0) << first.output << first.error;
  const std::string line = LastLine(first.output);
  EXPECT_EQ(line.rfind("RESULT export ", 0), 0u) << first.output;
  EXPECT_NE(line.find(" version=1 "), std::string::npos) << line;
  EXPECT_NE(line.find(" delta=false "), std::string::npos) << line;
  EXPECT_NE(line.find(" delta_of=0 "), std::string::npos) << line;
  EXPECT_NE(line.find(" delta_reason=no_base"), std::string::npos) << line;
  EXPECT_NE(first.error.find("note: --delta: " + dir + "/bundle has no current version"),
            std::string::npos)
      << first.error;
  EXPECT_NE(first.error.find(dir + "/bundle/v-1 is a full bundle"), std::string::npos)
      << first.error;

  auto second = RunIpsSplit(export_delta);
  ASSERT_EQ(second.exit_code, 0) << second.output << second.error;
  const std::string line2 = LastLine(second.output);
  EXPECT_NE(line2.find(" version=2 "), std::string::npos) << line2;
  EXPECT_NE(line2.find(" delta=true "), std::string::npos) << line2;
  EXPECT_NE(line2.find(" delta_of=1 "), std::string::npos) << line2;
  EXPECT_EQ(line2.find("delta_reason"), std::string::npos) << line2;
  EXPECT_EQ(second.error.find("--delta"), std::string::npos) << second.error;
  // Without --delta nothing is said about deltas beyond delta=false.
  auto plain = RunIpsSplit("export --checkpoint " + co.dir + " --output " + dir + "/bundle_plain");
  ASSERT_EQ(plain.exit_code, 0) << plain.output << plain.error;
  EXPECT_NE(LastLine(plain.output).find(" delta=false "), std::string::npos) << plain.output;
  EXPECT_EQ(plain.output.find("delta_reason"), std::string::npos) << plain.output;
  EXPECT_EQ(plain.error.find("--delta"), std::string::npos) << plain.error;
  ps::RemoveTree(dir);
}

// `ips eval` and `ips train --resume` with the config of another model than the checkpoint's say
// so: the checkpoint's path, the model that wrote it and the model of the config, not only a
// tensor's size.
TEST(ServeCli, EvalAndResumeWithAnotherModelsConfig_SayWhichModelWroteTheCheckpoint) {
  char tmpl[] = "/tmp/ips_serve_cli_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  auto state = MakeServingState(kConfig, 8, {6, 6}, ps::TableOptions(), 0, 0);
  ASSERT_TRUE(state.ok()) << state.status();
  CheckpointOptions co;
  co.dir = dir + "/ckpt";
  ASSERT_TRUE(std::move(CheckpointWriter::Create(co)).value()->Write(7, (*state)->content).ok());
  std::string dien = kConfig;
  const std::string din = "type: DIN embedding_dim: 4";
  dien.replace(dien.find(din), din.size(), "type: DIEN embedding_dim: 4 rnn_hidden: 8");
  const std::string config = dir + "/dien.pbtxt";
  std::ofstream(config) << dien;
  const std::string want = "the checkpoint at " + co.dir +
                           "/ckpt-7 was written by a DIN model (model.embedding_dim 4), the "
                           "config says DIEN (model.embedding_dim 4)";
  auto eval = RunIpsSplit("eval --config " + config + " --checkpoint " + co.dir);
  EXPECT_EQ(eval.exit_code, 1) << eval.output << eval.error;
  EXPECT_NE(eval.error.find(want), std::string::npos) << eval.error;
  auto resume = RunIpsSplit("train --quiet --config " + config + " --resume " + co.dir);
  EXPECT_EQ(resume.exit_code, 1) << resume.output << resume.error;
  EXPECT_NE(resume.error.find(want), std::string::npos) << resume.error;
  ps::RemoveTree(dir);
}

// The item -> category map of a bundle is indexed by the item ids of the dataset it comes from,
// which `ips data convert` numbers per dataset: `ips export` of a checkpoint trained on one
// dataset with the vocabulary of another (--dataset, or the config's data.train_dir converted
// again from other input) is refused naming both, as `ips eval` refuses it, and writes nothing
// (it wrote a bundle whose map gave the items other items' categories). A dataset of the same
// vocabulary (the same input converted with other evaluation lists) is accepted.
TEST(ServeCli, ExportWithADatasetOfAnotherVocabulary_RefusedNamingBoth) {
  char tmpl[] = "/tmp/ips_serve_cli_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  // 50 users of 8 events over 60 items; "other" shifts every item id by one.
  {
    std::ofstream events(dir + "/events.txt"), other(dir + "/other.txt");
    for (int u = 1; u <= 50; ++u) {
      for (int j = 0; j < 8; ++j) {
        events << u << " " << (u * 7 + j) % 60 + 1 << "\n";
        other << u << " " << (u * 7 + j) % 60 + 2 << "\n";
      }
    }
  }
  auto convert = [&](const std::string& input, const std::string& output,
                     const std::string& extra) {
    ps::RemoveTree(output);
    auto r = RunIps("data convert --format seqrec --max_history 10 --input " + input +
                    " --output " + output + extra);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  };
  const std::string ds = dir + "/ds", other = dir + "/other", again = dir + "/again";
  convert(dir + "/events.txt", ds, "");
  convert(dir + "/other.txt", other, "");
  convert(dir + "/events.txt", again, " --eval_negatives 20 --seed 5");
  const std::string config = std::string(std::getenv("IPS_SOURCE_DIR")) +
                             "/launch/configs/din_ml100k.pbtxt"
                             " --set data.max_history=10 --set data.batch_size=16"
                             " --set train.num_threads=1 --set data.train_dir=";
  const std::string ck = dir + "/ck";
  auto train = RunIps("train --quiet --config " + config + ds + " --set checkpoint.dir=" + ck +
                      " --set train.max_steps=4");
  ASSERT_EQ(train.exit_code, 0) << train.output;

  // What the checkpoint records, in `ips eval`'s words.
  auto eval = RunIpsSplit("eval --config " + config + other + " --checkpoint " + ck);
  ASSERT_EQ(eval.exit_code, 1) << eval.output << eval.error;
  const std::string trained = "the checkpoint at " + ck +
                              "/ckpt-4 was trained on data.train_dir '" + ds +
                              "' (seqrec: 50 users, 60 items, 1 categories, vocab.ips crc32c ";
  ASSERT_NE(eval.error.find(trained), std::string::npos) << eval.error;
  const size_t from = eval.error.find(trained);
  const std::string recorded =
      eval.error.substr(from, eval.error.find(", but ", from) + 6 - from);  // up to ", but "

  const std::string out = dir + "/bundle";
  auto ex = RunIpsSplit("export --checkpoint " + ck + " --output " + out + " --dataset " + other);
  EXPECT_EQ(ex.exit_code, 1) << ex.output << ex.error;
  EXPECT_NE(ex.error.find("error: export: " + recorded + "--dataset '" + other +
                          "' (seqrec: 50 users, 60 items, 1 categories, vocab.ips crc32c "),
            std::string::npos)
      << ex.error << "\nwant: " << recorded;
  EXPECT_NE(ex.error.find("has another vocabulary"), std::string::npos) << ex.error;
  EXPECT_NE(ex.error.find("Pass --dataset the dataset the checkpoint was trained on"),
            std::string::npos)
      << ex.error;
  EXPECT_EQ(ex.output.rfind("RESULT export status=error exit=1 error=\"export: ", 0), 0u)
      << ex.output;
  EXPECT_FALSE(ps::PathExists(out)) << "a refused export wrote " << out;

  // The same vocabulary: accepted, named or as the config's data.train_dir.
  ex = RunIpsSplit("export --checkpoint " + ck + " --output " + out + " --dataset " + again);
  EXPECT_EQ(ex.exit_code, 0) << ex.output << ex.error;
  EXPECT_NE(ex.output.find(" item_cats=true"), std::string::npos) << ex.output;
  ex = RunIpsSplit("export --checkpoint " + ck + " --output " + out);
  EXPECT_EQ(ex.exit_code, 0) << ex.output << ex.error;
  EXPECT_NE(ex.output.find(" version=2 "), std::string::npos) << ex.output;

  // The config's data.train_dir converted again from other input since: refused too.
  convert(dir + "/other.txt", ds, "");
  ex = RunIpsSplit("export --checkpoint " + ck + " --output " + out);
  EXPECT_EQ(ex.exit_code, 1) << ex.output << ex.error;
  EXPECT_NE(ex.error.find("error: export: " + recorded + "its config's data.train_dir '" + ds +
                          "' (seqrec: 50 users, 60 items"),
            std::string::npos)
      << ex.error;
  EXPECT_NE(ex.error.find("That directory no longer holds the dataset the checkpoint was trained "
                          "on: pass --dataset that dataset"),
            std::string::npos)
      << ex.error;
  EXPECT_FALSE(ps::PathExists(out + "/v-3"));
  ex = RunIpsSplit("export --checkpoint " + ck + " --output " + out + " --dataset " + again);
  EXPECT_EQ(ex.exit_code, 0) << ex.output << ex.error;
  ps::RemoveTree(dir);
}

// QA: two `ips train --stream ... --stream_publish_dir ROOT` started 0.2 s apart interleaved their
// versions (one failed renaming ROOT/tmp-v-9, the other exited 0) and `ips serve --bundle ROOT`
// then failed a checksum. The first run holds ROOT/LOCK from before it trains to its end: the
// second is refused up front naming the first one's pid and writes nothing, `ips serve` keeps
// serving the root meanwhile, and the root the first run leaves serves its last version.
TEST(ServeCli, TwoStreamsIntoOneRoot_TheSecondIsRefusedUpFront_TheRootServes) {
  char tmpl[] = "/tmp/ips_serve_cli_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string events = dir + "/ev.tsv", root = dir + "/root";
  auto synth = RunIps("data synth --output " + events +
                      " --truth none --events 20000 --users 500 --items 2000 --categories 16 "
                      "--seed 3");
  ASSERT_EQ(synth.exit_code, 0) << synth.output;
  const std::string stream = "train --quiet --config " +
                             std::string(std::getenv("IPS_SOURCE_DIR")) +
                             "/launch/configs/din_stream.pbtxt --stream " + events +
                             " --stream_publish_every_steps 10 --stream_publish_full_every 1000 "
                             "--stream_publish_keep_versions 1000 --stream_publish_dir " +
                             root;
  // The first run tails the file and ends 4 s after its end: the second starts while it runs.
  // (RunIps, not RunIpsSplit: two runs at once must not share RunIpsSplit's output files.)
  ::ips::testing::IpsRun first;
  std::thread first_run([&] { first = RunIps(stream + " --stream_idle_timeout_s 4"); });
  for (int i = 0; i < 6000 && !ps::PathExists(root + "/CURRENT"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(ps::PathExists(root + "/CURRENT"));
  auto second = RunIps(stream + " --stream_no_follow");
  const std::string request = dir + "/request.jsonl";
  std::ofstream(request) << R"({"history":[1,2,3],"candidates":[4,5]})"
                         << "\n";
  auto serving = RunIps("serve --bundle " + root + " < " + request);
  first_run.join();
  EXPECT_EQ(second.exit_code, 1) << second.output;
  EXPECT_EQ(LastLine(second.output)
                .rfind("RESULT train_stream status=error exit=1 error=\"FAILED_PRECONDITION: "
                       "--stream_publish_dir ",
                       0),
            0u)
      << second.output;
  EXPECT_NE(second.output.find("error: FAILED_PRECONDITION: --stream_publish_dir " + root +
                               " is in use by another run (pid "),
            std::string::npos)
      << second.output;
  EXPECT_EQ(second.output.find("streamed "), std::string::npos) << "trained: " << second.output;
  EXPECT_EQ(serving.exit_code, 0) << serving.output;
  EXPECT_NE(serving.output.find("RESULT serve requests=1 errors=0 "), std::string::npos)
      << serving.output;
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const size_t at = first.output.find(" publishes=");
  ASSERT_NE(at, std::string::npos) << first.output;
  const int64_t publishes = std::atoll(first.output.c_str() + at + 11);
  auto after = RunIpsSplit("serve --bundle " + root + " < " + request);
  EXPECT_EQ(after.exit_code, 0) << after.output << after.error;
  EXPECT_NE(after.output.find("\"version\":" + std::to_string(publishes) + ","), std::string::npos)
      << after.output << after.error;
  EXPECT_NE(after.output.find("RESULT serve requests=1 errors=0 "), std::string::npos)
      << after.output;
  ps::RemoveTree(dir);
}

// `ips export --output` and `--stream_publish_dir` wrote v-<n> and CURRENT into a training
// checkpoint's directory or a converted dataset's (then `ips serve` failed or served the wrong
// thing): refused naming what the directory is, leaving it as it was.
TEST(ServeCli, ExportOrStreamIntoACheckpointOrADataset_RefusedNamingIt) {
  char tmpl[] = "/tmp/ips_serve_cli_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  auto state = MakeServingState(kConfig, 8, {6, 6}, ps::TableOptions(), 0, 0);
  ASSERT_TRUE(state.ok()) << state.status();
  CheckpointOptions co;
  co.dir = dir + "/ckpt";
  ASSERT_TRUE(std::move(CheckpointWriter::Create(co)).value()->Write(7, (*state)->content).ok());
  auto synthed = RunIps("data synth --output " + dir +
                        "/events.tsv --truth none --events 300 --users 20 --items 40 "
                        "--categories 16 --domain1_fraction 0");
  ASSERT_EQ(synthed.exit_code, 0) << synthed.output;
  auto conv =
      RunIps("data convert --format events --input " + dir + "/events.tsv --output " + dir + "/ds");
  ASSERT_EQ(conv.exit_code, 0) << conv.output;
  const auto listing = [](const std::string& d) {
    auto names = ps::ListDir(d);
    if (!names.ok()) return names.status().ToString();
    std::sort(names->begin(), names->end());
    std::string all;
    for (const auto& n : *names) all += n + ",";
    return all;
  };
  const std::string ckpt_before = listing(co.dir), ds_before = listing(dir + "/ds");
  const std::string remedy = ": refusing to write a serving bundle there";
  auto into_ckpt = RunIpsSplit("export --checkpoint " + co.dir + " --output " + co.dir);
  EXPECT_EQ(into_ckpt.exit_code, 1) << into_ckpt.output << into_ckpt.error;
  EXPECT_NE(into_ckpt.error.find("error: --output " + co.dir +
                                 ": is a training checkpoint root (it holds "),
            std::string::npos)
      << into_ckpt.error;
  EXPECT_NE(into_ckpt.error.find(remedy), std::string::npos) << into_ckpt.error;
  auto into_ds = RunIpsSplit("export --checkpoint " + co.dir + " --output " + dir + "/ds");
  EXPECT_EQ(into_ds.exit_code, 1) << into_ds.output << into_ds.error;
  EXPECT_NE(into_ds.error.find("error: --output " + dir + "/ds: is a converted dataset (" + dir +
                               "/ds/MANIFEST is a dataset manifest)" + remedy),
            std::string::npos)
      << into_ds.error;
  auto stream = RunIpsSplit("train --quiet --config " + std::string(std::getenv("IPS_SOURCE_DIR")) +
                            "/launch/configs/din_stream.pbtxt --stream " + dir +
                            "/events.tsv --stream_no_follow --stream_publish_dir " + dir + "/ds");
  EXPECT_EQ(stream.exit_code, 1) << stream.output << stream.error;
  EXPECT_NE(stream.error.find("--stream_publish_dir " + dir + "/ds: is a converted dataset"),
            std::string::npos)
      << stream.error;
  EXPECT_EQ(listing(co.dir), ckpt_before);
  EXPECT_EQ(listing(dir + "/ds"), ds_before);
  EXPECT_EQ(RunIps("data inspect " + dir + "/ds").exit_code, 0);
  ps::RemoveTree(dir);
}

// `ips train --stream --stream_negatives 0` trained on positives alone and ended with
// auc_window=nan, exit 0: a usage error (exit 2) naming the valid range. A sequence model names
// the command and the models it runs.
TEST(ServeCli, StreamNegativesZeroIsAUsageError_SequenceModelNamesTheSupportedModels) {
  char tmpl[] = "/tmp/ips_serve_cli_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  std::ofstream(dir + "/ev.tsv") << "1\t2\t1\t1700000000\tclick\n";
  const std::string configs = std::string(std::getenv("IPS_SOURCE_DIR")) + "/launch/configs/";
  auto zero = RunIpsSplit("train --quiet --config " + configs + "din_stream.pbtxt --stream " + dir +
                          "/ev.tsv --stream_no_follow --stream_negatives 0");
  EXPECT_EQ(zero.exit_code, 2) << zero.output << zero.error;
  EXPECT_EQ(
      zero.output.rfind(
          "RESULT train_stream status=error exit=2 error=\"--stream_negatives 0: expected 1..1000",
          0),
      0u)
      << zero.output;
  EXPECT_NE(zero.error.find("--stream_negatives 0: expected 1..1000"), std::string::npos)
      << zero.error;
  auto seq = RunIpsSplit("train --quiet --config " + configs + "sasrec_synthetic.pbtxt --stream " +
                         dir + "/ev.tsv --stream_no_follow");
  EXPECT_EQ(seq.exit_code, 1) << seq.output << seq.error;
  EXPECT_NE(seq.error.find("`ips train --stream`: model.type SASREC is a sequence model; `ips "
                           "train --stream` supports model.type DIN, DIEN, POOLED, MIND or BST"),
            std::string::npos)
      << seq.error;
  ps::RemoveTree(dir);
}

// `ips serve --bundle ROOT --poll_ms 50` as a supervisor runs it: stdin a pipe this test writes
// and keeps open (the server waits for the next request), stdout a pipe this test reads, stderr a
// file.
class ServeProcess {
 public:
  ServeProcess(const std::string& root, const std::string& err_path) : err_path_(err_path) {
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      const int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (e < 0 || dup2(in[0], STDIN_FILENO) < 0 || dup2(out[1], STDOUT_FILENO) < 0 ||
          dup2(e, STDERR_FILENO) < 0)
        _exit(126);
      close(in[1]);
      close(out[0]);
      execl(IPS_BINARY, IPS_BINARY, "serve", "--bundle", root.c_str(), "--poll_ms", "50",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    in_ = in[1];
    out_ = out[0];
  }
  ~ServeProcess() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status_, 0);
    }
    if (in_ >= 0) close(in_);
    if (out_ >= 0) close(out_);
  }
  bool started() const { return pid_ > 0 && in_ >= 0 && out_ >= 0; }
  pid_t pid() const { return pid_; }

  void Send(const std::string& line) {
    const std::string l = line + "\n";
    ASSERT_EQ(write(in_, l.data(), l.size()), static_cast<ssize_t>(l.size()));
  }
  // The next stdout line ("" after 20 s without one, or at the end).
  std::string ReadLine() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
      const size_t nl = pending_.find('\n');
      if (nl != std::string::npos) {
        std::string line = pending_.substr(0, nl);
        pending_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      pollfd p{out_, POLLIN, 0};
      if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) return "";
      char buf[4096];
      const ssize_t n = read(out_, buf, sizeof(buf));
      if (n <= 0) return "";
      pending_.append(buf, static_cast<size_t>(n));
    }
  }
  // Every stdout line until the end, after the process exited.
  std::string ReadRest() {
    std::string rest = pending_;
    char buf[4096];
    ssize_t n;
    while ((n = read(out_, buf, sizeof(buf))) > 0) rest.append(buf, static_cast<size_t>(n));
    pending_.clear();
    return rest;
  }
  // Sends `sig` and waits up to 20 s for the exit: the seconds it took (-1: killed after 20 s).
  double SignalAndWait(int sig) {
    const auto start = std::chrono::steady_clock::now();
    if (kill(pid_, sig) != 0) return -1;
    for (;;) {
      if (waitpid(pid_, &status_, WNOHANG) == pid_) {
        exited_ = true;
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
      if (std::chrono::steady_clock::now() - start > std::chrono::seconds(20)) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  int status() const { return status_; }
  std::string Stderr() const {
    std::ifstream f(err_path_);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  // CPU seconds (user + system) the process used so far (/proc/PID/stat; -1 if unreadable).
  double CpuSeconds() const {
    std::ifstream f("/proc/" + std::to_string(pid_) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t close_paren = stat.rfind(')');
    if (close_paren == std::string::npos) return -1;
    std::istringstream fields(stat.substr(close_paren + 2));
    std::string field;
    double ticks = 0;
    // Fields 3.. after the command name: utime and stime are fields 14 and 15.
    for (int i = 3; i <= 15 && fields >> field; ++i)
      if (i >= 14) ticks += std::stod(field);
    return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
  }

 private:
  std::string err_path_;
  pid_t pid_ = -1;
  int in_ = -1, out_ = -1;
  int status_ = -1;
  bool exited_ = false;
  std::string pending_;
};

// QA: `ips serve` killed by SIGTERM (a supervisor's stop) or SIGINT exited 143 / 130 with no
// RESULT line and no count of the requests it served. It stops gracefully now, also while it
// blocks waiting for a request: every request read is answered, `RESULT serve ...
// status=stopped` (the keys of its normal line, plus status) ends stdout, exit 0. The wait is
// poll(2) on stdin and the stop descriptor, no busy loop (an idle server uses no CPU), and the
// bundle root is still polled every --poll_ms (a new export is served while stdin is idle).
TEST(ServeCli, SigtermOrSigintWhileWaitingStopsGracefully_IdleUsesNoCpu_HotReloadStillWorks) {
  ExportedCheckpoint exported;
  ASSERT_NO_FATAL_FAILURE(ExportSmallCheckpoint(&exported));
  const std::string& dir = exported.dir;
  const std::string& root = exported.root;
  const std::string request = R"({"user":"a","history":[1,2,3],"candidates":[4,5]})";

  {
    ServeProcess serve(root, dir + "/serve.err");
    ASSERT_TRUE(serve.started());
    serve.Send(request);
    EXPECT_EQ(serve.ReadLine().rfind(R"({"user":"a","version":1,"scores":[)", 0), 0u)
        << serve.Stderr();
    // Idle, blocked on stdin: no CPU beyond the watcher's 20 checks of CURRENT a second (a busy
    // loop would use the whole second).
    const double cpu_before = serve.CpuSeconds();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const double idle_cpu = serve.CpuSeconds() - cpu_before;
    EXPECT_GE(cpu_before, 0);
    EXPECT_LT(idle_cpu, 0.15) << "CPU seconds used in 1 s of waiting for a request";
    // A second export becomes version 2, which the server loads while it waits for stdin.
    auto ex2 = RunIpsSplit("export --checkpoint " + exported.ckpt + " --output " + root);
    ASSERT_EQ(ex2.exit_code, 0) << ex2.output << ex2.error;
    int requests = 1;
    bool reloaded = false;
    for (int i = 0; i < 100 && !reloaded; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      serve.Send(request);
      ++requests;
      const std::string response = serve.ReadLine();
      ASSERT_EQ(response.rfind(R"({"user":"a","version":)", 0), 0u) << serve.Stderr();
      reloaded = response.rfind(R"({"user":"a","version":2,"scores":[)", 0) == 0;
    }
    EXPECT_TRUE(reloaded) << "version 2 not served within 10 s; stderr: " << serve.Stderr();
    const double seconds = serve.SignalAndWait(SIGTERM);
    ASSERT_GE(seconds, 0) << "still running 20 s after SIGTERM; stderr: " << serve.Stderr();
    EXPECT_LT(seconds, 5);
    ASSERT_TRUE(WIFEXITED(serve.status())) << "killed by signal " << WTERMSIG(serve.status());
    EXPECT_EQ(WEXITSTATUS(serve.status()), 0) << serve.Stderr();
    const std::string rest = serve.ReadRest();
    const std::string last = LastLine(rest);
    EXPECT_EQ(last.rfind("RESULT serve requests=" + std::to_string(requests) +
                             " errors=0 truncated_histories=0 reloads=1 first_version=1 "
                             "version=2 seconds=",
                         0),
              0u)
        << rest;
    EXPECT_NE(last.find(" status=stopped"), std::string::npos) << rest;
    EXPECT_EQ(last.substr(last.size() - std::strlen(" status=stopped")), " status=stopped");
    EXPECT_NE(serve.Stderr().find("serve: stopped by SIGTERM after " + std::to_string(requests) +
                                  " requests"),
              std::string::npos)
        << serve.Stderr();
  }
  {
    // SIGINT (a terminal's Ctrl-C) the same, before any request.
    ServeProcess serve(root, dir + "/serve2.err");
    ASSERT_TRUE(serve.started());
    // Waits until it serves (the line is printed once the bundle is loaded).
    for (int i = 0; i < 400 && serve.Stderr().find("serving ") == std::string::npos; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const double seconds = serve.SignalAndWait(SIGINT);
    ASSERT_GE(seconds, 0) << "still running 20 s after SIGINT; stderr: " << serve.Stderr();
    ASSERT_TRUE(WIFEXITED(serve.status())) << "killed by signal " << WTERMSIG(serve.status());
    EXPECT_EQ(WEXITSTATUS(serve.status()), 0) << serve.Stderr();
    const std::string last = LastLine(serve.ReadRest());
    EXPECT_EQ(last.rfind("RESULT serve requests=0 errors=0 ", 0), 0u) << last;
    EXPECT_NE(last.find(" status=stopped"), std::string::npos) << last;
    EXPECT_NE(serve.Stderr().find("stopped by SIGINT"), std::string::npos) << serve.Stderr();
  }
  // The end of stdin is the normal end: no status key.
  {
    std::ofstream(dir + "/one.jsonl") << request << "\n";
    auto sv = RunIpsSplit("serve --bundle " + root + " < " + dir + "/one.jsonl");
    ASSERT_EQ(sv.exit_code, 0) << sv.output << sv.error;
    EXPECT_EQ(LastLine(sv.output).rfind("RESULT serve requests=1 errors=0 ", 0), 0u) << sv.output;
    EXPECT_EQ(sv.output.find("status="), std::string::npos) << sv.output;
  }
  ps::RemoveTree(dir);
}

// QA: `ips serve > /dev/full` exited 0 with nothing on stderr: responses were cut mid-line and
// the RESULT line lost, as std::cout's state was never checked. A response that cannot be written
// now ends serving with an error naming stdout and the errno text, exit 1: a full disk, and a
// closed pipe when SIGPIPE is ignored (with it, the signal ends the process as for any tool).
// And the error RESULT line of a failed serve carries its error: with stdin a directory it said
// error="serving ... version 1" (std::cerr's lines after sync_with_stdio(false) were not read).
TEST(ServeCli, AFailedWriteToStdoutEndsServingWithAnError_ResultLineCarriesTheError) {
  ExportedCheckpoint exported;
  ASSERT_NO_FATAL_FAILURE(ExportSmallCheckpoint(&exported));
  const std::string& dir = exported.dir;
  const std::string& root = exported.root;
  // Far more response bytes than a pipe holds (64 KiB), so that the broken pipe is written to.
  const std::string requests = dir + "/requests.jsonl";
  {
    std::ofstream f(requests);
    for (int i = 0; i < 5000; ++i)
      f << R"({"user":"a","history":[1,2,3],"candidates":[4,5,6]})"
        << "\n";
  }
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  const std::string serve =
      std::string(IPS_BINARY) + " serve --bundle " + root + " < " + requests + " 2>" + dir + "/err";
  if (::access("/dev/full", W_OK) == 0) {
    const int status = std::system((serve + " >/dev/full").c_str());
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 1) << slurp(dir + "/err");
    EXPECT_NE(slurp(dir + "/err")
                  .find("error: writing to stdout (the response to stdin line 1): " +
                        std::string(std::strerror(ENOSPC)) +
                        "; serving stopped after 0 requests answered"),
              std::string::npos)
        << slurp(dir + "/err");
  }
  // A reader that goes away after one byte, SIGPIPE ignored (inherited: `trap '' PIPE`).
  const int status = std::system(
      ("(trap '' PIPE; " + serve + "; echo $? >" + dir + "/rc) | head -c 1 >/dev/null").c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(slurp(dir + "/rc"), "1\n") << slurp(dir + "/err");
  EXPECT_NE(slurp(dir + "/err").find("error: writing to stdout (the response to stdin line "),
            std::string::npos)
      << slurp(dir + "/err");
  EXPECT_NE(slurp(dir + "/err").find(std::string("): ") + std::strerror(EPIPE) + "; serving "),
            std::string::npos)
      << slurp(dir + "/err");

  // stdin a directory: the RESULT line's error is the read's.
  auto sv = RunIpsSplit("serve --bundle " + root + " < " + dir);
  EXPECT_EQ(sv.exit_code, 1) << sv.output << sv.error;
  EXPECT_NE(sv.error.find("error: reading stdin after line 0: read: " +
                          std::string(std::strerror(EISDIR))),
            std::string::npos)
      << sv.error;
  EXPECT_EQ(LastLine(sv.output),
            "RESULT serve status=error exit=1 error=\"reading stdin after "
            "line 0: read: " +
                std::string(std::strerror(EISDIR)) + "\"")
      << sv.output;
  ps::RemoveTree(dir);
}

}  // namespace
}  // namespace ips
