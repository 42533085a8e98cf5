#include "worker/serving.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iterator>
#include <queue>
#include <set>
#include <unordered_set>
#include <utility>

#include "common/random.h"
#include "models/din.h"
#include "models/mind.h"
#include "proto/checkpoint.pb.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/checkpoint_io.h"
#include "ps/table_checkpoint.h"
#include "worker/checkpoint.h"
#include "worker/data_reader.h"
#include "worker/manifest_magic.h"
#include "worker/metrics_line.h"
#include "worker/model_factory.h"
#include "worker/synthetic_batches.h"

namespace ips {
namespace {

constexpr int kBundleVersion = 1;
constexpr const char* kManifestMagic = kBundleManifestMagic;
constexpr char kRowsMagic[8] = {'I', 'P', 'S', 'R', 'O', 'W', '0', '1'};
constexpr char kCurrent[] = "CURRENT";

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// IEEE 754 binary16 <-> binary32, round to nearest even (F16C semantics).
uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u)
    return static_cast<uint16_t>(sign | (absx > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (absx < 0x38800000u) {
    // Half subnormals are multiples of 2^-24: scaling by 2^24 is exact in float, and nearbyint
    // rounds to nearest even (the default rounding mode).
    float a;
    std::memcpy(&a, &absx, 4);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.0f)));
  }
  uint32_t h = ((absx - 0x38000000u) >> 13);
  const uint32_t rem = absx & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1f;
  const uint32_t m = h & 0x3ffu;
  uint32_t x;
  if (e == 0) {
    if (m == 0) {
      x = sign;
    } else {  // subnormal: m * 2^-24
      const float f = static_cast<float>(m) * 5.9604644775390625e-8f;
      std::memcpy(&x, &f, 4);
      x |= sign;
    }
  } else if (e == 31) {
    x = sign | 0x7f800000u | (m << 13);
  } else {
    x = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

std::string VersionName(int64_t v) { return "v-" + std::to_string(v); }

int64_t VersionOfName(const std::string& n) {
  if (n.rfind("v-", 0) != 0 || n.size() == 2 || n.size() > 20) return -1;
  int64_t v = 0;
  for (size_t i = 2; i < n.size(); ++i) {
    if (n[i] < '0' || n[i] > '9') return -1;
    v = v * 10 + (n[i] - '0');
  }
  return v;
}

Status WriteBundleManifest(const std::string& path, const ckpt::BundleManifest& m) {
  std::string bytes;
  if (!m.SerializeToString(&bytes)) return InternalError(path + ": cannot serialize");
  IPS_ASSIGN_OR_RETURN(auto w, ps::CrcFileWriter::Create(path));
  IPS_RETURN_IF_ERROR(w->Write(kManifestMagic, 8));
  IPS_RETURN_IF_ERROR(w->WriteString(bytes));
  return w->Finish();
}

StatusOr<ckpt::BundleManifest> ReadBundleManifest(const std::string& dir) {
  const std::string path = dir + "/MANIFEST";
  if (!ps::PathExists(path)) return NotFoundError(path + ": missing");
  IPS_ASSIGN_OR_RETURN(auto r, ps::CrcFileReader::Open(path));
  char magic[8];
  IPS_RETURN_IF_ERROR(r->Read(magic, 8, "magic"));
  if (std::memcmp(magic, kManifestMagic, 8) != 0)
    return DataLossError(path + ": not a bundle manifest");
  std::string bytes;
  IPS_RETURN_IF_ERROR(r->ReadString(&bytes, size_t{1} << 30, "manifest"));
  IPS_RETURN_IF_ERROR(r->FinishAndVerify());
  ckpt::BundleManifest m;
  if (!m.ParseFromString(bytes)) return DataLossError(path + ": unparsable manifest");
  if (m.bundle_version() < 1 || m.bundle_version() > kBundleVersion)
    return InvalidArgumentError(path + ": bundle version " + std::to_string(m.bundle_version()));
  if (m.delta_of() < 0 || m.delta_of() >= m.model_version())
    return DataLossError(path + ": delta_of " + std::to_string(m.delta_of()) +
                         " is not an older version than " + std::to_string(m.model_version()));
  return m;
}

// Loads the model's dense tensors from `tensors` ("dense/<entry>", "model_state/<name>").
Status LoadModelTensors(const std::map<std::string, std::vector<float>>& tensors,
                        const std::string& where, models::CtrModel<float>* model) {
  auto& params = model->params();
  for (const auto& e : params.entries()) {
    auto it = tensors.find("dense/" + e.name);
    if (it == tensors.end())
      return InvalidArgumentError(where + ": no tensor 'dense/" + e.name + "' for the model");
    if (static_cast<int64_t>(it->second.size()) != e.size)
      return InvalidArgumentError(where + ": tensor 'dense/" + e.name + "' has " +
                                  std::to_string(it->second.size()) + " values, the model " +
                                  std::to_string(e.size));
    std::copy(it->second.begin(), it->second.end(), params.value(e.offset));
  }
  for (const auto& s : model->state()) {
    auto it = tensors.find("model_state/" + s.name);
    if (it == tensors.end())
      return InvalidArgumentError(where + ": no tensor 'model_state/" + s.name + "' for the model");
    if (static_cast<int64_t>(it->second.size()) != s.size)
      return InvalidArgumentError(where + ": tensor 'model_state/" + s.name +
                                  "' has the wrong size");
    std::copy(it->second.begin(), it->second.end(), s.data);
  }
  return Status::Ok();
}

}  // namespace

// ---- Export -----------------------------------------------------------------------------------

StatusOr<int64_t> CurrentBundleVersion(const std::string& root) {
  IPS_ASSIGN_OR_RETURN(std::string name, ps::ReadSmallFile(root + "/" + kCurrent));
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  const int64_t v = VersionOfName(name);
  if (v < 0) return DataLossError(root + "/" + kCurrent + ": names '" + name + "', not v-<n>");
  return v;
}

namespace {

constexpr char kItemCatsMagic[8] = {'I', 'P', 'S', 'I', 'C', 'A', 'T', '1'};
constexpr char kItemCatsFile[] = "item_cats.bin";
constexpr uint64_t kMaxItemCats = uint64_t{1} << 31;

// The item -> category map of a config's training data: the dataset directory `dataset` (or the
// config's data.train_dir), or the synthetic catalogue's pure function. nullptr when the config
// names none that opens (the bundle then records no map). The map is indexed by the dataset's
// item ids, which `ips data convert` numbers per dataset: a dataset that opens must have the
// vocabulary the checkpoint at `checkpoint` (whose dense blobs are `blobs`) records, if it records
// one, else INVALID_ARGUMENT naming both (as `ips eval` refuses it), whether it was named by
// --dataset or is the config's data.train_dir converted again since.
using ItemCats = std::shared_ptr<const std::vector<uint32_t>>;

Status CheckExportVocabulary(const std::string& checkpoint,
                             const std::map<std::string, std::string>& blobs,
                             const std::string& dir, bool named, const Dataset& ds) {
  const DatasetVocabulary data = VocabularyOf(dir, ds.manifest());
  IPS_ASSIGN_OR_RETURN(const std::optional<DatasetVocabulary> recorded,
                       RecordedOtherVocabulary(checkpoint, blobs, data));
  if (!recorded.has_value()) return Status::Ok();
  return InvalidArgumentError(
      "export: the checkpoint at " + checkpoint + " was trained on " + recorded->Describe() +
      ", but " + (named ? data.Describe("--dataset") : "its config's " + data.Describe()) +
      " has another vocabulary: item, user and category ids are numbered per dataset, so the "
      "bundle's item -> category map would give the checkpoint's items the categories of other "
      "items. " +
      (named ? std::string("Pass --dataset the dataset the checkpoint was trained on")
             : std::string("That directory no longer holds the dataset the checkpoint was "
                           "trained on: pass --dataset that dataset")) +
      " (one converted again from the same input with the same filters, e.g. with other "
      "--eval_negatives, has the same vocabulary)");
}

StatusOr<ItemCats> ItemCatsForConfig(const config::Config& cfg, const std::string& dataset,
                                     const std::string& checkpoint,
                                     const std::map<std::string, std::string>& blobs) {
  std::string dir = dataset;
  if (dir.empty() && cfg.data().has_synthetic()) {
    const uint64_t n = cfg.data().synthetic().num_items();
    const uint32_t c = cfg.data().synthetic().num_categories();
    if (n == 0 || c == 0 || n >= kMaxItemCats) return ItemCats();
    auto m = std::make_shared<std::vector<uint32_t>>(n + 1);
    for (uint64_t i = 0; i <= n; ++i) (*m)[i] = SyntheticCategory(i, c);
    return ItemCats(std::move(m));
  }
  if (dir.empty()) {
    dir = cfg.data().train_dir();
    if (dir.empty() || !ps::PathExists(dir)) return ItemCats();  // a checkpoint from elsewhere
  }
  auto ds = Dataset::Open(dir);
  if (!ds.ok()) {
    if (!dataset.empty()) return ds.status();  // named explicitly: its error is the user's
    return ItemCats();
  }
  IPS_RETURN_IF_ERROR(CheckExportVocabulary(checkpoint, blobs, dir, !dataset.empty(), **ds));
  const auto view = (*ds)->item_cat();
  auto m = std::make_shared<std::vector<uint32_t>>(view.data, view.data + view.size);
  return ItemCats(std::move(m));
}

Status ReadItemCats(const std::string& path, std::shared_ptr<const std::vector<uint32_t>>* out) {
  IPS_ASSIGN_OR_RETURN(auto r, ps::CrcFileReader::Open(path));
  char magic[8];
  IPS_RETURN_IF_ERROR(r->Read(magic, 8, "magic"));
  if (std::memcmp(magic, kItemCatsMagic, 8) != 0)
    return DataLossError(path + ": not an item -> category map");
  int64_t n = 0;
  IPS_RETURN_IF_ERROR(r->ReadPod(&n, "item count"));
  if (n < 0 || n > (r->file_size() - r->offset()) / 4)
    return DataLossError(path + ": bad item count " + std::to_string(n));
  auto m = std::make_shared<std::vector<uint32_t>>(static_cast<size_t>(n));
  IPS_RETURN_IF_ERROR(r->Read(m->data(), m->size() * 4, "categories"));
  IPS_RETURN_IF_ERROR(r->FinishAndVerify());
  *out = std::move(m);
  return Status::Ok();
}

// Removes an export's staging directory (tmp-v-N) when it goes out of scope, unless Release()d
// once the directory has been renamed into place: every error return in between (an
// incompatible delta base, a full disk, ...) leaves nothing behind.
class StagingDirCleanup {
 public:
  explicit StagingDirCleanup(std::string dir) : dir_(std::move(dir)) {}
  StagingDirCleanup(const StagingDirCleanup&) = delete;
  StagingDirCleanup& operator=(const StagingDirCleanup&) = delete;
  ~StagingDirCleanup() {
    if (!dir_.empty() && ps::PathExists(dir_)) ps::RemoveTree(dir_);
  }
  void Release() { dir_.clear(); }

