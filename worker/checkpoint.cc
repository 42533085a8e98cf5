#include "worker/checkpoint.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <google/protobuf/text_format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <utility>

#include "common/timer.h"
#include "proto/checkpoint.pb.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/checkpoint_io.h"
#include "worker/manifest.h"
#include "worker/manifest_magic.h"

namespace ips {
namespace {

constexpr int kFormatVersion = 1;
constexpr char kDenseMagic[8] = {'I', 'P', 'S', 'D', 'N', 'S', '0', '1'};
constexpr const char* kManifestMagic = kCheckpointManifestMagic;
constexpr char kManifestName[] = "MANIFEST";
constexpr char kDenseName[] = "dense.bin";
constexpr char kLatestName[] = "LATEST";
constexpr char kLockName[] = "LOCK";

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string CkptName(int64_t step) { return "ckpt-" + std::to_string(step); }

// "ckpt-<digits>" -> step, or -1.
int64_t StepOfName(const std::string& name) {
  if (name.rfind("ckpt-", 0) != 0 || name.size() == 5 || name.size() > 5 + 18) return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

// The error of a writer that finds DIR/LOCK (`path`, open as `fd`) held by another writer,
// naming the pid that writer recorded in it.
Status DirInUseError(const std::string& dir, const DirLockLabel& label, const std::string& path,
                     int fd) {
  char buf[32] = {};
  const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  std::string pid(buf, n > 0 ? static_cast<size_t>(n) : 0);
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
  return FailedPreconditionError(label.what + " " + dir + " is in use by another run (pid " +
                                 (pid.empty() ? std::string("unknown") : pid) +
                                 "): " + label.remedy + " (lock: " + path + ")");
}

// flock's errors of a file system without locks (NFS without lockd, some FUSE mounts).
bool FlockUnsupported(int err) { return err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS; }

DirLockLabel CheckpointLockLabel() {
  return {"checkpoint.dir", "give each run its own checkpoint.dir"};
}

}  // namespace

// ---- DirLock ------------------------------------------------------------------------------------

StatusOr<std::unique_ptr<DirLock>> DirLock::Acquire(const std::string& dir,
                                                    const DirLockLabel& label) {
  const std::string path = dir + "/" + kLockName;
  // O_CLOEXEC: a process started by the run must not inherit (and outlive it with) the lock.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return InternalError(path + ": cannot open: " + std::strerror(errno));
  int rc;
  do {
    rc = ::flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      Status in_use = DirInUseError(dir, label, path, fd);
      ::close(fd);
      return in_use;
    }
    ::close(fd);
    if (FlockUnsupported(err)) {
      LOG(WARNING) << path << ": the file system does not support flock (" << std::strerror(err)
                   << "); " << label.what << " " << dir
                   << " is not protected against a second run writing into it";
      return std::unique_ptr<DirLock>(new DirLock(-1));
    }
    return InternalError(path + ": flock failed: " + std::strerror(err));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  // Best effort: the pid only improves the other run's message.
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
    LOG(WARNING) << path << ": cannot record the pid: " << std::strerror(errno);
  return std::unique_ptr<DirLock>(new DirLock(fd));
}

Status DirLock::CheckNotLocked(const std::string& dir, const DirLockLabel& label) {
  const std::string path = dir + "/" + kLockName;
  // O_RDWR as Acquire opens it (so an unwritable LOCK fails here as it fails there), but without
  // O_CREAT: a probe creates nothing. Opening writes nothing either.
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    // No DIR or no DIR/LOCK yet: no writer has ever held it (the writer never removes LOCK).
    if (errno == ENOENT || errno == ENOTDIR) return Status::Ok();
    return InternalError(path + ": cannot open: " + std::strerror(errno));
  }
  int rc;
  do {
    // Shared: two probes (two `ips config check`) do not see each other as writers, while a
    // writer's exclusive lock refuses it. Released at once by the close below; a writer starting
    // within that instant is refused as it would be by any other holder.
    rc = ::flock(fd, LOCK_SH | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  const int err = rc != 0 ? errno : 0;
  Status s = Status::Ok();
  if (err == EWOULDBLOCK) {
    s = DirInUseError(dir, label, path, fd);
  } else if (err != 0 && !FlockUnsupported(err)) {  // no flock: the writer runs unlocked too
    s = InternalError(path + ": flock failed: " + std::strerror(err));
  }
  ::close(fd);  // releases the probe's lock
  return s;
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

// ---- dense.bin --------------------------------------------------------------------------------

StatusOr<ps::FileDigest> WriteDenseFile(const std::string& path,
                                        const std::vector<TensorRef>& tensors,
                                        const std::map<std::string, std::string>& blobs) {
  IPS_ASSIGN_OR_RETURN(auto w, ps::CrcFileWriter::Create(path));
  IPS_RETURN_IF_ERROR(w->Write(kDenseMagic, 8));
  IPS_RETURN_IF_ERROR(w->WritePod(static_cast<uint32_t>(kFormatVersion)));
  IPS_RETURN_IF_ERROR(w->WritePod(static_cast<int64_t>(tensors.size())));
  for (const auto& t : tensors) {
    IPS_RETURN_IF_ERROR(w->WriteString(t.name));
    IPS_RETURN_IF_ERROR(w->WritePod(t.size));
    IPS_RETURN_IF_ERROR(w->Write(t.data, static_cast<size_t>(t.size) * sizeof(float)));
  }
  IPS_RETURN_IF_ERROR(w->WritePod(static_cast<int64_t>(blobs.size())));
  for (const auto& [name, bytes] : blobs) {
    IPS_RETURN_IF_ERROR(w->WriteString(name));
    IPS_RETURN_IF_ERROR(w->WritePod(static_cast<uint64_t>(bytes.size())));
    IPS_RETURN_IF_ERROR(w->Write(bytes.data(), bytes.size()));
  }
  IPS_RETURN_IF_ERROR(w->Finish());
  return ps::FileDigest{w->file_bytes(), w->file_crc32c()};
}

Status ReadDenseFile(const std::string& path, std::map<std::string, std::vector<float>>* tensors,
                     std::map<std::string, std::string>* blobs) {
  IPS_ASSIGN_OR_RETURN(auto r, ps::CrcFileReader::Open(path));
  char magic[8];
  IPS_RETURN_IF_ERROR(r->Read(magic, 8, "magic"));
  if (std::memcmp(magic, kDenseMagic, 8) != 0)
    return DataLossError(path + ": not a dense checkpoint file");
  uint32_t version = 0;
  IPS_RETURN_IF_ERROR(r->ReadPod(&version, "version"));
  if (version != kFormatVersion)
    return DataLossError(path + ": format version " + std::to_string(version));
  int64_t n = 0;
  IPS_RETURN_IF_ERROR(r->ReadPod(&n, "tensor count"));
  if (n < 0 || n > r->file_size())
    return DataLossError(path + ": tensor count " + std::to_string(n));
  for (int64_t i = 0; i < n; ++i) {
    std::string name;
    IPS_RETURN_IF_ERROR(r->ReadString(&name, 4096, "tensor name"));
    int64_t size = 0;
    IPS_RETURN_IF_ERROR(r->ReadPod(&size, "tensor size"));
    if (size < 0 || size > (r->file_size() - r->offset()) / 4)
      return DataLossError(path + ": tensor '" + name + "' size " + std::to_string(size) +
                           " exceeds the file");
    std::vector<float> v(static_cast<size_t>(size));
    IPS_RETURN_IF_ERROR(r->Read(v.data(), v.size() * 4, "tensor values"));
    if (tensors != nullptr) (*tensors)[name] = std::move(v);
  }
  IPS_RETURN_IF_ERROR(r->ReadPod(&n, "blob count"));
  if (n < 0 || n > r->file_size()) return DataLossError(path + ": blob count " + std::to_string(n));
  for (int64_t i = 0; i < n; ++i) {
    std::string name, bytes;
    IPS_RETURN_IF_ERROR(r->ReadString(&name, 4096, "blob name"));
    uint64_t size = 0;
    IPS_RETURN_IF_ERROR(r->ReadPod(&size, "blob size"));
    if (size > static_cast<uint64_t>(r->file_size() - r->offset()))
      return DataLossError(path + ": blob '" + name + "' size " + std::to_string(size) +
                           " exceeds the file");
    bytes.resize(size);
    IPS_RETURN_IF_ERROR(r->Read(bytes.data(), size, "blob bytes"));
    if (blobs != nullptr) (*blobs)[name] = std::move(bytes);
  }
  return r->FinishAndVerify();
}

namespace {

// ---- MANIFEST ---------------------------------------------------------------------------------

Status WriteManifest(const std::string& path, const ckpt::CheckpointManifest& m) {
  std::string bytes;
  if (!m.SerializeToString(&bytes)) return InternalError(path + ": cannot serialize the manifest");
  IPS_ASSIGN_OR_RETURN(auto w, ps::CrcFileWriter::Create(path));
  IPS_RETURN_IF_ERROR(w->Write(kManifestMagic, 8));
  IPS_RETURN_IF_ERROR(w->WriteString(bytes));
  return w->Finish();
}

StatusOr<ckpt::CheckpointManifest> ReadManifest(const std::string& dir) {
  const std::string path = dir + "/" + kManifestName;
  if (!ps::PathExists(path)) return NotFoundError(path + ": missing");
  IPS_ASSIGN_OR_RETURN(auto r, ps::CrcFileReader::Open(path));
  char magic[8];
  IPS_RETURN_IF_ERROR(r->Read(magic, 8, "magic"));
  if (std::memcmp(magic, kManifestMagic, 8) != 0)
    return DataLossError(path + ": not a checkpoint manifest");
  std::string bytes;
  IPS_RETURN_IF_ERROR(r->ReadString(&bytes, size_t{1} << 30, "manifest"));
  IPS_RETURN_IF_ERROR(r->FinishAndVerify());
  ckpt::CheckpointManifest m;
  if (!m.ParseFromString(bytes)) return DataLossError(path + ": unparsable manifest");
  if (m.format_version() < 1 || m.format_version() > kFormatVersion)
    return InvalidArgumentError(path + ": format version " + std::to_string(m.format_version()) +
                                " (this binary reads up to " + std::to_string(kFormatVersion) +
                                ")");
  return m;
}

}  // namespace

// ---- Explaining a checkpoint that does not fit ------------------------------------------------

namespace {

// The settings of a config that shape a checkpoint's tensors and tables (model.type and
// model.embedding_dim first, the other model.* fields but model.device, data.max_history,
// optimizer.type, each table's dim and optimizer type), as (path, value). Values are effective
// ones (a field left unset reads as its default), so two configs that build the same model agree
// whatever they spell out.
using ShapeSettings = std::vector<std::pair<std::string, std::string>>;

std::string FieldValue(const google::protobuf::Message& m,
                       const google::protobuf::FieldDescriptor* f) {
  std::string out;
  if (!f->is_repeated()) {
    google::protobuf::TextFormat::PrintFieldValueToString(m, f, -1, &out);
    return out;
  }
  const int n = m.GetReflection()->FieldSize(m, f);
  if (n == 0) return "(unset)";
  out = "[";
  for (int i = 0; i < n; ++i) {
    std::string v;
    google::protobuf::TextFormat::PrintFieldValueToString(m, f, i, &v);
    out += (i > 0 ? ", " : "") + v;
  }
  return out + "]";
}

bool ShapeSettingsOf(const std::string& config_text, ShapeSettings* out) {
  if (config_text.empty()) return false;
  auto cfg = ParseConfigText(config_text, "checkpoint config");
  // Without a model section the text is not the config that built the model (library callers
  // record placeholders): naming the defaults' DIN would misattribute the checkpoint.
  if (!cfg.ok() || !cfg->has_model()) return false;
  const config::ModelConfig& model = cfg->model();
  out->emplace_back("model.type", config::ModelConfig::Type_Name(model.type()));
  out->emplace_back("model.embedding_dim", std::to_string(model.embedding_dim()));
  const google::protobuf::Descriptor* d = model.GetDescriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* f = d->field(i);
    // Where the model runs does not change what it holds.
    if (f->name() == "type" || f->name() == "embedding_dim" || f->name() == "device") continue;
    out->emplace_back("model." + f->name(), FieldValue(model, f));
  }
  out->emplace_back("data.max_history", std::to_string(cfg->data().max_history()));
  const std::string dense_opt = config::OptimizerConfig::Type_Name(cfg->optimizer().type());
  out->emplace_back("optimizer.type", dense_opt);
  for (const config::TableConfig& t : cfg->tables()) {
    const std::string p = "tables['" + t.name() + "']";
    out->emplace_back(p + ".dim", std::to_string(t.dim()));
    out->emplace_back(
        p + ".optimizer.type",
        t.has_optimizer() ? config::OptimizerConfig::Type_Name(t.optimizer().type()) : dense_opt);
  }
  return true;
}

std::string Describe(const ShapeSettings& s) {
  // ShapeSettingsOf puts model.type and model.embedding_dim first.
  return "a " + s[0].second + " model (model.embedding_dim " + s[1].second + ")";
}

std::vector<std::string> Differences(const ShapeSettings& a, const ShapeSettings& b) {
  std::map<std::string, std::string> bm(b.begin(), b.end());
  std::set<std::string> seen;
  std::vector<std::string> out;
  auto add = [&](const std::string& path, const std::string& va, const std::string& vb) {
    out.push_back(path + " (checkpoint " + va + ", config " + vb + ")");
  };
  for (const auto& [path, va] : a) {
    seen.insert(path);
    auto it = bm.find(path);
    if (it == bm.end())
      add(path, va, "none");
    else if (it->second != va)
      add(path, va, it->second);
  }
  for (const auto& [path, vb] : b)
    if (seen.count(path) == 0) add(path, "none", vb);
  return out;
}

// `misfit` (a tensor or table of the checkpoint that does not fit `into`) in the user's terms: the
// model and settings of the config that wrote the checkpoint against the config given now.
Status ExplainMisfit(const Status& misfit, const std::string& dir, const std::string& written,
                     const std::string& wanted) {
  // A damaged file is not a question of configs.
  if (misfit.code() == StatusCode::kDataLoss) return misfit;
  ShapeSettings ckpt, cfg;
  // A checkpoint written without a config (a library caller's), or with one this binary cannot
  // parse: the misfit is all there is to say.
  if (!ShapeSettingsOf(written, &ckpt)) return misfit;
  if (!ShapeSettingsOf(wanted, &cfg))
    return Status(misfit.code(),
                  misfit.message() + " (the checkpoint was written by " + Describe(ckpt) + ")");
  std::vector<std::string> diffs = Differences(ckpt, cfg);
  if (diffs.empty()) return misfit;  // same settings: the message of the tensor is all we know
  std::string msg = "the checkpoint at " + dir + " was written by " + Describe(ckpt);
  const bool same_model = ckpt[0] == cfg[0] && ckpt[1] == cfg[1];
  if (same_model) {
    msg += " with other settings than the config's: ";
  } else {
    msg += ", the config says " + cfg[0].second + " (model.embedding_dim " + cfg[1].second + ")";
    // The headline already names type and width.
    diffs.erase(std::remove_if(diffs.begin(), diffs.end(),
                               [](const std::string& d) {
                                 return d.rfind("model.type ", 0) == 0 ||
                                        d.rfind("model.embedding_dim ", 0) == 0;
                               }),
                diffs.end());
    if (!diffs.empty()) msg += "; it also differs in ";
  }
  for (size_t i = 0; i < diffs.size(); ++i) msg += (i > 0 ? ", " : "") + diffs[i];
  msg +=
      ". Use the config of the run that wrote the checkpoint, or a checkpoint of this model "
      "(first misfit: " +
      misfit.message() + ")";
  return InvalidArgumentError(msg);
}

}  // namespace

std::string DescribeConfigModel(const std::string& config_text) {
  ShapeSettings s;
  return ShapeSettingsOf(config_text, &s) ? Describe(s) : std::string();
}

void AddDenseState(models::DenseParams<float>* params,
                   const std::vector<models::StateTensor<float>>& state, DenseOptimizer* optimizer,
                   CheckpointContent* content) {
  for (const auto& e : params->entries())
    content->tensors.push_back({"dense/" + e.name, params->value(e.offset), e.size});
  for (const auto& s : state) content->tensors.push_back({"model_state/" + s.name, s.data, s.size});
  if (optimizer == nullptr) return;
  for (int k = 0; k < 2; ++k) {
    std::vector<float>& st = k == 0 ? optimizer->state0() : optimizer->state1();
    if (static_cast<int64_t>(st.size()) != params->size()) continue;
    for (const auto& e : params->entries())
      content->tensors.push_back(
          {"dense_opt" + std::to_string(k) + "/" + e.name, st.data() + e.offset, e.size});
  }
}

StatusOr<std::vector<std::pair<int64_t, std::string>>> ListCheckpoints(const std::string& root) {
  IPS_ASSIGN_OR_RETURN(const auto names, ps::ListDir(root));
  std::vector<std::pair<int64_t, std::string>> out;
  for (const auto& n : names) {
    const int64_t step = StepOfName(n);
    if (step >= 0 && ps::IsDirectory(root + "/" + n)) out.emplace_back(step, n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ---- What a run records of its dataset, and where it may write -----------------------------

namespace {

std::string Hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

}  // namespace

std::string DatasetVocabulary::Describe(const std::string& field) const {
  return field + " '" + train_dir + "' (" + (format.empty() ? "" : format + ": ") +
         std::to_string(users) + " users, " + std::to_string(items) + " items, " +
         std::to_string(categories) + " categories, vocab.ips crc32c " + Hex32(crc32c) + ", " +
         std::to_string(bytes) + " bytes)";
}

std::string DatasetVocabulary::DescribeLayout() const {
  std::string rows;
  for (size_t i = 0; i < shard_rows.size(); ++i)
    rows += (i > 0 ? " + " : "") + std::to_string(shard_rows[i]);
  return std::to_string(shard_rows.size()) +
         (shard_rows.size() == 1 ? " shard of " : " shards of ") + rows +
         " training rows, protocol " + protocol;
}

DatasetVocabulary VocabularyOf(const std::string& train_dir, const Manifest& manifest) {
  DatasetVocabulary v;
  v.train_dir = train_dir;
  v.format = manifest.format;
  v.crc32c = manifest.vocab.crc;
  v.bytes = manifest.vocab.bytes;
  v.users = manifest.users;
  v.items = manifest.items;
  v.categories = manifest.categories;
  v.protocol = manifest.protocol;
  for (const ManifestFile& shard : manifest.shards) v.shard_rows.push_back(shard.train_examples);
  return v;
}

namespace {

// The layout lines of the vocabulary blob (absent from checkpoints written before them, and
// when the layout is unknown): "protocol=seqrec", "shard_rows=19381,19381".
std::string EncodeLayout(const DatasetVocabulary& v) {
  if (v.shard_rows.empty()) return "";
  std::string rows;
  for (size_t i = 0; i < v.shard_rows.size(); ++i)
    rows += (i > 0 ? "," : "") + std::to_string(v.shard_rows[i]);
  return "protocol=" + v.protocol + "\nshard_rows=" + rows + "\n";
}

}  // namespace

std::string EncodeVocabulary(const DatasetVocabulary& v) {
  // Text, one key=value a line: readable in a dump of the blobs, and fields can be added. The
  // path only names the dataset in messages: a newline in it must not end its line.
  std::string dir = v.train_dir;
  std::replace(dir.begin(), dir.end(), '\n', '?');
  return "train_dir=" + dir + "\nformat=" + v.format +
         "\nvocab_crc32c=" + std::to_string(v.crc32c) + "\nvocab_bytes=" + std::to_string(v.bytes) +
         "\nusers=" + std::to_string(v.users) + "\nitems=" + std::to_string(v.items) +
         "\ncategories=" + std::to_string(v.categories) + "\n" + EncodeLayout(v);
}

StatusOr<DatasetVocabulary> DecodeVocabulary(const std::string& blob) {
  std::map<std::string, std::string> kv;
  size_t begin = 0;
  while (begin < blob.size()) {
    size_t end = blob.find('\n', begin);
    if (end == std::string::npos) end = blob.size();
    const std::string line = blob.substr(begin, end - begin);
    begin = end + 1;
    if (line.empty()) continue;
    const size_t eq = line.find('=');
    if (eq == std::string::npos)
      return DataLossError(std::string("checkpoint blob '") + kVocabularyBlob + "': line '" + line +
                           "' is not key=value");
    kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  DatasetVocabulary v;
  v.train_dir = kv["train_dir"];
  v.format = kv["format"];
  auto number = [&kv](const char* key, uint64_t max, uint64_t* out) -> Status {
    const std::string& t = kv[key];
    uint64_t n = 0;
    const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
    const bool ok = !t.empty() && ec == std::errc() && end == t.data() + t.size();
    if (!ok || n > max)
      return DataLossError(std::string("checkpoint blob '") + kVocabularyBlob + "': field '" + key +
                           "' = '" + t + "' is not a number");
    *out = n;
    return Status::Ok();
  };
  uint64_t crc = 0;
  IPS_RETURN_IF_ERROR(number("vocab_crc32c", 0xffffffffULL, &crc));
  v.crc32c = static_cast<uint32_t>(crc);
  IPS_RETURN_IF_ERROR(number("vocab_bytes", UINT64_MAX, &v.bytes));
  IPS_RETURN_IF_ERROR(number("users", UINT64_MAX, &v.users));
  IPS_RETURN_IF_ERROR(number("items", UINT64_MAX, &v.items));
  IPS_RETURN_IF_ERROR(number("categories", UINT64_MAX, &v.categories));
  if (auto it = kv.find("shard_rows"); it != kv.end()) {
    const std::string& t = it->second;
    for (size_t begin = 0; begin <= t.size();) {
      size_t end = t.find(',', begin);
      if (end == std::string::npos) end = t.size();
      uint64_t n = 0;
      const auto [stop, ec] = std::from_chars(t.data() + begin, t.data() + end, n);
      if (end == begin || ec != std::errc() || stop != t.data() + end)
        return DataLossError(std::string("checkpoint blob '") + kVocabularyBlob +
                             "': field 'shard_rows' = '" + t + "' is not a list of numbers");
      v.shard_rows.push_back(n);
      begin = end + 1;
    }
    v.protocol = kv["protocol"];
  }
  return v;
}

StatusOr<std::optional<DatasetVocabulary>> RecordedOtherVocabulary(
    const std::string& checkpoint, const std::map<std::string, std::string>& blobs,
    const DatasetVocabulary& data) {
  auto it = blobs.find(kVocabularyBlob);
  if (it == blobs.end()) return std::optional<DatasetVocabulary>();  // older, or synthetic data
  auto recorded = DecodeVocabulary(it->second);
  if (!recorded.ok()) return recorded.status().WithContext(checkpoint);
  if (recorded->SameAs(data)) return std::optional<DatasetVocabulary>();
  return std::optional<DatasetVocabulary>(*std::move(recorded));
}

Status CheckCheckpointVocabulary(const std::string& checkpoint,
                                 const std::map<std::string, std::string>& blobs,
                                 const DatasetVocabulary& data) {
  IPS_ASSIGN_OR_RETURN(const std::optional<DatasetVocabulary> recorded,
                       RecordedOtherVocabulary(checkpoint, blobs, data));
  if (!recorded.has_value()) return Status::Ok();
  return InvalidArgumentError(
      "the checkpoint at " + checkpoint + " was trained on " + recorded->Describe() + ", but " +
      data.Describe() +
      " has another vocabulary: item, user and category ids are numbered per dataset, so the "
      "checkpoint's embedding rows would stand for other items. Set data.train_dir to the "
      "dataset the checkpoint was trained on (one converted again from the same input with the "
      "same filters, e.g. with other --eval_negatives, has the same vocabulary), or train this "
      "dataset from scratch");
}

namespace {

// The settings of a config that, with the dataset's layout, fix a training epoch's order
// (effective values: unset fields read as their defaults). known = false: no config text, or one
// without a data section (a library caller's placeholder, not the config of a dataset run).
struct EpochOrderSettings {
  bool known = false;
  uint64_t seed = 0;
  bool shuffle = true;
  int64_t batch_size = 0;
};

EpochOrderSettings EpochOrderSettingsOf(const std::string& config_text) {
  EpochOrderSettings s;
  if (config_text.empty()) return s;
  auto cfg = ParseConfigText(config_text, "checkpoint config");
  if (!cfg.ok() || !cfg->has_data()) return s;
  s.known = true;
  s.seed = cfg->data().seed();
  s.shuffle = cfg->data().shuffle();
  s.batch_size = cfg->data().batch_size();
  return s;
}

// A setting that differs between the checkpoint's run and this one.
struct OrderChange {
  std::string field;  // "data.seed"
  std::string was;    // the checkpoint's run's value
  std::string now;    // this run's
  std::string why;    // what it decides in the epoch
  std::string fix;    // how to continue the checkpoint's run
};

std::string BoolText(bool b) { return b ? "true" : "false"; }

}  // namespace

Status CheckResumeEpochOrder(const std::string& checkpoint, const std::string& recorded_config,
                             const std::map<std::string, std::string>& blobs,
                             const std::string& config_text, const DatasetVocabulary& data,
                             int64_t examples_per_epoch) {
  // The position: "run/dataset" = {epoch, position, ...} (worker/internal/run_steps.h, shared
  // with the mpirun workers). Without it (synthetic data) there is no epoch order to keep; a
  // malformed one is reported by the run that unpacks it.
  auto run = blobs.find("run/dataset");
  if (run == blobs.end() || run->second.size() != 7 * sizeof(int64_t)) return Status::Ok();
  int64_t state[2];
  std::memcpy(state, run->second.data(), sizeof(state));
  const int64_t epoch = state[0], position = state[1];

  std::vector<OrderChange> changes;
  const EpochOrderSettings was = EpochOrderSettingsOf(recorded_config);
  const EpochOrderSettings now = EpochOrderSettingsOf(config_text);
  if (was.known && now.known) {
    if (was.seed != now.seed)
      changes.push_back({"data.seed", std::to_string(was.seed), std::to_string(now.seed),
                         "it draws the epoch's shuffle and its sampled negatives",
                         "set data.seed back to " + std::to_string(was.seed)});
    if (was.shuffle != now.shuffle)
      changes.push_back({"data.shuffle", BoolText(was.shuffle), BoolText(now.shuffle),
                         "it decides whether the epoch's order is shuffled",
                         "set data.shuffle back to " + BoolText(was.shuffle)});
    if (was.batch_size != now.batch_size)
      changes.push_back({"data.batch_size", std::to_string(was.batch_size),
                         std::to_string(now.batch_size),
                         "it cuts the rest of the epoch into other batches",
                         "set data.batch_size back to " + std::to_string(was.batch_size)});
  }
  if (auto it = blobs.find(kVocabularyBlob); it != blobs.end()) {
    auto recorded = DecodeVocabulary(it->second);
    if (!recorded.ok()) return recorded.status().WithContext(checkpoint);
    if (!recorded->shard_rows.empty() && !data.shard_rows.empty() &&
        !recorded->SameLayoutAs(data)) {
      std::string like = "--shards " + std::to_string(recorded->shard_rows.size());
      if (recorded->protocol != data.protocol) like += " --protocol " + recorded->protocol;
      changes.push_back({"data.train_dir",
                         "'" + recorded->train_dir + "' (" + recorded->DescribeLayout() + ")",
                         "'" + data.train_dir + "' (" + data.DescribeLayout() + ")",
                         "the epoch's order is a permutation of the rows of every shard in turn",
                         "set data.train_dir back to '" + recorded->train_dir +
                             "' (or to the same input converted again with " + like + ")"});
    }
  }
  if (changes.empty()) return Status::Ok();

  std::string what;
  for (size_t i = 0; i < changes.size(); ++i) {
    const OrderChange& c = changes[i];
    what += (i > 0 ? "; " : "") + c.field + " is " + c.now + ", the checkpoint's run had " + c.was +
            ": " + c.why;
  }
  const bool boundary = position == 0 || position == examples_per_epoch;
  if (boundary) {
    // The saved position is the epoch's start or end, which every order agrees on; the epochs
    // after it are drawn with this run's settings. Legitimate (e.g. another batch size for the
    // epochs added by a larger train.epochs), but the run stops repeating the one it continues.
    LOG(WARNING) << "resuming the checkpoint at " << checkpoint << " at the "
                 << (position == 0 ? "start" : "end") << " of epoch " << epoch + 1
                 << " with other settings than the run that wrote it: " << what
                 << ". The epochs from here on follow this run's settings, so the run will not "
                    "repeat an uninterrupted run of either";
    return Status::Ok();
  }
  std::string fix;
  for (size_t i = 0; i < changes.size(); ++i)
    fix += (i == 0 ? "" : i + 1 == changes.size() ? " and " : ", ") + changes[i].fix;
  return InvalidArgumentError(
      "the checkpoint at " + checkpoint + " was saved in the middle of epoch " +
      std::to_string(epoch + 1) + " (at position " + std::to_string(position) +
      " of the epoch's order), which this run would continue with other examples or other "
      "batches than the run that wrote it, so the result would match neither run: " +
      what + ". To continue that run, " + fix +
      "; or train from scratch (a checkpoint saved at the end of an epoch accepts these changes)");
}

Status CheckResumeFitsRun(const config::Config& cfg, const std::string& checkpoint,
                          const std::map<std::string, std::string>& blobs) {
  // The first value of blob `name` of n int64 values, when it is there with that size.
  auto first = [&blobs](const char* name, size_t n, int64_t* v) {
    auto it = blobs.find(name);
    if (it == blobs.end() || it->second.size() != n * sizeof(int64_t)) return false;
    std::memcpy(v, it->second.data(), sizeof(int64_t));
    return true;
  };
  int64_t v = 0;
  if (!cfg.data().has_synthetic()) {
    // "run/dataset" = {epoch (0-based), position, ...} (worker/internal/run_steps.h).
    const int64_t epochs = cfg.train().epochs();
    if (!first("run/dataset", 7, &v) || v < epochs) return Status::Ok();
    const std::string need = std::to_string(v + 1);
    return FailedPreconditionError("the checkpoint at " + checkpoint + " was saved in epoch " +
                                   need + ", beyond this run's train.epochs " +
                                   std::to_string(epochs) + ": set train.epochs to at least " +
                                   need + " to continue it (--set train.epochs=" + need + ")");
  }
  // "run/synthetic_step" = {the trainer's step, warm-up included}.
  const config::SyntheticConfig& syn = cfg.data().synthetic();
  int64_t steps = syn.steps();
  const int64_t max_steps = cfg.train().max_steps();
  if (max_steps > 0) steps = std::min(steps, max_steps);
  if (!first("run/synthetic_step", 1, &v) || v <= syn.warmup_steps() + steps) return Status::Ok();
  const int64_t need = v - syn.warmup_steps();
  std::string fields, sets;  // what falls short of `need`
  for (const auto& [field, value] :
       {std::pair<const char*, int64_t>{"data.synthetic.steps", syn.steps()},
        {"train.max_steps", max_steps > 0 ? max_steps : need}}) {
    if (value >= need) continue;
    fields += (fields.empty() ? "" : " and ") + std::string(field);
    sets += (sets.empty() ? "--set " : " --set ") + std::string(field) + "=" + std::to_string(need);
  }
  return FailedPreconditionError(
      "the checkpoint at " + checkpoint + " was saved at step " + std::to_string(v) +
      ", beyond this run's " + std::to_string(syn.warmup_steps() + steps) +
      " steps (data.synthetic.warmup_steps " + std::to_string(syn.warmup_steps()) +
      " + data.synthetic.steps " + std::to_string(syn.steps()) +
      (max_steps > 0 ? ", capped by train.max_steps " + std::to_string(max_steps) : "") +
      "): set " + fields + " to at least " + std::to_string(need) + " to continue it (" + sets +
      ")");
}

Status CheckCheckpointDirForRun(const std::string& dir, int64_t resumed_step) {
  if (!ps::IsDirectory(dir)) return Status::Ok();  // created empty by the writer
  auto list = ListCheckpoints(dir);
  if (!list.ok())
    return InternalError("checkpoint.dir " + dir + ": cannot list: " + list.status().message());
  if (list->empty()) return Status::Ok();
  const auto& [newest_step, newest] = list->back();
  const std::string newest_path = dir + "/" + newest;
  if (resumed_step < 0)
    return FailedPreconditionError(
        "checkpoint.dir " + dir + " already holds " + std::to_string(list->size()) +
        " checkpoint(s) of an earlier run (newest: " + newest_path +
        ") and this run starts fresh (no --resume): keep_last retention keeps the newest by "
        "step, so this run's lower steps would be deleted before the earlier run's, and a later "
        "--resume " +
        dir + " would continue the earlier run. Continue that run with --resume " + dir +
        ", or give this run an empty or new checkpoint.dir");
  if (newest_step <= resumed_step) return Status::Ok();
  int newer = 0;
  for (const auto& entry : *list)
    if (entry.first > resumed_step) ++newer;
  const std::string refused = "checkpoint.dir " + dir + " holds " + std::to_string(newer) +
                              " checkpoint(s) newer than the resumed step " +
                              std::to_string(resumed_step) + " (newest: " + newest_path +
                              "): this run would overwrite them or keep_last retention would "
                              "remove its own in their favour. ";
  // --resume DIR continues the newest checkpoint that validates: advising it is right only when
  // one newer than the resumed step does. When none does, --resume DIR is what resolved to the
  // resumed step (or resolves to it), and the newer ones must go first.
  std::vector<std::string> damaged;  // newer than the newest one that loads, newest first
  std::string loadable;              // the newest checkpoint newer than resumed_step that loads
  for (auto it = list->rbegin(); it != list->rend() && it->first > resumed_step; ++it) {
    auto reader = CheckpointReader::OpenCheckpoint(dir, it->second);
    if (reader.ok()) {
      loadable = dir + "/" + it->second;
      break;
    }
    damaged.push_back(dir + "/" + it->second + " (" + reader.status().ToString() + ")");
  }
  if (damaged.empty())
    return FailedPreconditionError(
        refused + "Continue from the newest with --resume " + dir +
        ", or give this run an empty or new checkpoint.dir (or remove the newer checkpoints)");
  std::string which;
  for (size_t i = 0; i < damaged.size(); ++i) which += (i > 0 ? "; " : "") + damaged[i];
  const std::string cannot =
      "Of these, " + std::to_string(damaged.size()) + " cannot be loaded: " + which + ". ";
  if (!loadable.empty())
    return FailedPreconditionError(refused + cannot + "Move the damaged checkpoint(s) out of " +
                                   dir + ", then continue from the newest that loads (" + loadable +
                                   ") with --resume " + dir +
                                   "; or give this run an empty or new checkpoint.dir");
  return FailedPreconditionError(
      refused + cannot + "Move the damaged checkpoint(s) out of " + dir +
      " and run this command again, or give this run an empty or new checkpoint.dir");
}

// ---- CheckpointWriter ---------------------------------------------------------------------------

Status CheckpointWriter::CheckDir(const std::string& dir) {
  if (dir.empty()) return InvalidArgumentError("checkpoint: empty dir");
  // Before the permission test, which root passes on /proc and /sys: Create would fail there, or
  // make a kernel object (a cgroup) of DIR.
  IPS_RETURN_IF_ERROR(ps::CheckNotOnPseudoFileSystem(dir, "checkpoint.dir", "checkpoint files"));
  auto refuse = [&dir](const std::string& why) {
    return FailedPreconditionError("checkpoint.dir " + dir + " " + why);
  };
  // Create makes every missing directory on the way (ps::MakeDirs), so what decides is the
  // nearest path that exists: DIR itself, or the ancestor DIR would be created in.
  auto trim = [](std::string p) {
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    return p;
  };
  const std::string target = trim(dir);
  std::string at = target;
  struct stat st;
  while (::stat(at.c_str(), &st) != 0) {
    if ((errno != ENOENT && errno != ENOTDIR) || at == "." || at == "/")
      return refuse("cannot be checked: " + at + ": " + std::strerror(errno));
    const size_t slash = at.find_last_of('/');
    at = slash == std::string::npos ? "." : slash == 0 ? "/" : trim(at.substr(0, slash));
  }
  const bool exists = at == target;
  if (!S_ISDIR(st.st_mode))
    return refuse(exists ? "exists and is not a directory"
                         : "cannot be created: " + at + " is not a directory");
  // Search and write permission: to create the next directory in `at`, or DIR/LOCK in DIR.
  if (::access(at.c_str(), W_OK | X_OK) != 0)
    return refuse(exists ? std::string("is not writable: ") + std::strerror(errno)
                         : "cannot be created in " + at + ": " + std::strerror(errno));
  return Status::Ok();
}

Status CheckpointWriter::CheckNotLocked(const std::string& dir) {
  return DirLock::CheckNotLocked(dir, CheckpointLockLabel());
}

StatusOr<std::unique_ptr<CheckpointWriter>> CheckpointWriter::Create(
    const CheckpointOptions& options) {
  IPS_RETURN_IF_ERROR(CheckDir(options.dir));
  if (options.keep_last < 1)
    return InvalidArgumentError("checkpoint: keep_last " + std::to_string(options.keep_last) +
                                " < 1");
  if (options.full_every < 1)
    return InvalidArgumentError("checkpoint: full_every " + std::to_string(options.full_every) +
                                " < 1");
  IPS_RETURN_IF_ERROR(ps::MakeDirs(options.dir));
  // The lock comes first: the cleanup below would delete a live writer's staging directory.
  IPS_ASSIGN_OR_RETURN(std::unique_ptr<DirLock> lock,
                       DirLock::Acquire(options.dir, CheckpointLockLabel()));
  std::unique_ptr<CheckpointWriter> writer(new CheckpointWriter(options, std::move(lock)));
  IPS_ASSIGN_OR_RETURN(const auto names, ps::ListDir(options.dir));
  for (const auto& n : names) {
    // Leftovers of a writer killed mid-write or mid-replace: never visible as checkpoints.
    if (n.rfind("tmp-", 0) == 0 || n.rfind("trash-", 0) == 0) ps::RemoveTree(options.dir + "/" + n);
  }
  return writer;
}

StatusOr<std::vector<CheckpointFile>> WriteTableShards(
    const std::string& staging_dir, int rank, const std::vector<ps::DynamicTable*>& tables,
    const std::map<std::string, uint32_t>* since_epochs,
    const std::function<Status(const std::string&)>& fault_hook) {
  IPS_ASSIGN_OR_RETURN(
      const std::vector<ps::TableShardFile> shards,
      ps::WriteTableShardFiles(staging_dir, rank, tables, since_epochs, fault_hook));
  std::vector<CheckpointFile> files;
  for (const ps::TableShardFile& s : shards) files.push_back(CheckpointFileOf(s));
  return files;
}

CheckpointFile CheckpointFileOf(const ps::TableShardFile& s) {
  CheckpointFile f;
  f.name = s.name;
  f.bytes = s.info.bytes;
  f.crc32c = s.info.crc32c;
  f.role = CheckpointFile::kTable;
  f.rank = s.rank;
  f.table = s.table;
  f.rows = s.info.rows;
  f.epoch = s.info.epoch;
  return f;
}

Status CheckpointWriter::FireHook(const std::string& event) {
  if (!o_.fault_hook) return Status::Ok();
  Status s = o_.fault_hook(event);
  if (!s.ok()) hook_stopped_ = true;
  return s;
}

bool CheckpointWriter::NextIsIncremental() const {
  return o_.incremental && !last_committed_.empty() && since_full_ < o_.full_every - 1;
}

StatusOr<std::string> CheckpointWriter::Begin(int64_t step) {
  const std::string tmp = o_.dir + "/tmp-" + std::to_string(step) + "-" +
                          std::to_string(::getpid()) + "-" + std::to_string(counter_++);
  IPS_RETURN_IF_ERROR(ps::MakeDirs(tmp));
  return tmp;
}

StatusOr<CheckpointInfo> CheckpointWriter::Commit(int64_t step, const std::string& staging,
                                                  const CheckpointContent& content,
                                                  const std::vector<CheckpointFile>& table_files) {
  Timer timer;
  {
    std::set<std::string> names;
    for (const auto& t : content.tensors) {
      if (!names.insert(t.name).second)
        return InvalidArgumentError("checkpoint: duplicate tensor '" + t.name + "'");
      if (t.size < 0 || (t.size > 0 && t.data == nullptr))
        return InvalidArgumentError("checkpoint: tensor '" + t.name + "' has no data");
    }
  }
  const bool incremental = NextIsIncremental();
  ckpt::CheckpointManifest m;
  m.set_format_version(kFormatVersion);
  m.set_step(step);
  m.set_kind(incremental ? ckpt::CheckpointManifest::INCREMENTAL : ckpt::CheckpointManifest::FULL);
  if (incremental) m.set_parent(last_committed_);
  m.set_config_text(content.config_text);
  m.set_unix_time_ms(NowMs());
  CheckpointInfo info;
  info.step = step;
  info.incremental = incremental;
  info.parent = incremental ? last_committed_ : "";

  std::map<std::string, std::string> blobs = content.blobs;
  if (content.vocabulary.has_value())
    blobs[kVocabularyBlob] = EncodeVocabulary(*content.vocabulary);
  IPS_ASSIGN_OR_RETURN(const ps::FileDigest dense,
                       WriteDenseFile(staging + "/" + kDenseName, content.tensors, blobs));
  {
    auto* f = m.add_files();
    f->set_name(kDenseName);
    f->set_bytes(dense.bytes);
    f->set_crc32c(dense.crc32c);
    f->set_role(ckpt::FileEntry::DENSE);
    info.bytes += dense.bytes;
  }
  IPS_RETURN_IF_ERROR(FireHook(std::string("file:") + kDenseName));
  std::set<int> ranks;
  for (const auto& tf : table_files) {
    auto* f = m.add_files();
    f->set_name(tf.name);
    f->set_bytes(tf.bytes);
    f->set_crc32c(tf.crc32c);
    f->set_role(ckpt::FileEntry::TABLE);
    f->set_rank(tf.rank);
    f->set_table(tf.table);
    f->set_rows(tf.rows);
    f->set_epoch(tf.epoch);
    ranks.insert(tf.rank);
    info.bytes += tf.bytes;
    info.table_rows += tf.rows;
  }
  m.set_num_table_writers(static_cast<int32_t>(std::max<size_t>(1, ranks.size())));
  IPS_RETURN_IF_ERROR(WriteManifest(staging + "/" + kManifestName, m));
  IPS_RETURN_IF_ERROR(ps::FsyncDir(staging));
  IPS_RETURN_IF_ERROR(FireHook("publish"));

  const std::string name = CkptName(step);
  const std::string final_dir = o_.dir + "/" + name;
  std::string trash;
  if (ps::PathExists(final_dir)) {
    // Replacing a checkpoint of the same step (e.g. SIGTERM right after a periodic one): move the
    // old one aside first; a crash in between leaves LATEST naming a missing directory, which
    // the reader answers with the newest remaining checkpoint.
    trash = o_.dir + "/trash-" + name + "-" + std::to_string(::getpid());
    if (std::rename(final_dir.c_str(), trash.c_str()) != 0)
      return InternalError("rename " + final_dir + " -> " + trash + " failed");
  }
  if (std::rename(staging.c_str(), final_dir.c_str()) != 0)
    return InternalError("rename " + staging + " -> " + final_dir + " failed");
  IPS_RETURN_IF_ERROR(ps::FsyncDir(o_.dir));
  IPS_RETURN_IF_ERROR(ps::WriteFileAtomically(o_.dir + "/" + kLatestName, name + "\n"));
  if (!trash.empty()) ps::RemoveTree(trash);

  last_committed_ = name;
  since_full_ = incremental ? since_full_ + 1 : 0;
  info.path = final_dir;
  info.files = m.files_size();
  Retain();
  info.seconds = timer.Seconds();
  return info;
}

StatusOr<CheckpointInfo> CheckpointWriter::Write(int64_t step, const CheckpointContent& content) {
  Timer timer;
  const bool incremental = NextIsIncremental();
  IPS_ASSIGN_OR_RETURN(const std::string staging, Begin(step));
  // A real failure (disk full) removes the staging directory; a fault-hook stop leaves it, as a
  // killed process would.
  hook_stopped_ = false;
  auto files = WriteTableShards(staging, 0, content.tables, incremental ? &table_epochs_ : nullptr,
                                [this](const std::string& e) { return FireHook(e); });
  StatusOr<CheckpointInfo> committed = files.ok() ? Commit(step, staging, content, *files)
                                                  : StatusOr<CheckpointInfo>(files.status());
  if (!committed.ok()) {
    if (!hook_stopped_ && ps::IsDirectory(staging)) ps::RemoveTree(staging);
    return committed.status();
  }
  CheckpointInfo info = std::move(*committed);
  // Committed: later incremental checkpoints are relative to this one.
  table_epochs_.clear();
  for (size_t i = 0; i < files->size(); ++i) {
    content.tables[i]->DiscardChangesThrough((*files)[i].epoch);
    table_epochs_[(*files)[i].table] = (*files)[i].epoch;
  }
  info.seconds = timer.Seconds();
  return info;
}

void CheckpointWriter::Retain() {
  auto list = ListCheckpoints(o_.dir);
  if (!list.ok()) return;
  const auto& all = *list;
  if (static_cast<int>(all.size()) <= o_.keep_last) return;
  std::set<std::string> keep;
  // Keeps a checkpoint and its chain of parents.
  auto keep_chain = [&](std::string name) {
    for (int guard = 0; guard < 10000 && !name.empty() && keep.insert(name).second; ++guard) {
      auto m = ReadManifest(o_.dir + "/" + name);
      if (!m.ok() || m->kind() != ckpt::CheckpointManifest::INCREMENTAL) break;
      name = m->parent();
    }
  };
  for (size_t i = all.size() - static_cast<size_t>(o_.keep_last); i < all.size(); ++i)
    keep_chain(all[i].second);
  // The checkpoint just written (LATEST names it, the run reports it) is never removed, even
  // when DIR holds higher steps (another run's, which CheckCheckpointDirForRun refuses at the
  // start; a DIR without flock, or a library caller, can still get there).
  keep_chain(last_committed_);
  // A reader may be reading any of these (`ips eval` or `ips export` on this run's root). Each is
  // renamed away before its files are deleted, so that the reader finds it whole or gone, never
  // half deleted (which would read as damaged: CheckpointReader::Open tells the two apart by the
  // directory), and newest first, so that an incremental checkpoint goes before the parent it
  // needs. A leftover trash-* of a killed writer is removed by the next writer (Create).
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (keep.count(it->second) != 0) continue;
    const std::string dir = o_.dir + "/" + it->second;
    const std::string trash = o_.dir + "/trash-" + it->second + "-" + std::to_string(::getpid());
    ps::RemoveTree(std::rename(dir.c_str(), trash.c_str()) == 0 ? trash : dir);
  }
}

// ---- CheckpointReader ---------------------------------------------------------------------------

namespace {

// CheckpointReader::SetRaceHookForTesting's hook (tests only; empty otherwise).
std::function<void(const std::string&, const std::string&)>& RaceHook() {
  static auto* hook = new std::function<void(const std::string&, const std::string&)>();
  return *hook;
}
void FireRaceHook(const std::string& event, const std::string& dir) {
  if (RaceHook()) RaceHook()(event, dir);
}

// How many times a root picks its newest checkpoint when the one picked is removed while being
// read. Retention removes a checkpoint only once keep_last newer ones exist, so each pick has
// keep_last checkpoint intervals to finish reading: more picks only help a reader much slower
// than the writer, which is better told so.
constexpr int kMaxPicks = 5;

// The identity of directory `dir`, or nullopt when it is none (any more).
std::optional<std::pair<uint64_t, uint64_t>> DirIdentity(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return std::nullopt;
  return std::make_pair(static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino));
}

std::string ParentDir(const std::string& dir) {
  const size_t slash = dir.find_last_of('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : dir.substr(0, slash);
}

// What a run writing checkpoints to `root` does to the ones being read.
std::string RetentionNote(const std::string& root) {
  return "a run still writing checkpoints to " + root +
         " removes all but its checkpoint.keep_last newest ones";
}

// The error of a read of checkpoint `dir` that failed with `why` because the checkpoint was
// removed or replaced under it: a message that does not read as a damaged checkpoint.
Status RemovedWhileReading(const std::string& dir, const Status& why) {
  return NotFoundError(dir + ": checkpoint removed while being read (another process removed or " +
                       "replaced it: " + RetentionNote(ParentDir(dir)) +
                       "); the read failed with " + why.ToString());
}

std::string TrimSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

// Whether `path` (trimmed) is one checkpoint, a directory with a MANIFEST, as *root and *name.
bool IsOneCheckpoint(const std::string& path, std::string* root, std::string* name) {
  if (!ps::PathExists(path + "/" + kManifestName)) return false;
  const size_t slash = path.find_last_of('/');
  *root = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  *name = slash == std::string::npos ? path : path.substr(slash + 1);
  return true;
}

}  // namespace

void CheckpointReader::SetRaceHookForTesting(
    std::function<void(const std::string& event, const std::string& dir)> hook) {
  RaceHook() = std::move(hook);
}

StatusOr<CheckpointHead> PeekCheckpoint(const std::string& path_in) {
  const std::string path = TrimSlashes(path_in);
  if (!ps::IsDirectory(path)) return NotFoundError(path + ": no such checkpoint directory");
  CheckpointHead head;
  std::string root, name;
  std::unique_ptr<CheckpointReader> reader;  // a root's, which resolved it
  if (IsOneCheckpoint(path, &root, &name)) {
    head.dir = root + "/" + name;
  } else {
    // A root resolves to its newest checkpoint that validates, which only validating tells. The
    // reader that follows (Open) warns about what the resolution skipped.
    IPS_ASSIGN_OR_RETURN(reader, CheckpointReader::Open(path, /*warn=*/false));
    head.dir = reader->dir();
  }
  auto manifest = ReadManifest(head.dir);
  // Removed since the root resolved to it (a running job's retention): say so.
  if (!manifest.ok() && reader != nullptr) return reader->ExplainReadError(manifest.status());
  IPS_ASSIGN_OR_RETURN(const ckpt::CheckpointManifest m, std::move(manifest));
  head.step = m.step();
  head.config_text = m.config_text();
  for (const auto& f : m.files())
    if (f.role() == ckpt::FileEntry::DENSE && !f.name().empty() &&
        f.name().find('/') == std::string::npos && f.name() != "..")
      head.dense_path = head.dir + "/" + f.name();
  if (head.dense_path.empty()) return NotFoundError(head.dir + "/MANIFEST: lists no dense file");
  return head;
}

StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::Open(const std::string& path_in,
                                                                   bool warn) {
  const std::string path = TrimSlashes(path_in);
  if (!ps::IsDirectory(path)) return NotFoundError(path + ": no such checkpoint directory");
  std::string root, name;
  if (IsOneCheckpoint(path, &root, &name)) {
    std::string removed;
    auto r = OpenOne(root, name, /*listed=*/true, &removed);
    if (!r.ok() && !removed.empty()) return RemovedWhileReading(removed, r.status());
    return r;
  }
  return OpenRoot(path, warn);
}

StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::OpenRoot(const std::string& root,
                                                                       bool warn) {
  // Each pick lists the root afresh: the checkpoint picked may be removed while being read by the
  // retention of a run still writing to the root, which has written newer ones by then.
  for (int pick = 1;; ++pick) {
    // LATEST, as a hint: what it names is reported when it is not what the root resolves to.
    std::string latest;
    if (auto text = ps::ReadSmallFile(root + "/" + kLatestName); text.ok()) {
      latest = *text;
      while (!latest.empty() && (latest.back() == '\n' || latest.back() == ' ')) latest.pop_back();
      if (StepOfName(latest) < 0) {
        if (warn && pick == 1)
          LOG(WARNING) << root << "/" << kLatestName << " names '" << latest
                       << "', not a ckpt-<step> directory; ignoring it";
        latest.clear();
      }
    }
    IPS_ASSIGN_OR_RETURN(const auto list, ListCheckpoints(root));
    if (list.empty()) {
      if (!latest.empty())
        return NotFoundError(root + "/" + kLatestName + ": names '" + latest +
                             "', which is missing, and there is no other ckpt-<step>");
      return NotFoundError(root + ": no checkpoint (no LATEST, no ckpt-<step>)");
    }
    // Newest first. A ckpt-<step> is renamed into place only once complete and fsynced, so the
    // newest one is the run's last checkpoint even when LATEST, replaced after the rename, still
    // names the one before (a writer killed in between); one that does not validate (damaged
    // since) is skipped, never silently.
    std::vector<std::pair<std::string, Status>> skipped;  // (ROOT/ckpt-N, why), newest first
    std::string removed;  // the checkpoint removed under this pick, if any
    Status removed_why;
    for (auto it = list.rbegin(); it != list.rend(); ++it) {
      auto reader = OpenOne(root, it->second, /*listed=*/true, &removed);
      if (!reader.ok() && !removed.empty()) {
        removed_why = reader.status();
        break;  // pick again: the older ones are gone too, and newer ones have appeared
      }
      if (!reader.ok()) {
        skipped.emplace_back(root + "/" + it->second, reader.status());
        continue;
      }
      if (warn) {
        const std::string& name = it->second;
        const std::string using_it = root + "/" + name;
        for (const auto& [dir, why] : skipped)
          LOG(WARNING) << "checkpoint " << dir << " cannot be loaded (" << why.ToString()
                       << "); using " << using_it << ", the newest checkpoint of " << root
                       << " that can";
        if (!latest.empty() && latest != name) {
          if (!ps::IsDirectory(root + "/" + latest)) {
            // A writer killed between moving a same-step checkpoint aside and updating LATEST.
            LOG(WARNING) << root << "/" << kLatestName << " names '" << latest
                         << "', which is missing; using " << using_it
                         << " (the newest ckpt-<step> that loads) instead";
          } else if (StepOfName(latest) < it->first) {
            LOG(WARNING) << root << "/" << kLatestName << " names '" << latest << "', but "
                         << using_it
                         << " is newer and complete (a writer stopped after publishing it, "
                            "before updating LATEST); using it";
          }
          // Else LATEST names a newer checkpoint that does not load: reported as skipped above.
        }
      }
      return reader;
    }
    if (!removed.empty()) {
      if (pick == kMaxPicks)
        return NotFoundError(
            root + ": the checkpoint picked was removed while being read " +
            std::to_string(kMaxPicks) + " times in a row (" + RetentionNote(root) +
            ", faster than they are read here; last: " + removed + ", whose read failed with " +
            removed_why.ToString() +
            "). Try again, raise that run's checkpoint.keep_last, or read a copy of a checkpoint");
      if (warn)
        LOG(WARNING) << "checkpoint " << removed << " was removed while being read ("
                     << RetentionNote(root) << "); picking the newest checkpoint of " << root
                     << " again";
      continue;
    }
    // None loads: the newest one's error, which names the file, and the others'.
    const Status& newest_error = skipped.front().second;
    if (skipped.size() == 1) return newest_error;
    std::string others;
    for (size_t i = 1; i < skipped.size(); ++i)
      others += (i > 1 ? "; " : "") + skipped[i].second.ToString();
    return Status(newest_error.code(), newest_error.message() + " (no checkpoint of " + root +
                                           " loads; the " + std::to_string(skipped.size() - 1) +
                                           " older: " + others + ")");
  }
}

StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::OpenCheckpoint(
    const std::string& root, const std::string& name) {
  std::string removed;
  auto r = OpenOne(root, name, /*listed=*/false, &removed);
  if (!r.ok() && !removed.empty()) return RemovedWhileReading(removed, r.status());
  return r;
}

StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::OpenOne(const std::string& root,
                                                                      const std::string& name,
                                                                      bool listed,
                                                                      std::string* removed) {
  removed->clear();
  std::vector<std::pair<std::string, DirId>> read;
  auto r = ReadChain(root, name, &read);
  if (r.ok()) return r;
  // A directory that is gone or another one since it was read was removed or replaced under the
  // reader (retention renames a checkpoint away before deleting its files); a damaged one is
  // still the same directory.
  for (const auto& [dir, id] : read) {
    if (DirIdentity(dir) != id) {
      *removed = dir;
      return r;
    }
  }
  if (read.empty() && listed && !DirIdentity(root + "/" + name)) *removed = root + "/" + name;
  return r;
}

StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::ReadChain(
    const std::string& root, const std::string& name,
    std::vector<std::pair<std::string, DirId>>* read) {
  std::unique_ptr<CheckpointReader> r(new CheckpointReader());
  // Follow the chain to its full checkpoint.
  std::vector<std::pair<std::string, ckpt::CheckpointManifest>> chain;
  std::set<std::string> seen;
  for (std::string cur = name;;) {
    if (!seen.insert(cur).second)
      return InvalidArgumentError(root + ": checkpoint chain cycles at " + cur);
    const std::string dir = root + "/" + cur;
    const std::optional<DirId> id = DirIdentity(dir);
    if (!id) {
      if (chain.empty()) return NotFoundError(dir + ": no such checkpoint directory");
      return NotFoundError(dir + ": missing (parent of " + chain.back().first + ")");
    }
    read->emplace_back(dir, *id);
    IPS_ASSIGN_OR_RETURN(ckpt::CheckpointManifest m, ReadManifest(dir));
    const bool inc = m.kind() == ckpt::CheckpointManifest::INCREMENTAL;
    std::string parent = m.parent();
    chain.emplace_back(dir, std::move(m));
    if (!inc) break;
    if (parent.empty())
      return InvalidArgumentError(dir + "/MANIFEST: incremental without a parent");
    cur = parent;
  }
  for (auto it = read->rbegin(); it != read->rend(); ++it) r->dir_ids_.push_back(it->second);
  std::reverse(chain.begin(), chain.end());
  FireRaceHook("picked", root + "/" + name);
  const ckpt::CheckpointManifest& newest = chain.back().second;
  r->step_ = newest.step();
  r->config_text_ = newest.config_text();
  // Every file of every link: existence, size, checksum; then table file structure.
  for (const auto& [dir, m] : chain) {
    std::vector<FileRef> refs;
    for (const auto& f : m.files()) {
      if (f.name().empty() || f.name().find('/') != std::string::npos || f.name() == "..")
        return DataLossError(dir + "/MANIFEST: bad file name '" + f.name() + "'");
      const std::string p = dir + "/" + f.name();
      IPS_RETURN_IF_ERROR(ps::VerifyFile(p, f.bytes(), f.crc32c()));
      if (f.role() == ckpt::FileEntry::TABLE) {
        IPS_ASSIGN_OR_RETURN(const ps::TableFileHeader h, ps::VerifyTableFile(p));
        if (h.name != f.table())
          return DataLossError(p + ": holds table '" + h.name + "', manifest says '" + f.table() +
                               "'");
      }
      refs.push_back({p, f.table(), f.rank(), static_cast<int>(f.role())});
    }
    r->dirs_.push_back(dir);
    r->files_.push_back(std::move(refs));
  }
  return r;
}

std::vector<std::string> CheckpointReader::table_names() const {
  std::set<std::string> names;
  for (const auto& f : files_.back())
    if (f.role == ckpt::FileEntry::TABLE) names.insert(f.table);
  return {names.begin(), names.end()};
}

std::vector<std::vector<std::string>> CheckpointReader::TableFiles(const std::string& table) const {
  std::vector<std::vector<std::string>> groups;
  for (const auto& link : files_) {
    std::vector<std::string> g;
    for (const auto& f : link)
      if (f.role == ckpt::FileEntry::TABLE && f.table == table) g.push_back(f.path);
    groups.push_back(std::move(g));
  }
  return groups;
}

bool CheckpointReader::Removed() const {
  for (size_t i = 0; i < dirs_.size(); ++i)
    if (DirIdentity(dirs_[i]) != dir_ids_[i]) return true;
  return false;
}

Status CheckpointReader::ExplainReadError(const Status& error) const {
  if (error.ok()) return error;
  // Newest link first: the checkpoint that was asked for, when it is among the ones removed.
  for (size_t i = dirs_.size(); i-- > 0;)
    if (DirIdentity(dirs_[i]) != dir_ids_[i]) return RemovedWhileReading(dirs_[i], error);
  return error;
}

Status CheckpointReader::ReadDense(std::map<std::string, std::vector<float>>* tensors,
                                   std::map<std::string, std::string>* blobs) const {
  // The dense state of an incremental checkpoint is complete: read the newest link only.
  for (const auto& f : files_.back())
    if (f.role == ckpt::FileEntry::DENSE)
      return ExplainReadError(ReadDenseFile(f.path, tensors, blobs));
  return NotFoundError(dir() + "/MANIFEST: lists no dense file");
}

Status CheckpointReader::Restore(const CheckpointContent& into,
                                 std::map<std::string, std::string>* blobs,
                                 const ps::KeyFilter& keep) const {
  // 1. Check everything.
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::string> saved_blobs;
  IPS_RETURN_IF_ERROR(ReadDense(&tensors, &saved_blobs));
  if (into.vocabulary.has_value())
    IPS_RETURN_IF_ERROR(CheckCheckpointVocabulary(dir(), saved_blobs, *into.vocabulary));
  std::vector<std::vector<std::vector<std::string>>> table_files;
  // Whether the checkpoint's tensors and tables fit `into`; a misfit is explained below in terms
  // of the two configs (a user passing the config of another model sees that, not tensor sizes).
  const Status fits = [&]() -> Status {
    std::set<std::string> wanted;
    for (const auto& t : into.tensors) {
      wanted.insert(t.name);
      auto it = tensors.find(t.name);
      if (it == tensors.end())
        return NotFoundError(dir() + ": no tensor '" + t.name + "' in the checkpoint");
      if (static_cast<int64_t>(it->second.size()) != t.size)
        return InvalidArgumentError(dir() + ": tensor '" + t.name + "' has " +
                                    std::to_string(it->second.size()) + " values, the model " +
                                    std::to_string(t.size));
    }
    if (!into.tensors.empty()) {
      for (const auto& [name, v] : tensors)
        if (wanted.count(name) == 0)
          return InvalidArgumentError(dir() + ": tensor '" + name +
                                      "' of the checkpoint has no place in the model (another "
                                      "model or configuration?)");
    }
    for (const auto* t : into.tables) {
      auto groups = TableFiles(t->options().name);
      for (size_t g = 0; g < groups.size(); ++g) {
        if (groups[g].empty())
          return NotFoundError(chain()[g] + ": no files of table '" + t->options().name + "'");
        for (const auto& p : groups[g]) {
          IPS_ASSIGN_OR_RETURN(const ps::TableFileHeader h, ps::VerifyTableFile(p));
          IPS_RETURN_IF_ERROR(ps::CheckTableFileFits(p, h, *t));
        }
      }
      table_files.push_back(std::move(groups));
    }
    return Status::Ok();
  }();
  if (!fits.ok()) {
    // A checkpoint removed under the reader is no question of configs either.
    if (Removed()) return ExplainReadError(fits);
    return ExplainMisfit(fits, dir(), config_text_, into.config_text);
  }
  // A run continuing this checkpoint: its saved position in the epoch must mean the same
  // examples under this run's settings.
  if (into.vocabulary.has_value() && into.resume_examples_per_epoch >= 0)
    IPS_RETURN_IF_ERROR(CheckResumeEpochOrder(dir(), config_text_, saved_blobs, into.config_text,
                                              *into.vocabulary, into.resume_examples_per_epoch));
  // And its position must lie within this run (CheckResumeFitsRun), before the tables load.
  if (into.check_resume) IPS_RETURN_IF_ERROR(into.check_resume(dir(), saved_blobs));
  for (const auto* t : into.tables)
    if (t->Stats().rows != 0)
      return FailedPreconditionError("table '" + t->options().name +
                                     "' is not empty: restore into fresh tables");
  // 2. Load.
  for (const auto& t : into.tensors) {
    const auto& v = tensors.at(t.name);
    std::copy(v.begin(), v.end(), t.data);
  }
  for (size_t i = 0; i < into.tables.size(); ++i)
    IPS_RETURN_IF_ERROR(
        ExplainReadError(ps::LoadTableChain(table_files[i], into.tables[i], keep, nullptr)));
  if (blobs != nullptr) *blobs = std::move(saved_blobs);
  return Status::Ok();
}

StatusOr<std::unique_ptr<CheckpointReader>> OpenAndReadCheckpoint(
    const std::string& path, const std::function<Status(const CheckpointReader&)>& read,
    const std::function<bool()>& may_retry) {
  // Open already picks a root's checkpoint again when it is removed while Open validates it;
  // this covers the reads after Open.
  const std::string trimmed = TrimSlashes(path);
  std::string root, name;
  const bool is_root = ps::IsDirectory(trimmed) && !IsOneCheckpoint(trimmed, &root, &name);
  for (int pick = 1;; ++pick) {
    IPS_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(path));
    FireRaceHook("opened", reader->dir());
    const Status s = read(*reader);
    if (s.ok()) return reader;
    if (!is_root || pick == kMaxPicks || !reader->Removed() || (may_retry && !may_retry()))
      return s;
    LOG(WARNING) << s.message() << "; opening " << trimmed << " again";
  }
}

StatusOr<int64_t> LoadCheckpoint(const std::string& path, const CheckpointContent& into,
                                 std::map<std::string, std::string>* blobs,
                                 const ps::KeyFilter& keep) {
  // Restore reads and checks every file before it loads anything, so a failed Restore that
  // loaded no table row may be tried again on a newer checkpoint.
  IPS_ASSIGN_OR_RETURN(
      auto reader,
      OpenAndReadCheckpoint(
          path, [&](const CheckpointReader& r) { return r.Restore(into, blobs, keep); },
          [&into] {
            for (const auto* t : into.tables)
              if (t->Stats().rows != 0) return false;
            return true;
          }));
  return reader->step();
}

Status CheckResumePathFitsRun(const config::Config& cfg, const std::string& resume) {
  auto head = PeekCheckpoint(resume);
  if (!head.ok()) return Status::Ok();
  std::map<std::string, std::string> blobs;
  if (!ReadDenseFile(head->dense_path, nullptr, &blobs).ok()) return Status::Ok();
  return CheckResumeFitsRun(cfg, head->dir, blobs).WithContext("--resume " + resume);
}

std::string CheckpointRootOf(const std::string& path) {
  const std::string trimmed = TrimSlashes(path);
  std::string root, name;
  return IsOneCheckpoint(trimmed, &root, &name) ? root : trimmed;
}

std::string ContinueAdvice(const std::string& dir, const std::string& config_file_text) {
  std::string advice = "--resume " + dir;
  auto file = ParseConfigText(config_file_text, "--config");
  if (config_file_text.empty() || !file.ok() || file->checkpoint().dir() != dir)
    advice += " --set checkpoint.dir=" + dir;
  return advice;
}

std::string EncodeSyntheticSchedule(const SyntheticSchedule& schedule) {
  std::vector<int64_t> v;
  for (const SyntheticSchedule::Part& p : schedule.parts()) {
    v.push_back(p.first_step);
    v.push_back(p.num_workers);
  }
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(int64_t));
}

StatusOr<SyntheticSchedule> SyntheticScheduleOf(const std::string& checkpoint,
                                                const std::map<std::string, std::string>& blobs,
                                                int64_t step) {
  auto int64s = [&blobs](const std::string& name, std::vector<int64_t>* v) {
    const std::string& b = blobs.at(name);
    v->resize(b.size() / sizeof(int64_t));
    std::memcpy(v->data(), b.data(), v->size() * sizeof(int64_t));
    return b.size() % sizeof(int64_t) == 0;
  };
  std::vector<int64_t> v;
  if (blobs.count(kSyntheticScheduleBlob) == 0) {
    // Written before the schedule was recorded: W workers from step 0 (W = 1 without a layout).
    if (blobs.count("cluster/layout") == 0) return SyntheticSchedule(1);
    if (!int64s("cluster/layout", &v) || v.size() != 2 || v[1] < 1 || v[1] > (1 << 20))
      return DataLossError(checkpoint + ": checkpoint blob 'cluster/layout' is malformed (" +
                           std::to_string(blobs.at("cluster/layout").size()) + " bytes)");
    return SyntheticSchedule(static_cast<int>(v[1]));
  }
  const std::string what = checkpoint + ": checkpoint blob '" + kSyntheticScheduleBlob + "' ";
  if (!int64s(kSyntheticScheduleBlob, &v) || v.empty() || v.size() % 2 != 0)
    return DataLossError(what + "is malformed (" +
                         std::to_string(blobs.at(kSyntheticScheduleBlob).size()) + " bytes)");
  std::vector<SyntheticSchedule::Part> parts;
  for (size_t i = 0; i < v.size(); i += 2) {
    if (v[i + 1] < 1 || v[i + 1] > (1 << 20))
      return DataLossError(what + "gives " + std::to_string(v[i + 1]) + " workers");
    parts.push_back({v[i], static_cast<int>(v[i + 1])});
  }
  auto schedule = SyntheticSchedule::FromParts(std::move(parts));
  if (!schedule.ok()) return DataLossError(what + "is malformed: " + schedule.status().message());
  if (schedule->parts().back().first_step > step)
    return DataLossError(what + "starts a part at step " +
                         std::to_string(schedule->parts().back().first_step) +
                         ", after the checkpoint's step " + std::to_string(step));
  return schedule;
}

}  // namespace ips
