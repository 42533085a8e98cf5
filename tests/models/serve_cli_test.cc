// `ips export` and `ips serve` as a user runs them: a checkpoint written by the library is
// exported (RESULT export ...), requests piped to `ips serve` are answered one per line with the
// bad ones answered by errors naming the line (RESULT serve ... errors=N), and usage errors exit 2.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "proto/config_loader.h"
#include "ps/checkpoint_io.h"
#include "tests/testing/run_ips.h"
#include "worker/checkpoint.h"
#include "worker/model_factory.h"

namespace ips {
namespace {

using ::ips::testing::RunIps;
using ::ips::testing::RunIpsSplit;

constexpr char kConfig[] = R"(
version: 1
name: "serve_cli_test"
data { batch_size: 32 max_history: 5 }
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
  auto cfg = ParseConfigText(kConfig, "kConfig");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto model = std::move(CreateCtrModel(*cfg, 8)).value();
  std::vector<std::unique_ptr<ps::DynamicTable>> tables;
  CheckpointContent content;
  AddModelState(model.get(), nullptr, &content);
  for (const char* name : {"item", "category"}) {
    ps::TableOptions o;
    o.name = name;
    o.dim = 4;
    o.has_padding_key = true;
    tables.push_back(std::move(ps::DynamicTable::Create(o)).value());
    std::vector<uint64_t> keys = {1, 2, 3, 4, 5, 6};
    std::vector<float> rows(keys.size() * 4);
    ASSERT_TRUE(tables.back()->Pull(keys.data(), 6, rows.data()).ok());
    content.tables.push_back(tables.back().get());
  }
  content.config_text = kConfig;
  CheckpointOptions co;
  co.dir = dir + "/ckpt";
  ASSERT_TRUE(std::move(CheckpointWriter::Create(co)).value()->Write(7, content).ok());

  auto ex = RunIpsSplit("export --checkpoint " + co.dir + " --output " + dir + "/bundle --fp16");
  ASSERT_EQ(ex.exit_code, 0) << ex.output << ex.error;
  EXPECT_EQ(LastLine(ex.output).rfind("RESULT export ", 0), 0u) << ex.output;
  EXPECT_NE(ex.output.find("version=1"), std::string::npos) << ex.output;
  EXPECT_NE(ex.output.find("rows=12"), std::string::npos) << ex.output;

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

  // Usage and input errors.
  EXPECT_EQ(RunIps("serve").exit_code, 2);
  EXPECT_EQ(RunIps("export --checkpoint " + co.dir).exit_code, 2);
  EXPECT_EQ(RunIps("serve --bundle " + dir + "/nothing_here").exit_code, 1);
  auto missing = RunIps("export --checkpoint " + dir + "/none --output " + dir + "/b2");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find(dir + "/none"), std::string::npos) << missing.output;
  ps::RemoveTree(dir);
}

}  // namespace
}  // namespace ips