 private:
  std::string dir_;
};

}  // namespace

namespace {

// The model types a bundle holds: the CTR models (CreateCtrModel builds them;
// serving_test checks that every other type is a sequence model).
constexpr config::ModelConfig::Type kBundleModelTypes[] = {
    config::ModelConfig::DIN, config::ModelConfig::DIEN, config::ModelConfig::POOLED,
    config::ModelConfig::MIND, config::ModelConfig::BST};

std::string ModelTypeName(int type) {
  const std::string name =
      config::ModelConfig::Type_Name(static_cast<config::ModelConfig::Type>(type));
  return name.empty() ? "#" + std::to_string(type) : name;
}

// "a DIN model (model.embedding_dim 4)", or "a DIN model" when the config says no more.
std::string DescribeModel(const std::string& config_text, int type) {
  const std::string described = DescribeConfigModel(config_text);
  return described.empty() ? "a " + ModelTypeName(type) + " model" : described;
}

DirLockLabel BundleLockLabel(const std::string& what) {
  return {what,
          "one writer per bundle root: wait for it to end, or write into another bundle root"};
}

// The names a bundle writer writes into its root (and its staging directories).
bool IsBundleRootName(const std::string& root, const std::string& name) {
  if (name == kCurrent || name == std::string(kCurrent) + ".tmp" || name == "LOCK") return true;
  if (name.rfind("tmp-", 0) == 0) return VersionOfName(name.substr(4)) >= 0;
  return VersionOfName(name) >= 0 && ps::IsDirectory(root + "/" + name);
}

}  // namespace

Status CheckBundleModelType(const config::Config& config, const std::string& command,
                            const std::string& where) {
  for (const auto type : kBundleModelTypes)
    if (config.model().type() == type) return Status::Ok();
  std::string supported;
  for (size_t i = 0; i < std::size(kBundleModelTypes); ++i)
    supported += std::string(i == 0                                  ? ""
                             : i + 1 == std::size(kBundleModelTypes) ? " or "
                                                                     : ", ") +
                 ModelTypeName(kBundleModelTypes[i]);
  const std::string type = ModelTypeName(config.model().type());
  const bool sequence = config.model().type() == config::ModelConfig::SASREC ||
                        config.model().type() == config::ModelConfig::GRU4REC;
  return FailedPreconditionError(
      command + ": " + (where.empty() ? "" : where + ": ") + "model.type " + type + " is " +
      (sequence ? "a sequence model" : "not a model a serving bundle holds") + "; " + command +
      " supports model.type " + supported + " (the CTR models)");
}

Status CheckBundleRoot(const std::string& root, const std::string& what) {
  const std::string remedy =
      ": refusing to write a serving bundle there (a bundle root holds CURRENT, LOCK and its "
      "v-<n> version directories); choose a new or empty directory, or an existing bundle root";
  // Before anything else: /proc's or /sys's directories would pass the checks below for root,
  // and a new directory on a cgroup or configfs mount is a kernel object.
  IPS_RETURN_IF_ERROR(ps::CheckNotOnPseudoFileSystem(root, what, "serving bundle files"));
  auto inspected = InspectDirectory(root);
  if (!inspected.ok()) return inspected.status().WithContext(what);
  const DirectoryContents& c = *inspected;
  const std::string at = what + " " + root + ": ";
  switch (c.kind) {
    case DirectoryContents::kMissing: {
      // Created by the writer, with its missing parents: not inside another writer's directory,
      // whose own writer would take it for one of its entries (a checkpoint root's retention
      // removes a "ckpt-3" it did not write, a bundle root's a "v-3") or whose files it mixes with.
      const std::string at_dir = ps::NearestExistingAncestor(root);
      if (at_dir.empty()) return Status::Ok();  // in the working directory
      auto parent = InspectDirectory(at_dir);
      if (!parent.ok()) return Status::Ok();  // MakeDirs names what fails
      std::string is = parent->DescribeManifest();
      if (parent->kind == DirectoryContents::kNoManifest &&
          parent->root_kind != DirectoryContents::kNoRoot &&
          parent->root_kind != DirectoryContents::kLockOnly)
        is = "is " + parent->root;
      if (is.empty()) return Status::Ok();
      return FailedPreconditionError(at + "would be created inside " + at_dir + ", which " + is +
                                     ": its writer may remove or overwrite what is written there; "
                                     "choose a bundle root outside it");
    }
    case DirectoryContents::kNotDirectory:
      return FailedPreconditionError(at + "exists and is not a directory" + remedy);
    case DirectoryContents::kBundleVersion:
      return FailedPreconditionError(at + c.DescribeManifest() +
                                     ": pass its bundle root (the directory holding CURRENT and "
                                     "the v-<n> versions), not one version");
    case DirectoryContents::kDataset:
    case DirectoryContents::kCheckpoint:
    case DirectoryContents::kOtherManifest:
      return FailedPreconditionError(at + c.DescribeManifest() + remedy);
    case DirectoryContents::kNoManifest:
      break;
  }
  std::vector<std::string> foreign;
  for (const std::string& n : c.names)
    if (!IsBundleRootName(root, n)) foreign.push_back(n);
  // A bundle root may hold the user's own files beside its versions (they are never touched).
  if (foreign.empty() || c.root_kind == DirectoryContents::kBundleRoot) return Status::Ok();
  return FailedPreconditionError(
      at + "is " +
      (c.root.empty() ? "a non-empty directory that is not a serving bundle root (it holds " +
                            QuoteNames(foreign) + ")"
                      : c.root) +
      remedy);
}

StatusOr<ExportResult> ExportBundle(const ExportOptions& options) {
  if (options.min_count < 0) return InvalidArgumentError("export: --min_count < 0");
  // The output first: a mistyped --output is refused before a large checkpoint is read.
  IPS_RETURN_IF_ERROR(CheckBundleRoot(options.output, "--output"));
  // Everything read from the checkpoint, before anything is written: a root's checkpoint removed
  // meanwhile by the retention of a run still writing to the root is read again from the root's
  // newest (OpenAndReadCheckpoint).
  BundleSource src;
  std::vector<std::unique_ptr<ps::DynamicTable>> tables;
  std::map<std::string, std::vector<float>> tensors;
  auto read = [&](const CheckpointReader& reader) -> Status {
    src = BundleSource();
    tables.clear();
    tensors.clear();
    IPS_ASSIGN_OR_RETURN(const config::Config cfg,
                         ParseConfigText(reader.config_text(), reader.dir() + "/MANIFEST config"));
    IPS_RETURN_IF_ERROR(
        CheckBundleModelType(cfg, "`ips export`", "the checkpoint at " + reader.dir()));
    src.config_text = reader.config_text();
    src.step = reader.step();
    src.origin = reader.dir();
    std::map<std::string, std::string> blobs;  // the dataset's vocabulary, when recorded
    IPS_RETURN_IF_ERROR(reader.ReadDense(&tensors, &blobs));
    IPS_ASSIGN_OR_RETURN(src.item_cats,
                         ItemCatsForConfig(cfg, options.dataset, reader.dir(), blobs));
    for (auto& [name, v] : tensors)
      src.tensors.push_back({name, v.data(), static_cast<int64_t>(v.size())});
    for (const auto& table : reader.table_names()) {
      const auto groups = reader.TableFiles(table);
      // The files are gone when the checkpoint was removed since Open: say so (ExplainReadError).
      auto h = ps::VerifyTableFile(groups[0][0]);
      if (!h.ok()) return reader.ExplainReadError(h.status());
      ps::TableOptions to;
      to.name = table;
      to.dim = h->dim;
      to.optimizer.type = static_cast<ps::OptimizerOptions::Type>(h->optimizer_type);
      IPS_ASSIGN_OR_RETURN(auto t, ps::DynamicTable::Create(to));
      IPS_RETURN_IF_ERROR(
          reader.ExplainReadError(ps::LoadTableChain(groups, t.get(), nullptr, nullptr)));
      src.tables.push_back(t.get());
      tables.push_back(std::move(t));
    }
    return Status::Ok();
  };
  IPS_RETURN_IF_ERROR(OpenAndReadCheckpoint(options.checkpoint, read).status());
  auto r = PublishBundle(src, options);
  if (!r.ok()) return r.status();
  r->bundle = nullptr;  // the CLI does not need the in-memory copy
  return r;
}

StatusOr<std::unique_ptr<BundleWriter>> BundleWriter::Open(const std::string& root,
                                                           const std::string& what) {
  if (root.empty()) return InvalidArgumentError(what + ": empty bundle root");
  IPS_RETURN_IF_ERROR(CheckBundleRoot(root, what));
  IPS_RETURN_IF_ERROR(ps::MakeDirs(root));
  IPS_ASSIGN_OR_RETURN(std::unique_ptr<DirLock> lock,
                       DirLock::Acquire(root, BundleLockLabel(what)));
  return std::unique_ptr<BundleWriter>(new BundleWriter(root, what, std::move(lock)));
}

Status BundleWriter::CheckModelType(const std::string& config_text) const {
  auto current = CurrentBundleVersion(root_);
  if (!current.ok()) return Status::Ok();  // no version yet (or a CURRENT the next one replaces)
  auto m = ReadBundleManifest(root_ + "/" + VersionName(*current));
  if (!m.ok()) return Status::Ok();
  auto had = ParseConfigText(m->config_text(), "bundle config");
  auto has = ParseConfigText(config_text, "config");
  if (!had.ok() || !has.ok() || had->model().type() == has->model().type()) return Status::Ok();
  return FailedPreconditionError(
      what_ + " " + root_ + ": its current version " + VersionName(*current) + " holds " +
      DescribeModel(m->config_text(), had->model().type()) + ", the new version would hold " +
      DescribeModel(config_text, has->model().type()) + " (model.type " +
      ModelTypeName(had->model().type()) + " -> " + ModelTypeName(has->model().type()) +
      "): a server following " + root_ +
      " would switch model type between two requests; write it into a new bundle root");
}

StatusOr<ExportResult> PublishBundle(const BundleSource& source, const ExportOptions& options,
                                     std::shared_ptr<const Bundle> base) {
  // The source's checks first: a refused source creates nothing (not even the root).
  IPS_ASSIGN_OR_RETURN(std::shared_ptr<Bundle> out, BundleWriter::Prepare(source, options));
  IPS_ASSIGN_OR_RETURN(std::unique_ptr<BundleWriter> writer, BundleWriter::Open(options.output));
  return writer->Write(std::move(out), source, options, std::move(base));
}

StatusOr<ExportResult> BundleWriter::Publish(const BundleSource& source,
                                             const ExportOptions& options,
                                             std::shared_ptr<const Bundle> base) {
  IPS_ASSIGN_OR_RETURN(std::shared_ptr<Bundle> out, Prepare(source, options));
  return Write(std::move(out), source, options, std::move(base));
}

StatusOr<std::shared_ptr<Bundle>> BundleWriter::Prepare(const BundleSource& source,
                                                        const ExportOptions& options) {
  if (options.min_count < 0) return InvalidArgumentError("export: --min_count < 0");
  IPS_ASSIGN_OR_RETURN(const config::Config cfg,
                       ParseConfigText(source.config_text, source.origin + " config"));
  IPS_RETURN_IF_ERROR(CheckBundleModelType(cfg, "a serving bundle", source.origin));
  // The model must build from the config and take the dense tensors.
  // max_batch 2: the smallest any model accepts (Dice needs 2 rows).
  IPS_ASSIGN_OR_RETURN(auto model, CreateCtrModel(cfg, 2));
  std::shared_ptr<Bundle> out(new Bundle());
  for (const auto& t : source.tensors) {
    // Serving needs the weights and the non-trained state, not the optimizer's moments.
    if (t.name.rfind("dense/", 0) == 0 || t.name.rfind("model_state/", 0) == 0)
      out->tensors_[t.name].assign(t.data, t.data + t.size);
  }
  IPS_RETURN_IF_ERROR(LoadModelTensors(out->tensors_, source.origin, model.get()));
  if (source.item_cats != nullptr && source.item_cats->size() > kMaxItemCats)
    return InvalidArgumentError("export: item -> category map of " +
                                std::to_string(source.item_cats->size()) + " items is too large");
  // A min_count above every row's count leaves a table without rows: every key then reads as
  // zeros and every candidate scores alike. Refused, naming what would have been kept.
  if (options.min_count > 0) {
    for (const ps::DynamicTable* t : source.tables) {
      int64_t rows = 0, kept = 0;
      uint32_t most = 0;
      t->ForEachRowSince(0, [&](const ps::RowRecord& r) {
        ++rows;
        most = std::max(most, r.freq);
        if (static_cast<int64_t>(r.freq) >= options.min_count) ++kept;
      });
      if (rows > 0 && kept == 0)
        return InvalidArgumentError(
            "export: --min_count " + std::to_string(options.min_count) + " keeps none of the " +
            std::to_string(rows) + " rows of table '" + t->options().name +
            "' (its most used row was used " + std::to_string(most) +
            " times): the bundle would score every candidate with all-zero rows of that table; "
            "use --min_count " +
            std::to_string(most) + " or less");
    }
  }
  return out;
}

StatusOr<ExportResult> BundleWriter::Write(std::shared_ptr<Bundle> out, const BundleSource& source,
                                           const ExportOptions& options,
                                           std::shared_ptr<const Bundle> base) {
  if (!options.output.empty() && options.output != root_)
    return InvalidArgumentError("BundleWriter of " + root_ + " asked to write into " +
                                options.output);
  IPS_RETURN_IF_ERROR(CheckModelType(source.config_text));
  const std::string& root = root_;
  int64_t version = 1;
  {
    IPS_ASSIGN_OR_RETURN(const auto names, ps::ListDir(root));
    for (const auto& n : names) {
      version = std::max(version, VersionOfName(n) + 1);
      // A staging directory of a writer killed mid-publish (no other writer holds the lock).
      if (n.rfind("tmp-", 0) == 0 && VersionOfName(n.substr(4)) >= 0)
        ps::RemoveTree(root + "/" + n);
    }
  }
  const std::string tmp = root + "/tmp-" + VersionName(version);
  StagingDirCleanup cleanup(tmp);
  IPS_RETURN_IF_ERROR(ps::MakeDirs(tmp));
  ckpt::BundleManifest m;
  m.set_bundle_version(kBundleVersion);
  m.set_model_version(version);
  m.set_config_text(source.config_text);
  m.set_fp16(options.fp16);
  m.set_source_step(source.step);
  m.set_source_checkpoint(source.origin);
  m.set_min_count(options.min_count);
  m.set_unix_time_ms(NowMs());
  ExportResult result;
  result.version = version;
  result.step = source.step;
  // A delta holds the rows that differ from the current version (bit for bit, after the same
  // fp16 rounding) and the keys it no longer has.
  if (options.delta) {
    auto current = CurrentBundleVersion(root);
    if (base != nullptr && (!current.ok() || *current != base->version())) base = nullptr;
    if (base == nullptr && current.ok()) {
      IPS_ASSIGN_OR_RETURN(base, Bundle::Load(root));
    } else if (base == nullptr && current.status().code() != StatusCode::kNotFound) {
      return current.status();
    }
    if (base != nullptr) {
      if (base->fp16() != options.fp16)
        return InvalidArgumentError("export --delta: the current version " +
                                    std::to_string(base->version()) +
                                    " has fp16=" + (base->fp16() ? "true" : "false") +
                                    "; a delta must use the same precision");
      // Rows of another width cannot be diffed against the base's (and Bundle::Load refuses such
      // a delta): typically a checkpoint of another model exported into a model's bundle root.
      for (const ps::DynamicTable* t : source.tables) {
        const int64_t had = base->dim(t->options().name);
        if (had == 0 || had == t->options().dim) continue;
        const std::string was = DescribeConfigModel(base->config_text());
        const std::string is = DescribeConfigModel(source.config_text);
        return InvalidArgumentError(
            "export --delta: the current version " + std::to_string(base->version()) + " of " +
            root + " has table '" + t->options().name + "' of dim " + std::to_string(had) + ", " +
            source.origin + " has dim " + std::to_string(t->options().dim) +
            (was.empty() || is.empty()
                 ? std::string()
                 : " (the base was exported from " + was + ", this from " + is + ")") +
            ": a delta must keep the base's table widths; export without --delta for a full "
            "version");
      }
      m.set_delta_of(base->version());
      result.delta_of = base->version();
    } else {
      // Nothing to diff against: the full bundle is the first base (the caller says so).
      result.delta_skipped = "no_base";
    }
  } else {
    base = nullptr;
  }

  std::vector<TensorRef> refs;
  for (auto& [name, v] : out->tensors_)
    refs.push_back({name, v.data(), static_cast<int64_t>(v.size())});
  IPS_ASSIGN_OR_RETURN(const ps::FileDigest dense, WriteDenseFile(tmp + "/dense.bin", refs, {}));
  {
    auto* f = m.add_files();
    f->set_name("dense.bin");
    f->set_bytes(dense.bytes);
    f->set_crc32c(dense.crc32c);
    f->set_role(ckpt::FileEntry::DENSE);
    result.bytes += dense.bytes;
  }
  // The map: written in full bundles, and in a delta only when it changed.
  out->item_cats_ = source.item_cats;
  if (base != nullptr && source.item_cats == nullptr) out->item_cats_ = base->item_cats_;
  const bool write_cats =
      source.item_cats != nullptr &&
      (base == nullptr || base->item_cats_ == nullptr ||
       (base->item_cats_ != source.item_cats && *base->item_cats_ != *source.item_cats));
  if (write_cats) {
    const std::string file = kItemCatsFile;
    IPS_ASSIGN_OR_RETURN(auto w, ps::CrcFileWriter::Create(tmp + "/" + file));
    IPS_RETURN_IF_ERROR(w->Write(kItemCatsMagic, 8));
    IPS_RETURN_IF_ERROR(w->WritePod(static_cast<int64_t>(source.item_cats->size())));
    IPS_RETURN_IF_ERROR(w->Write(source.item_cats->data(), source.item_cats->size() * 4));
    IPS_RETURN_IF_ERROR(w->Finish());
    auto* f = m.add_files();
    f->set_name(file);
    f->set_bytes(w->file_bytes());
    f->set_crc32c(w->file_crc32c());
    f->set_role(ckpt::FileEntry::OTHER);
    result.bytes += w->file_bytes();
  }
  result.item_cats = out->item_cats_ != nullptr;
  for (const ps::DynamicTable* t : source.tables) {
    const std::string& table = t->options().name;
    const int64_t dim = t->options().dim;
    std::vector<uint64_t> keys;
    std::vector<float> values;
    t->ForEachRowSince(0, [&](const ps::RowRecord& r) {
      if (options.min_count > 0 && static_cast<int64_t>(r.freq) < options.min_count) {
        ++result.rows_dropped;
        return;
      }
      keys.push_back(r.key);
      values.insert(values.end(), r.value, r.value + dim);
    });
    if (options.fp16) {
      // Round once here, so the delta comparison and the file see the served values.
      for (auto& v : values) v = HalfToFloat(FloatToHalf(v));
    }
    std::vector<uint64_t> removed;
    std::vector<size_t> order;
    if (base != nullptr) {
      std::unordered_set<uint64_t> live(keys.begin(), keys.end());
      for (uint64_t k : base->keys(table))
        if (live.count(k) == 0) removed.push_back(k);
      std::sort(removed.begin(), removed.end());
      for (size_t i = 0; i < keys.size(); ++i) {
        const float* old = base->Row(table, keys[i]);
        if (old == nullptr || std::memcmp(old, values.data() + i * dim, dim * 4) != 0)
          order.push_back(i);
      }
    } else {
      order.resize(keys.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    }
    // Sorted keys: the file is deterministic for a given state.
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return keys[a] < keys[b]; });
    const std::string file = "rows-" + table + ".bin";
    IPS_ASSIGN_OR_RETURN(auto w, ps::CrcFileWriter::Create(tmp + "/" + file));
    IPS_RETURN_IF_ERROR(w->Write(kRowsMagic, 8));
    IPS_RETURN_IF_ERROR(w->WritePod(static_cast<uint32_t>(kBundleVersion)));
    IPS_RETURN_IF_ERROR(w->WriteString(table));
    IPS_RETURN_IF_ERROR(w->WritePod(dim));
    IPS_RETURN_IF_ERROR(w->WritePod(static_cast<uint32_t>(options.fp16 ? 1 : 0)));
    IPS_RETURN_IF_ERROR(w->WritePod(static_cast<int64_t>(order.size())));
    for (size_t i : order) IPS_RETURN_IF_ERROR(w->WritePod(keys[i]));
    std::vector<uint16_t> half(static_cast<size_t>(dim));
    for (size_t i : order) {
      const float* v = values.data() + i * static_cast<size_t>(dim);
      if (options.fp16) {
        for (int64_t j = 0; j < dim; ++j) half[j] = FloatToHalf(v[j]);
        IPS_RETURN_IF_ERROR(w->Write(half.data(), half.size() * 2));
      } else {
        IPS_RETURN_IF_ERROR(w->Write(v, static_cast<size_t>(dim) * 4));
      }
    }
    IPS_RETURN_IF_ERROR(w->WritePod(static_cast<int64_t>(removed.size())));
    IPS_RETURN_IF_ERROR(w->Write(removed.data(), removed.size() * 8));
    IPS_RETURN_IF_ERROR(w->Finish());
    auto* f = m.add_files();
    f->set_name(file);
    f->set_bytes(w->file_bytes());
    f->set_crc32c(w->file_crc32c());
    f->set_role(ckpt::FileEntry::ROWS);
    f->set_table(table);
    f->set_rows(static_cast<int64_t>(order.size()));
    result.rows += static_cast<int64_t>(order.size());
    result.rows_removed += static_cast<int64_t>(removed.size());
    result.bytes += w->file_bytes();
    // The published state in memory (every live row, as served).
    Bundle::Table& bt = out->tables_[table];
    bt.dim = dim;
    bt.index.reserve(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) bt.index.emplace(keys[i], static_cast<uint32_t>(i));
    bt.keys = std::move(keys);
    bt.values = std::move(values);
    bt.Freeze();
  }
  if (base != nullptr) {
    // Tables of the base that the source no longer has stay as they were (as Load reads them).
    for (const auto& [name, t] : base->tables_)
      if (out->tables_.count(name) == 0) out->tables_[name] = t;
  }
  IPS_RETURN_IF_ERROR(WriteBundleManifest(tmp + "/MANIFEST", m));
  IPS_RETURN_IF_ERROR(ps::FsyncDir(tmp));
  const std::string final_dir = root + "/" + VersionName(version);
  if (std::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    const int err = errno;
    return InternalError("rename " + tmp + " -> " + final_dir + " failed: " + std::strerror(err));
  }
  cleanup.Release();  // tmp is gone: the published version must never be removed here
  IPS_RETURN_IF_ERROR(ps::FsyncDir(root));
  IPS_RETURN_IF_ERROR(ps::WriteFileAtomically(root + "/" + kCurrent, VersionName(version) + "\n"));
  // Older versions beyond keep_versions go (a server holds its version in memory), except the
  // bases the kept deltas need.
  {
    IPS_ASSIGN_OR_RETURN(const auto names, ps::ListDir(root));
    std::set<int64_t> keep;
    for (int64_t v = version; v > version - std::max(1, options.keep_versions) && v > 0; --v) {
      for (int64_t cur = v; cur > 0 && keep.insert(cur).second;) {
        auto mv = ReadBundleManifest(root + "/" + VersionName(cur));
        cur = mv.ok() ? mv->delta_of() : 0;
      }
    }
    for (const auto& n : names) {
      const int64_t v = VersionOfName(n);
      if (v >= 0 && keep.count(v) == 0) ps::RemoveTree(root + "/" + n);
    }
  }
  out->dir_ = final_dir;
  out->version_ = version;
  out->source_step_ = source.step;
  out->fp16_ = options.fp16;
  out->config_text_ = source.config_text;
  result.path = final_dir;
  result.bundle = std::move(out);
  return result;
}

// ---- Bundle -----------------------------------------------------------------------------------

StatusOr<std::shared_ptr<const Bundle>> Bundle::Load(const std::string& path_in) {
  std::string path = path_in;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  std::string dir = path;
  if (!ps::PathExists(path + "/MANIFEST")) {
    if (!ps::IsDirectory(path)) return NotFoundError(path + ": no such bundle");
    if (!ps::PathExists(path + "/" + kCurrent)) {
      // "BUNDLE/CURRENT: cannot open" reads like a damaged bundle; this is a root nothing was
      // exported into yet (or a directory that is no bundle at all: a checkpoint's says so).
      if (ps::PathExists(path + "/LATEST"))
        return NotFoundError(path +
                             ": is a training checkpoint directory (it holds LATEST), not "
                             "a serving bundle: run `ips export --checkpoint " +
                             path + " --output BUNDLE` and serve BUNDLE");
      return NotFoundError(path + ": no bundle version yet (no " + kCurrent +
                           ", no MANIFEST): run `ips export --checkpoint CKPT --output " + path +
                           "` first, or pass a bundle root or one v-<n> directory of it");
    }
    IPS_ASSIGN_OR_RETURN(const int64_t v, CurrentBundleVersion(path));
    dir = path + "/" + VersionName(v);
  }
  IPS_ASSIGN_OR_RETURN(const ckpt::BundleManifest m, ReadBundleManifest(dir));
  for (const auto& f : m.files()) {
    if (f.name().empty() || f.name().find('/') != std::string::npos)
      return DataLossError(dir + "/MANIFEST: bad file name '" + f.name() + "'");
    IPS_RETURN_IF_ERROR(ps::VerifyFile(dir + "/" + f.name(), f.bytes(), f.crc32c()));
  }
  std::shared_ptr<Bundle> b(new Bundle());
  if (m.delta_of() != 0) {
    // A delta applies to its base version, a sibling directory (itself possibly a delta).
    const size_t slash = dir.find_last_of('/');
    const std::string root = slash == std::string::npos ? "." : dir.substr(0, slash);
    IPS_ASSIGN_OR_RETURN(auto base, Load(root + "/" + VersionName(m.delta_of())));
    b->tables_ = base->tables_;
    b->item_cats_ = base->item_cats_;
  }
  b->dir_ = dir;
  b->version_ = m.model_version();
  b->source_step_ = m.source_step();
  b->fp16_ = m.fp16();
  b->config_text_ = m.config_text();
  for (const auto& f : m.files()) {
    const std::string p = dir + "/" + f.name();
    if (f.role() == ckpt::FileEntry::DENSE) {
      IPS_RETURN_IF_ERROR(ReadDenseFile(p, &b->tensors_, nullptr));
      continue;
    }
    if (f.role() == ckpt::FileEntry::OTHER && f.name() == kItemCatsFile) {
      IPS_RETURN_IF_ERROR(ReadItemCats(p, &b->item_cats_));
      continue;
    }
    if (f.role() != ckpt::FileEntry::ROWS) continue;
    IPS_ASSIGN_OR_RETURN(auto r, ps::CrcFileReader::Open(p));
    char magic[8];
    IPS_RETURN_IF_ERROR(r->Read(magic, 8, "magic"));
    if (std::memcmp(magic, kRowsMagic, 8) != 0) return DataLossError(p + ": not a rows file");
    uint32_t version = 0, fp16 = 0;
    IPS_RETURN_IF_ERROR(r->ReadPod(&version, "version"));
    std::string name;
    IPS_RETURN_IF_ERROR(r->ReadString(&name, 4096, "table name"));
    Table t;
    Table& dst = b->tables_[name];  // the base's rows for a delta, empty otherwise
    IPS_RETURN_IF_ERROR(r->ReadPod(&t.dim, "dim"));
    if (dst.dim != 0 && dst.dim != t.dim)
      return DataLossError(p + ": dim " + std::to_string(t.dim) + " but the base version's is " +
                           std::to_string(dst.dim));
    IPS_RETURN_IF_ERROR(r->ReadPod(&fp16, "fp16"));
    int64_t n = 0;
    IPS_RETURN_IF_ERROR(r->ReadPod(&n, "row count"));
    if (t.dim < 1 || t.dim > 65536 || n < 0 || n > (r->file_size() - r->offset()) / 8)
      return DataLossError(p + ": bad dim " + std::to_string(t.dim) + " or row count " +
                           std::to_string(n));
    t.keys.resize(static_cast<size_t>(n));
    IPS_RETURN_IF_ERROR(r->Read(t.keys.data(), t.keys.size() * 8, "keys"));
    t.values.resize(static_cast<size_t>(n * t.dim));
    if (fp16 != 0) {
      std::vector<uint16_t> half(t.values.size());
      IPS_RETURN_IF_ERROR(r->Read(half.data(), half.size() * 2, "fp16 rows"));
      for (size_t i = 0; i < half.size(); ++i) t.values[i] = HalfToFloat(half[i]);
    } else {
      IPS_RETURN_IF_ERROR(r->Read(t.values.data(), t.values.size() * 4, "rows"));
    }
    int64_t num_removed = 0;
    IPS_RETURN_IF_ERROR(r->ReadPod(&num_removed, "removed count"));
    if (num_removed < 0 || num_removed > (r->file_size() - r->offset()) / 8)
      return DataLossError(p + ": removed count " + std::to_string(num_removed));
    std::vector<uint64_t> removed(static_cast<size_t>(num_removed));
    IPS_RETURN_IF_ERROR(r->Read(removed.data(), removed.size() * 8, "removed keys"));
    IPS_RETURN_IF_ERROR(r->FinishAndVerify());
    if (m.delta_of() == 0) {
      t.index.reserve(t.keys.size());
      for (size_t i = 0; i < t.keys.size(); ++i)
        t.index.emplace(t.keys[i], static_cast<uint32_t>(i));
      dst = std::move(t);
      continue;
    }
    // Delta: overwrite or append the rows, then drop the removed keys and compact.
    dst.Thaw();
    dst.dim = t.dim;
    for (size_t i = 0; i < t.keys.size(); ++i) {
      const float* v = t.values.data() + i * t.dim;
      auto it = dst.index.find(t.keys[i]);
      if (it != dst.index.end()) {
        std::copy(v, v + t.dim, dst.values.begin() + static_cast<size_t>(it->second) * t.dim);
      } else {
        dst.index.emplace(t.keys[i], static_cast<uint32_t>(dst.keys.size()));
        dst.keys.push_back(t.keys[i]);
        dst.values.insert(dst.values.end(), v, v + t.dim);
      }
    }
    if (!removed.empty()) {
      for (uint64_t k : removed) dst.index.erase(k);
      Table compact;
      compact.dim = dst.dim;
      compact.index.reserve(dst.index.size());
      for (size_t i = 0; i < dst.keys.size(); ++i) {
        if (dst.index.count(dst.keys[i]) == 0) continue;
        compact.index.emplace(dst.keys[i], static_cast<uint32_t>(compact.keys.size()));
        compact.keys.push_back(dst.keys[i]);
        compact.values.insert(compact.values.end(), dst.values.begin() + i * dst.dim,
                              dst.values.begin() + (i + 1) * dst.dim);
      }
      dst = std::move(compact);
    }
  }
  for (auto& [name, t] : b->tables_) t.Freeze();
  return std::shared_ptr<const Bundle>(std::move(b));
}

void Bundle::Table::Freeze() {
  size_t n = 16;
  while (n < 2 * keys.size()) n *= 2;
  slots.assign(n, Slot());
  mask = n - 1;
  for (size_t i = 0; i < keys.size(); ++i) {
    size_t s = Mix64(keys[i]) & mask;
    while (slots[s].row_plus1 != 0) s = (s + 1) & mask;
    slots[s].key = keys[i];
    slots[s].row_plus1 = static_cast<uint32_t>(i + 1);
  }
  std::unordered_map<uint64_t, uint32_t>().swap(index);
}

void Bundle::Table::Thaw() {
  if (index.size() == keys.size()) return;
  index.clear();
  index.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) index.emplace(keys[i], static_cast<uint32_t>(i));
}

const Bundle::Table::Slot* Bundle::Table::Probe(uint64_t key) const {
  if (slots.empty()) return nullptr;
  for (size_t s = Mix64(key) & mask;; s = (s + 1) & mask) {
    const Slot& e = slots[s];
    if (e.row_plus1 == 0) return nullptr;
    if (e.key == key) return &e;
  }
}

int64_t Bundle::dim(const std::string& table) const {
  auto it = tables_.find(table);
  return it == tables_.end() ? 0 : it->second.dim;
}

const float* Bundle::Row(const std::string& table, uint64_t key) const {
  auto it = tables_.find(table);
  return it == tables_.end() ? nullptr : it->second.Find(key);
}

void Bundle::Rows(const std::string& table, const uint64_t* keys, int64_t n,
                  const float** rows) const {
  auto it = tables_.find(table);
  if (it == tables_.end() || it->second.slots.empty()) {
    std::fill(rows, rows + n, nullptr);
    return;
  }
  const Table& t = it->second;
  for (int64_t i = 0; i < n; ++i) __builtin_prefetch(&t.slots[Mix64(keys[i]) & t.mask]);
  for (int64_t i = 0; i < n; ++i) {
    rows[i] = t.Find(keys[i]);
    if (rows[i] != nullptr) {  // a row can straddle two cache lines
      __builtin_prefetch(rows[i]);
      __builtin_prefetch(rows[i] + t.dim - 1);
    }
  }
}

int64_t Bundle::rows(const std::string& table) const {
  auto it = tables_.find(table);
  return it == tables_.end() ? 0 : static_cast<int64_t>(it->second.keys.size());
}

const std::vector<uint64_t>& Bundle::keys(const std::string& table) const {
  static const std::vector<uint64_t> kEmpty;
  auto it = tables_.find(table);
  return it == tables_.end() ? kEmpty : it->second.keys;
}

// ---- Scorer -----------------------------------------------------------------------------------

namespace {

// out->items/item_scores = the top_n candidates by their logit in out->scores, best first, ties
// in request order (a NaN logit ranks last). `order` is a reused buffer: no allocation once grown.
void TopCandidates(const std::vector<uint64_t>& candidates, int top_n, std::vector<uint32_t>* order,
                   ScoreResponse* out) {
  const std::vector<float>& s = out->scores;
  const size_t k = std::min(static_cast<size_t>(std::max(0, top_n)), s.size());
  order->resize(s.size());
  for (size_t i = 0; i < s.size(); ++i) (*order)[i] = static_cast<uint32_t>(i);
  const auto key = [&](uint32_t i) { return std::isnan(s[i]) ? -INFINITY : s[i]; };
  std::partial_sort(order->begin(), order->begin() + static_cast<std::ptrdiff_t>(k), order->end(),
                    [&](uint32_t a, uint32_t b) {
                      const float x = key(a), y = key(b);
                      return x > y || (x == y && a < b);
                    });
  out->items.clear();
  out->item_scores.clear();
  for (size_t i = 0; i < k; ++i) {
    out->items.push_back(candidates[(*order)[i]]);
    out->item_scores.push_back(s[(*order)[i]]);
  }
}

}  // namespace

StatusOr<std::unique_ptr<Scorer>> Scorer::Create(std::shared_ptr<const Bundle> bundle,
                                                 int64_t max_batch, bool fast_path) {
  if (bundle == nullptr) return InvalidArgumentError("Scorer: null bundle");
  // At least 2: models with Dice refuse smaller buffers.
  max_batch = std::max<int64_t>(2, max_batch);
  IPS_ASSIGN_OR_RETURN(const config::Config cfg,
                       ParseConfigText(bundle->config_text(), bundle->dir() + "/MANIFEST config"));
  std::unique_ptr<Scorer> s(new Scorer());
  IPS_ASSIGN_OR_RETURN(s->model_, CreateCtrModel(cfg, max_batch));
  IPS_RETURN_IF_ERROR(LoadModelTensors(bundle->tensors(), bundle->dir(), s->model_.get()));
  const int64_t dim = s->model_->embedding_dim();
  for (const std::string* t : {&s->item_table_, &s->cat_table_}) {
    if (bundle->dim(*t) != 0 && bundle->dim(*t) != dim)
      return InvalidArgumentError(bundle->dir() + ": table '" + *t + "' has dim " +
                                  std::to_string(bundle->dim(*t)) + ", the model " +
                                  std::to_string(dim));
  }
  if (const auto* mind = dynamic_cast<const models::Mind<float>*>(s->model_.get()))
    s->retrieval_uses_categories_ = mind->options().use_categories;
  if (const auto* din = dynamic_cast<const models::Din<float>*>(s->model_.get());
      din != nullptr && fast_path) {
    auto fast = models::DinServing::Create(*din);
    if (!fast.ok() && fast.status().code() != StatusCode::kUnimplemented) return fast.status();
    // UNIMPLEMENTED: a DIN configuration the fast path does not cover; the Forward serves it.
    // And only its AVX-512 code serves: the portable twin (CPUs without AVX-512) is ~5x slower
    // than the generic Forward's BLAS on this model (7.7 ms vs 1.4 ms on the dev VM).
    if (fast.ok() && (*fast)->avx512()) {
      s->din_fast_ = std::move(fast).value();
      // Sized once for a full history; candidates grow cand_behaviours_ on first use only.
      s->hist_behaviours_.resize(static_cast<size_t>(din->max_len() * 2 * dim));
      s->cand_behaviours_.reserve(static_cast<size_t>(max_batch * 2 * dim));
      s->behaviour_keys_.reserve(static_cast<size_t>(2 * (din->max_len() + max_batch)));
      s->behaviour_rows_.reserve(static_cast<size_t>(2 * (din->max_len() + max_batch)));
    }
  }
  s->bundle_ = std::move(bundle);
  return s;
}

std::string Scorer::scoring_path() const {
  return din_fast_ != nullptr ? std::string("din_serving/") + din_fast_->isa_name() : "forward";
}

Status Scorer::Score(const ScoreRequest& q, ScoreResponse* out) {
  const int64_t T = model_->max_len();
  const int64_t D = model_->embedding_dim();
  const int64_t max_b = model_->max_batch();
  out->scores.clear();
  out->items.clear();
  out->item_scores.clear();
  out->history_used = out->history_dropped = 0;
  out->unknown_ids = 0;
  out->first_unknown_field = nullptr;
  out->first_unknown_entry = -1;
  out->first_unknown_id = 0;
  if (!q.history_cats.empty() && q.history_cats.size() != q.history.size())
    return InvalidArgumentError("history_cats has " + std::to_string(q.history_cats.size()) +
                                " entries, history " + std::to_string(q.history.size()));
  if (!q.candidate_cats.empty() && q.candidate_cats.size() != q.candidates.size())
    return InvalidArgumentError("candidate_cats has " + std::to_string(q.candidate_cats.size()) +
                                " entries, candidates " + std::to_string(q.candidates.size()));
  const bool retrieval = q.candidates.empty();
  if (retrieval && model_->num_user_vectors() == 0)
    return InvalidArgumentError(std::string("no candidates, and model '") + model_->name() +
                                "' does not retrieve");
  const bool have_map = bundle_->item_cats() != nullptr;
  if (!have_map) {
    // Zeros in place of unknown categories would silently score a different model input.
    if (q.history_cats.empty() && !q.history.empty())
      return InvalidArgumentError(
          "no history_cats, and the bundle has no item -> category map to fill them in (export "
          "with --dataset DIR, or send history_cats)");
    if (q.candidate_cats.empty() && !q.candidates.empty())
      return InvalidArgumentError(
          "no candidate_cats, and the bundle has no item -> category map to fill them in (export "
          "with --dataset DIR, or send candidate_cats)");
    if (retrieval && retrieval_uses_categories_)
      return FailedPreconditionError(std::string("model '") + model_->name() +
                                     "' retrieves in the item + category space, and the bundle "
                                     "has no item -> category map (export with --dataset DIR)");
  }
  const auto hist_cat = [&](size_t i) {
    return q.history_cats.empty() ? bundle_->ItemCategory(q.history[i]) : q.history_cats[i];
  };
  const auto cand_cat = [&](size_t i) {
    return q.candidate_cats.empty() ? bundle_->ItemCategory(q.candidates[i]) : q.candidate_cats[i];
  };
  // The newest T entries, as training builds its histories (the newest max_history events before
  // the target): the model has T positions. The dropped ones are reported, not hidden.
  const int64_t len = std::min<int64_t>(T, static_cast<int64_t>(q.history.size()));
  const size_t first = q.history.size() - static_cast<size_t>(len);
  out->history_used = len;
  out->history_dropped = static_cast<int64_t>(first);
  // An id the request gave that has no row scores as zeros (as the store's Lookup reads a key it
  // never saw), which is what raw ids sent to a bundle of dense ids look like: counted, never
  // silent. Categories the bundle's map filled in are not the request's (an item the map does not
  // know gets category 0, the padding). Called with the rows already looked up: no lookup and no
  // allocation of its own.
  const bool count_hist_cats = !q.history_cats.empty();
  const bool count_cand_cats = !q.candidate_cats.empty();
  const auto unknown = [out](const char* field, size_t entry, uint64_t id) {
    if (out->unknown_ids++ == 0) {
      out->first_unknown_field = field;
      out->first_unknown_entry = static_cast<int64_t>(entry);
      out->first_unknown_id = id;
    }
  };
  if (din_fast_ != nullptr && !retrieval) {
    // Behaviours [item row, category row] (zeros for key 0 and unknown keys, as below), the
    // history once and each candidate once; the rows looked up in one batch per table
    // (Bundle::Rows: the tables are far larger than the caches).
    const int64_t E = 2 * D;
    const int64_t n = static_cast<int64_t>(q.candidates.size());
    const size_t m = static_cast<size_t>(len + n);
    behaviour_keys_.resize(2 * m);
    behaviour_rows_.resize(2 * m);
    uint64_t* items = behaviour_keys_.data();
    uint64_t* cats = items + m;
    for (int64_t t = 0; t < len; ++t) {
      items[t] = q.history[first + t];
      cats[t] = hist_cat(first + t);
    }
    for (int64_t b = 0; b < n; ++b) {
      items[len + b] = q.candidates[b];
      cats[len + b] = cand_cat(b);
    }
    const float** item_rows = behaviour_rows_.data();
    const float** cat_rows = item_rows + m;
    bundle_->Rows(item_table_, items, static_cast<int64_t>(m), item_rows);
    bundle_->Rows(cat_table_, cats, static_cast<int64_t>(m), cat_rows);
    cand_behaviours_.resize(static_cast<size_t>(n * E));
    auto put = [&](float* dst, uint64_t key, const float* row) {
      if (key != 0 && row != nullptr)
        std::copy(row, row + D, dst);
      else
        std::fill(dst, dst + D, 0.0f);
    };
    for (size_t i = 0; i < m; ++i) {
      const int64_t b = static_cast<int64_t>(i) - len;
      float* dst = b < 0 ? hist_behaviours_.data() + i * E : cand_behaviours_.data() + b * E;
      put(dst, items[i], item_rows[i]);
      put(dst + D, cats[i], cat_rows[i]);
      if (item_rows[i] == nullptr && items[i] != 0)
        unknown(b < 0 ? "history" : "candidates", b < 0 ? first + i : static_cast<size_t>(b),
                items[i]);
      if (cat_rows[i] == nullptr && cats[i] != 0 && (b < 0 ? count_hist_cats : count_cand_cats))
        unknown(b < 0 ? "history_cats" : "candidate_cats",
                b < 0 ? first + i : static_cast<size_t>(b), cats[i]);
    }
    out->scores.resize(static_cast<size_t>(n));
    IPS_RETURN_IF_ERROR(din_fast_->Score(hist_behaviours_.data(), len, cand_behaviours_.data(), n,
                                         out->scores.data()));
    if (q.top_n >= 0) TopCandidates(q.candidates, q.top_n, &rank_order_, out);
    return Status::Ok();
  }
  // Row tables: row 0 = zeros (padding and unknown keys, as the store's Lookup), then the T
  // history rows, then one row per candidate of the chunk.
  const int64_t chunk_cap = std::min<int64_t>(max_b, std::max<size_t>(1, q.candidates.size()));
  const int64_t rows = 1 + len + chunk_cap;
  item_rows_.assign(static_cast<size_t>(rows * D), 0.0f);
  cat_rows_.assign(static_cast<size_t>(rows * D), 0.0f);
  // Returns false for a key other than 0 that has no row.
  auto put = [&](std::vector<float>& dst, int64_t row, const std::string& table, uint64_t key) {
    const float* r = key == 0 ? nullptr : bundle_->Row(table, key);
    if (r != nullptr)
      std::copy(r, r + D, dst.begin() + row * D);
    else
      std::fill(dst.begin() + row * D, dst.begin() + (row + 1) * D, 0.0f);
    return r != nullptr || key == 0;
  };
  for (int64_t t = 0; t < len; ++t) {
    const size_t h = first + static_cast<size_t>(t);
    if (!put(item_rows_, 1 + t, item_table_, q.history[h])) unknown("history", h, q.history[h]);
    if (!put(cat_rows_, 1 + t, cat_table_, hist_cat(h)) && count_hist_cats)
      unknown("history_cats", h, q.history_cats[h]);
  }
  const int64_t total = retrieval ? 1 : static_cast<int64_t>(q.candidates.size());
  for (int64_t begin = 0; begin < total; begin += chunk_cap) {
    const int64_t B = std::min<int64_t>(chunk_cap, total - begin);
    item_index_.assign(static_cast<size_t>(B * T + B), 0);
    cat_index_.assign(static_cast<size_t>(B * T + B), 0);
    lengths_.assign(static_cast<size_t>(B), static_cast<int32_t>(len));
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < len; ++t) {
        item_index_[b * T + (T - len) + t] = 1 + t;
        cat_index_[b * T + (T - len) + t] = 1 + t;
      }
      const int64_t row = 1 + len + b;
      if (!retrieval) {
        const size_t c = static_cast<size_t>(begin + b);
        if (!put(item_rows_, row, item_table_, q.candidates[c]))
          unknown("candidates", c, q.candidates[c]);
        if (!put(cat_rows_, row, cat_table_, cand_cat(c)) && count_cand_cats)
          unknown("candidate_cats", c, q.candidate_cats[c]);
      }
      item_index_[B * T + b] = retrieval ? 0 : row;
      cat_index_[B * T + b] = retrieval ? 0 : row;
    }
    models::CtrInputs<float> in;
    in.batch = B;
    in.lengths = lengths_.data();
    in.item_index = item_index_.data();
    in.cat_index = cat_index_.data();
    in.item_rows = item_rows_.data();
    in.num_item_rows = rows;
    in.cat_rows = cat_rows_.data();
    in.num_cat_rows = rows;
    IPS_RETURN_IF_ERROR(model_->Forward(ctx_, in, /*training=*/false, nullptr));
    if (!retrieval) out->scores.insert(out->scores.end(), model_->logits(), model_->logits() + B);
  }
  if (retrieval) {
    const int64_t K = model_->num_user_vectors(), V = model_->vector_dim();
    if (V != bundle_->dim(item_table_))
      return InvalidArgumentError("user vectors of dim " + std::to_string(V) +
                                  " cannot score item rows of dim " +
                                  std::to_string(bundle_->dim(item_table_)));
    const float* u = model_->user_vectors();
    using Entry = std::pair<float, uint64_t>;  // min-heap of the best top_n
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> best;
    const size_t n = static_cast<size_t>(q.top_n < 0 ? ScoreRequest::kDefaultTopN : q.top_n);
    const bool with_cats = retrieval_uses_categories_;
    std::vector<float> x(static_cast<size_t>(V));
    for (uint64_t key : bundle_->keys(item_table_)) {
      const float* r = bundle_->Row(item_table_, key);
      if (with_cats) {
        // The item vector of the model's space: item row + its category's row (zeros when the
        // category has no row, as in training).
        const uint64_t cat = bundle_->ItemCategory(key);
        const float* c = cat == 0 ? nullptr : bundle_->Row(cat_table_, cat);
        for (int64_t j = 0; j < V; ++j) x[j] = r[j] + (c != nullptr ? c[j] : 0.0f);
        r = x.data();
      }
      float s = -INFINITY;
      for (int64_t k = 0; k < K; ++k) {
        float dot = 0;
        for (int64_t j = 0; j < V; ++j) dot += u[k * V + j] * r[j];
        s = std::max(s, dot);
      }
      if (best.size() < n) {
        best.emplace(s, key);
      } else if (n > 0 && s > best.top().first) {
        best.pop();
        best.emplace(s, key);
      }
    }
    while (!best.empty()) {
      out->items.push_back(best.top().second);
      out->item_scores.push_back(best.top().first);
      best.pop();
    }
    std::reverse(out->items.begin(), out->items.end());
    std::reverse(out->item_scores.begin(), out->item_scores.end());
  } else if (q.top_n >= 0) {
    TopCandidates(q.candidates, q.top_n, &rank_order_, out);
  }
  return Status::Ok();
}

// ---- Request JSON -----------------------------------------------------------------------------

namespace {

// Length of the valid UTF-8 sequence at s[i] (1..4), or 0 when the bytes there are not one
// (a stray continuation byte, an overlong form, a UTF-16 surrogate, a code point above U+10FFFF,
// a truncated sequence).
size_t Utf8SequenceLength(const std::string& s, size_t i) {
  const auto at = [&](size_t k) -> unsigned {
    return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0x100;
  };
  const unsigned c = at(0);
  if (c < 0x80) return 1;
  const auto cont = [&](size_t k, unsigned lo = 0x80, unsigned hi = 0xbf) {
    return at(k) >= lo && at(k) <= hi;
  };
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c == 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if (c == 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
  if (c >= 0xe1 && c <= 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xf1 && c <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

// Appends `s` with every byte that is not part of valid UTF-8 replaced by the escape \ufffd
// (U+FFFD REPLACEMENT CHARACTER): text echoed from a request (the user value, a field name in an
// error) must not make the response line invalid JSON. Appends only: no allocation once *out
// has grown.
void AppendValidUtf8(std::string* out, const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SequenceLength(s, i);
    if (n == 0) {
      out->append("\\ufffd");
      ++i;
    } else {
      out->append(s, i, n);
      i += n;
    }
  }
}

// A strict little JSON reader for one request object: the fields below only, ids as
// non-negative integers (items and categories >= 1: 0 is the padding id). Parses into the
// caller's request (its vectors cleared, their capacity kept): a serving loop that reuses one
// request allocates nothing per line once the vectors have grown to its largest request. Everything
// echoed into the response (the user value verbatim) is valid JSON once AppendValidUtf8 has
// replaced invalid UTF-8: string escapes are checked, raw control characters refused, bare words
// other than true/false/null and malformed numbers refused.
class RequestParser {
 public:
  explicit RequestParser(const std::string& s) : s_(s) {}

  Status Parse(ScoreRequest* q, std::string* user_raw) {
    q->history.clear();
    q->history_cats.clear();
    q->candidates.clear();
    q->candidate_cats.clear();
    q->top_n = ScoreRequest().top_n;
    *user_raw = "null";
    Ws();
    if (!Eat('{')) return Err("expected '{'");
    Ws();
    static constexpr const char* kFields[] = {"user",       "history",        "history_cats",
                                              "candidates", "candidate_cats", "top_n"};
    unsigned seen = 0;  // bit i: kFields[i] was given
    if (!Eat('}')) {
      for (;;) {
        Ws();
        key_.clear();
        IPS_RETURN_IF_ERROR(String(&key_));
        const std::string& key = key_;
        unsigned bit = 0;
        for (size_t i = 0; i < std::size(kFields); ++i)
          if (key == kFields[i]) bit = 1u << i;
        if ((seen & bit) != 0) return Err("duplicate field \"" + key + "\"");
        seen |= bit;
        Ws();
        if (!Eat(':')) return Err("expected ':' after \"" + key + "\"");
        Ws();
        if (key == "user") {
          const size_t begin = pos_;
          if (Status s = SkipValue(); !s.ok()) return InField(s, key);
          user_raw->assign(s_, begin, pos_ - begin);
        } else if (key == "history") {
          // Id 0 is the padding id here too: the scorer pads short histories itself, so a 0 in a
          // request is a client bug (an unmapped item, an off-by-one), not a shorter history to
          // be read as zeros without a word.
          IPS_RETURN_IF_ERROR(Ids(key, &q->history, "item"));
        } else if (key == "history_cats") {
          // Category 0 is the padding item's only (real categories are >= 1 in converted data and
          // the synthetic catalogue): as for item 0, a client bug read as a zero row otherwise.
          IPS_RETURN_IF_ERROR(Ids(key, &q->history_cats, "category"));
        } else if (key == "candidates") {
          // Id 0 is the padding id (data convert refuses item 0): scoring it would answer a
          // number for an item that cannot exist.
          IPS_RETURN_IF_ERROR(Ids(key, &q->candidates, "item"));
        } else if (key == "candidate_cats") {
          IPS_RETURN_IF_ERROR(Ids(key, &q->candidate_cats, "category"));
        } else if (key == "top_n") {
          const size_t begin = pos_;
          uint64_t v = 0;
          // Retrieval's items, or (with candidates) how many of them to rank.
          constexpr char kTopN[] = "an integer in 0..100000 (the number of items to return)";
          IPS_RETURN_IF_ERROR(Uint(key, kTopN, nullptr, &v));
          if (v > 100000)
            return ErrAt(begin, "field \"top_n\": expected " + std::string(kTopN) + ", got " +
                                    std::to_string(v));
          q->top_n = static_cast<int>(v);
        } else {
          return Err("unknown field \"" + key +
                     "\" (known: user, history, history_cats, candidates, candidate_cats, top_n)");
        }
        Ws();
        if (Eat(',')) continue;
        if (Eat('}')) break;
        return Err("expected ',' or '}'");
      }
    }
    Ws();
    if (pos_ != s_.size()) return Err("trailing characters after the object");
    if ((seen & 2u) == 0) return Err("missing field \"history\"");  // kFields[1]
    return Status::Ok();
  }

 private:
  Status Err(const std::string& what) const { return ErrAt(pos_, what); }
  // An ErrAt error ("column N: what") raised inside the value of `field`, naming it as the id
  // fields' errors do: "column N: field \"user\": what".
  static Status InField(const Status& s, const std::string& field) {
    const std::string& m = s.message();
    const size_t at = m.find(": ");
    if (at == std::string::npos) return s;
    return Status(s.code(), m.substr(0, at + 2) + "field \"" + field + "\": " + m.substr(at + 2));
  }
  Status ErrAt(size_t pos, const std::string& what) const {
    return InvalidArgumentError("column " + std::to_string(pos + 1) + ": " + what);
  }
  // The word or number at pos_ (ASCII letters, digits, "+-."; at most `max` bytes: 20 for
  // messages).
  std::string Token(size_t max = 20) const {
    size_t end = pos_;
    while (end < s_.size() && end - pos_ < max &&
           (std::isalnum(static_cast<unsigned char>(s_[end])) || s_[end] == '-' || s_[end] == '+' ||
            s_[end] == '.'))
      ++end;
    return s_.substr(pos_, end - pos_);
  }
  void Ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\r')) ++pos_;
  }
  bool Eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  Status String(std::string* out) {
    if (!Eat('"')) return Err("expected a string");
    while (pos_ < s_.size() && s_[pos_] != '"') {
      // JSON strings hold no raw control characters; echoed, one would make the response invalid.
      if (static_cast<unsigned char>(s_[pos_]) < 0x20) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "control character 0x%02x in a string (escape it)",
                      static_cast<unsigned>(s_[pos_]));
        return Err(buf);
      }
      if (s_[pos_] == '\\') {
        if (++pos_ >= s_.size()) break;
        if (s_[pos_] == 'u') {  // kept verbatim: field names and user ids are echoed, not decoded
          for (size_t k = 1; k <= 4; ++k)
            if (pos_ + k >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[pos_ + k])))
              return ErrAt(pos_ - 1, "invalid escape in a string (\\u needs 4 hex digits)");
          out->append("\\u");
          ++pos_;
          continue;
        }
        if (std::strchr("\"\\/bfnrt", s_[pos_]) == nullptr || s_[pos_] == '\0')
          return ErrAt(pos_ - 1,
                       "invalid escape in a string (JSON has \\\" \\\\ \\/ \\b \\f "
                       "\\n \\r \\t \\uXXXX)");
      }
      out->push_back(s_[pos_++]);
    }
    if (!Eat('"')) return Err("unterminated string");
    return Status::Ok();
  }
  // A non-negative decimal integer: `expected` names what the field holds (for a value that is not
  // one), `integers` says that fractions and exponents are not (for 2.5, 1e3; null: "expected
  // <expected>, got 2.5").
  //
  // RFC 8259's number grammar decides what is a number at all: a leading zero ("007": JSON
  // parsers refuse it, and reading it as 7 would answer for a request the client never sent
  // validly) and malformed fractions or exponents ("1.", "1e") are refused as not numbers, with
  // `expected`; only a well-formed non-integer (2.5, 1e3) gets `integers`.
  Status Uint(const std::string& field, const char* expected, const char* integers, uint64_t* v) {
    const size_t begin = pos_;
    auto not_expected = [&] {
      pos_ = begin;
      const std::string got = Token();
      return Err("field \"" + field + "\": expected " + expected +
                 (got.empty() ? std::string() : ", got " + got));
    };
    if (pos_ >= s_.size() || s_[pos_] < '0' || s_[pos_] > '9') return not_expected();
    if (HasLeadingZero(std::string_view(s_).substr(pos_))) {
      pos_ = begin;
      return Err("field \"" + field + "\": expected " + expected + ", got " + Token() +
                 kLeadingZeroNote);
    }
    uint64_t x = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      const uint64_t d = static_cast<uint64_t>(s_[pos_] - '0');
      if (x > (UINT64_MAX - d) / 10) return Err("field \"" + field + "\": value overflows 64 bits");
      x = x * 10 + d;
      ++pos_;
    }
    if (pos_ < s_.size() && (s_[pos_] == '.' || s_[pos_] == 'e' || s_[pos_] == 'E')) {
      pos_ = begin;
      if (integers == nullptr || !IsJsonNumber(NumberToken())) return not_expected();
      return Err("field \"" + field + "\": " + integers + ", got " + NumberToken());
    }
    // Letters run on from the digits ("12abc", "0x1f"): a bare word, not a number.
    if (pos_ < s_.size() && std::isalpha(static_cast<unsigned char>(s_[pos_])))
      return not_expected();
    *v = x;
    return Status::Ok();
  }
  // The characters of a number at pos_ (digits, "+-.eE"), for telling a well-formed non-integer
  // from a malformed number; Token's letters beyond e/E ("1.5x") are not part of it.
  std::string NumberToken() const {
    size_t end = pos_;
    while (end < s_.size() &&
           (std::isdigit(static_cast<unsigned char>(s_[end])) ||
            std::strchr("+-.eE", s_[end]) != nullptr) &&
           s_[end] != '\0')
      ++end;
    return s_.substr(pos_, end - pos_);
  }
  Status Id(const std::string& field, uint64_t* v) {
    return Uint(field, "a non-negative integer id", "ids are integers", v);
  }
  // `what` ("item", "category"): the kind of id, of which 0 is the padding id and refused.
  Status Ids(const std::string& field, std::vector<uint64_t>* out, const char* what) {
    if (!Eat('[')) return Err("field \"" + field + "\": expected an array");
    Ws();
    if (Eat(']')) return Status::Ok();
    for (;;) {
      Ws();
      const size_t begin = pos_;
      uint64_t v = 0;
      IPS_RETURN_IF_ERROR(Id(field, &v));
      if (v == 0)
        return ErrAt(begin, "field \"" + field + "\": id 0 (entry " + std::to_string(out->size()) +
                                ") is the padding id, not " + (what[0] == 'i' ? "an " : "a ") +
                                what + " (" + what + " ids are >= 1)");
      out->push_back(v);
      if (out->size() > 1000000) return Err("field \"" + field + "\": more than 1e6 ids");
      Ws();
      if (Eat(',')) continue;
      if (Eat(']')) return Status::Ok();
      return Err("field \"" + field + "\": expected ',' or ']'");
    }
  }
  Status SkipValue(int depth = 0) {
    if (depth > 32) return Err("nesting too deep");
    Ws();
    if (pos_ >= s_.size()) return Err("expected a value");
    const char c = s_[pos_];
    if (c == '"') {
      std::string ignored;
      return String(&ignored);
    }
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++pos_;
      Ws();
      if (Eat(close)) return Status::Ok();
      for (;;) {
        if (c == '{') {
          Ws();
          std::string k;
          IPS_RETURN_IF_ERROR(String(&k));
          Ws();
          if (!Eat(':')) return Err("expected ':'");
        }
        IPS_RETURN_IF_ERROR(SkipValue(depth + 1));
        Ws();
        if (Eat(',')) continue;
        if (Eat(close)) return Status::Ok();
        return Err("expected ',' or closing bracket");
      }
    }
    // A bare word must be true, false, null or a JSON number: anything else echoed as the user
    // value would make the response invalid JSON.
    const std::string word = Token(s_.size());
    if (word == "true" || word == "false" || word == "null" || IsJsonNumber(word)) {
      pos_ += word.size();
      return Status::Ok();
    }
    if (word.empty()) return Err("expected a value");
    return Err("expected a value (a string, number, true, false, null, array or object), got " +
               Token() + (HasLeadingZero(word) ? kLeadingZeroNote : ""));
  }
  // "01", "-007" (at the start of w): RFC 8259 numbers have no leading zeros, and clients'
  // parsers refuse them.
  static bool HasLeadingZero(std::string_view w) {
    const size_t digit = !w.empty() && w[0] == '-' ? 1 : 0;
    return w.size() > digit + 1 && w[digit] == '0' && w[digit + 1] >= '0' && w[digit + 1] <= '9';
  }
  static constexpr const char* kLeadingZeroNote = " (a JSON number has no leading zeros)";
  // -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
  static bool IsJsonNumber(const std::string& w) {
    size_t i = 0;
    const auto digits = [&] {
      const size_t b = i;
      while (i < w.size() && w[i] >= '0' && w[i] <= '9') ++i;
      return i - b;
    };
    if (i < w.size() && w[i] == '-') ++i;
    if (i < w.size() && w[i] == '0') {
      ++i;
    } else if (digits() == 0) {
      return false;
    }
    if (i < w.size() && w[i] == '.') {
      ++i;
      if (digits() == 0) return false;
    }
    if (i < w.size() && (w[i] == 'e' || w[i] == 'E')) {
      ++i;
      if (i < w.size() && (w[i] == '+' || w[i] == '-')) ++i;
      if (digits() == 0) return false;
    }
    return i == w.size();
  }

  const std::string& s_;
  size_t pos_ = 0;
  std::string key_;  // the field name being parsed (short: no allocation)
};

// The contents of a JSON string holding `s`: quotes, backslashes and control characters escaped,
// bytes that are not valid UTF-8 (a request's field name echoed in an error) replaced by \ufffd.
std::string JsonEscape(const std::string& s) {
  std::string escaped;
  AppendJsonEscaped(&escaped, s);
  std::string out;
  AppendValidUtf8(&out, escaped);
  return out;
}

void AppendFloat(std::string* out, float v) {
  char buf[32];
  if (!std::isfinite(v)) {
    *out += "null";
    return;
  }
  // printf's "%.9g" (9 significant digits: round-trips every float), without printf's locale
  // and format parsing (measured: about half of the JSON line's own cost at 100 candidates).
  const std::to_chars_result r =
      std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::general, 9);
  out->append(buf, r.ptr);
}

}  // namespace

// ---- BundleServer -----------------------------------------------------------------------------

StatusOr<std::unique_ptr<BundleServer>> BundleServer::Create(const std::string& root, int poll_ms,
                                                             int64_t max_batch) {
  if (poll_ms < 1) return InvalidArgumentError("serve: poll interval < 1 ms");
  IPS_ASSIGN_OR_RETURN(auto bundle, Bundle::Load(root));
  std::unique_ptr<BundleServer> s(new BundleServer());
  s->root_ = root;
  s->poll_ms_ = poll_ms;
  s->max_batch_ = max_batch;
  s->loaded_version_ = bundle->version();
  IPS_ASSIGN_OR_RETURN(s->current_, Scorer::Create(std::move(bundle), max_batch));
  // Only a bundle root can have newer versions; a v-<n> directory is served as is.
  if (!ps::PathExists(root + "/MANIFEST")) s->watcher_ = std::thread([p = s.get()] { p->Watch(); });
  return s;
}

BundleServer::~BundleServer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
}

void BundleServer::Watch() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, std::chrono::milliseconds(poll_ms_), [this] { return stop_; });
    if (stop_) break;
    const int64_t have = loaded_version_;
    lock.unlock();
    std::unique_ptr<Scorer> next;
    std::string error;
    auto v = CurrentBundleVersion(root_);
    if (v.ok() && *v > have) {
      auto bundle = Bundle::Load(root_ + "/" + VersionName(*v));
      if (bundle.ok()) {
        auto scorer = Scorer::Create(std::move(*bundle), max_batch_);
        if (scorer.ok())
          next = std::move(*scorer);
        else
          error = scorer.status().ToString();
      } else {
        error = bundle.status().ToString();
      }
    }
    lock.lock();
    if (next != nullptr) {
      loaded_version_ = next->bundle().version();
      pending_ = std::move(next);
    } else if (!error.empty() && (errors_.empty() || errors_.back() != error)) {
      errors_.push_back(error);
    }
  }
}

Scorer* BundleServer::Acquire() {
  std::lock_guard<std::mutex> lock(mu_);
  if (pending_ != nullptr) {
    current_ = std::move(pending_);
    ++reloads_;
  }
  return current_.get();
}

int64_t BundleServer::version() { return Acquire()->bundle().version(); }

std::vector<std::string> BundleServer::TakeReloadErrors() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  out.swap(errors_);
  return out;
}

std::string BundleServer::HandleLine(int64_t line_no, const std::string& line, bool* ok) {
  std::string out;
  HandleLine(line_no, line, ok, &out);
  return out;
}

void BundleServer::HandleLine(int64_t line_no, const std::string& line, bool* ok,
                              std::string* out) {
  Scorer* scorer = Acquire();
  // request_, response_ and user_ are reused, so is *out when the caller reuses it: no
  // allocation per request once they have grown (the JSON's share of the p99, ips serve).
  Status s = RequestParser(line).Parse(&request_, &user_);
  if (s.ok()) s = scorer->Score(request_, &response_);
  out->clear();
  out->append("{\"user\":");
  AppendValidUtf8(out, user_);  // the request's bytes: invalid UTF-8 would make the line invalid
  if (!s.ok()) {
    *ok = false;
    out->append(",\"line\":").append(std::to_string(line_no)).append(",\"error\":\"");
    out->append(JsonEscape("line " + std::to_string(line_no) + ": " + s.message()));
    out->append("\"}");
    return;
  }
  *ok = true;
  const ScoreResponse& r = response_;
  out->append(",\"version\":").append(std::to_string(scorer->bundle().version()));
  if (!request_.candidates.empty() && request_.top_n < 0) {
    out->append(",\"scores\":[");
    for (size_t i = 0; i < r.scores.size(); ++i) {
      if (i > 0) out->push_back(',');
      AppendFloat(out, r.scores[i]);
    }
    out->push_back(']');
  } else {  // retrieval, or the top_n of the candidates: the same answer, ranked items
    out->append(",\"items\":[");
    for (size_t i = 0; i < r.items.size(); ++i) {
      if (i > 0) out->push_back(',');
      out->append(std::to_string(r.items[i]));
    }
    out->append("],\"scores\":[");
    for (size_t i = 0; i < r.item_scores.size(); ++i) {
      if (i > 0) out->push_back(',');
      AppendFloat(out, r.item_scores[i]);
    }
    out->push_back(']');
  }
  if (r.unknown_ids > 0) {
    // Ids without a row scored as zero rows: the scores are not what the client meant to ask
    // for (raw ids instead of the model's, typically), so the response says how many.
    // Before history_dropped, which stays the last field (as clients read it).
    ++requests_with_unknown_ids_;
    unknown_ids_ += r.unknown_ids;
    out->append(",\"unknown_ids\":").append(std::to_string(r.unknown_ids));
  }
  if (r.history_dropped > 0) {
    // The model reads the newest max_history entries (as training does); the client is told that
    // the others did not count.
    ++truncated_histories_;
    out->append(",\"history_dropped\":").append(std::to_string(r.history_dropped));
  }
  out->push_back('}');
}

}  // namespace ips
