#include "ps/table_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>
#include <utility>

#include "ps/checkpoint_io.h"

namespace ips::ps {
namespace {

constexpr char kMagic[8] = {'I', 'P', 'S', 'T', 'B', 'L', '0', '1'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kFlagIncremental = 1;
constexpr int32_t kRowsPerBlock = 4096;
// Sanity bounds that keep a corrupt length from allocating the machine away.
constexpr int64_t kMaxDim = 1 << 16;
constexpr int64_t kMaxSketchWidth = 1 << 16;
constexpr int64_t kMaxSketches = 1 << 16;

// Streams rows into fixed-size blocks (the row count is not known before the scan).
class BlockWriter {
 public:
  BlockWriter(CrcFileWriter* w, int64_t row_bytes) : w_(w), row_bytes_(row_bytes) {
    buf_.reserve(static_cast<size_t>(row_bytes * kRowsPerBlock));
  }
  void Add(const RowRecord& r, int64_t dim, int state_count) {
    if (!status_.ok()) return;
    auto put = [this](const void* p, size_t n) {
      const char* c = static_cast<const char*>(p);
      buf_.insert(buf_.end(), c, c + n);
    };
    put(&r.key, 8);
    put(&r.last_step, 4);
    put(&r.freq, 4);
    put(r.value, static_cast<size_t>(dim) * 4);
    if (state_count > 0) put(r.state, static_cast<size_t>(dim * state_count) * 4);
    ++in_block_;
    ++total_;
    if (in_block_ == kRowsPerBlock) Flush();
  }
  Status Finish() {
    Flush();
    if (!status_.ok()) return status_;
    IPS_RETURN_IF_ERROR(w_->WritePod(int32_t{0}));
    return w_->WritePod(total_);
  }
  int64_t total() const { return total_; }

 private:
  void Flush() {
    if (!status_.ok() || in_block_ == 0) return;
    status_ = w_->WritePod(in_block_);
    if (status_.ok()) status_ = w_->Write(buf_.data(), buf_.size());
    buf_.clear();
    in_block_ = 0;
  }
  CrcFileWriter* w_;
  int64_t row_bytes_;
  std::vector<char> buf_;
  int32_t in_block_ = 0;
  int64_t total_ = 0;
  Status status_;
};

// What a reader does with the parts of a file (all optional).
struct Visitor {
  std::function<Status(const TableFileHeader&)> header;
  std::function<void(std::vector<SketchState>)> sketches;
  std::function<Status(const std::vector<uint64_t>&)> removed;
  std::function<Status(const RowRecord&)> row;
};

Status Bad(const std::string& path, const std::string& what) {
  return DataLossError(path + ": " + what);
}

// Reads the whole file, checking structure and checksum, calling the visitor as parts arrive.
StatusOr<TableFileHeader> ReadTableFile(const std::string& path, const Visitor& v) {
  IPS_ASSIGN_OR_RETURN(auto r, CrcFileReader::Open(path));
  char magic[8];
  IPS_RETURN_IF_ERROR(r->Read(magic, 8, "magic"));
  if (std::memcmp(magic, kMagic, 8) != 0) return Bad(path, "not a table checkpoint file");
  uint32_t version = 0, flags = 0;
  IPS_RETURN_IF_ERROR(r->ReadPod(&version, "version"));
  if (version != kVersion)
    return Bad(path, "format version " + std::to_string(version) + " (this binary reads " +
                         std::to_string(kVersion) + ")");
  IPS_RETURN_IF_ERROR(r->ReadPod(&flags, "flags"));
  TableFileHeader h;
  h.incremental = (flags & kFlagIncremental) != 0;
  IPS_RETURN_IF_ERROR(r->ReadString(&h.name, 4096, "table name"));
  int32_t state_count = 0, opt = 0;
  IPS_RETURN_IF_ERROR(r->ReadPod(&h.dim, "dim"));
  IPS_RETURN_IF_ERROR(r->ReadPod(&state_count, "state_count"));
  IPS_RETURN_IF_ERROR(r->ReadPod(&opt, "optimizer type"));
  if (h.dim < 1 || h.dim > kMaxDim) return Bad(path, "dim " + std::to_string(h.dim));
  if (state_count < 0 || state_count > 2)
    return Bad(path, "state_count " + std::to_string(state_count));
  h.state_count = state_count;
  h.optimizer_type = opt;
  IPS_RETURN_IF_ERROR(r->ReadPod(&h.step, "step"));
  IPS_RETURN_IF_ERROR(r->ReadPod(&h.last_sweep_step, "last_sweep_step"));
  IPS_RETURN_IF_ERROR(r->ReadPod(&h.optimizer_step, "optimizer_step"));
  IPS_RETURN_IF_ERROR(r->ReadPod(&h.epoch, "epoch"));
  IPS_RETURN_IF_ERROR(r->ReadPod(&h.since_epoch, "since_epoch"));
  IPS_RETURN_IF_ERROR(r->ReadPod(&h.sketches, "sketch count"));
  if (h.sketches < 0 || h.sketches > kMaxSketches)
    return Bad(path, "sketch count " + std::to_string(h.sketches));
  std::vector<SketchState> sketches(static_cast<size_t>(h.sketches));
  for (auto& s : sketches) {
    IPS_RETURN_IF_ERROR(r->ReadPod(&s.width, "sketch width"));
    if (s.width < 1 || s.width > kMaxSketchWidth)
      return Bad(path, "sketch width " + std::to_string(s.width));
    IPS_RETURN_IF_ERROR(r->ReadPod(&s.additions, "sketch additions"));
    if (s.width * 8 > r->file_size() - r->offset())
      return Bad(path, "truncated: sketch of width " + std::to_string(s.width) + " at byte " +
                           std::to_string(r->offset()) + " exceeds the file");
    s.counters.resize(static_cast<size_t>(4 * s.width));
    IPS_RETURN_IF_ERROR(r->Read(s.counters.data(), s.counters.size() * 2, "sketch counters"));
  }
  IPS_RETURN_IF_ERROR(r->ReadPod(&h.removed, "removed count"));
  if (h.removed < 0 || h.removed > (r->file_size() - r->offset()) / 8)
    return Bad(path, "removed count " + std::to_string(h.removed) + " exceeds the file");
  if (v.header) IPS_RETURN_IF_ERROR(v.header(h));
  if (v.sketches) v.sketches(std::move(sketches));
  {
    std::vector<uint64_t> keys;
    int64_t left = h.removed;
    while (left > 0) {
      const int64_t n = std::min<int64_t>(left, 1 << 16);
      keys.resize(static_cast<size_t>(n));
      IPS_RETURN_IF_ERROR(r->Read(keys.data(), keys.size() * 8, "removed keys"));
      if (v.removed) IPS_RETURN_IF_ERROR(v.removed(keys));
      left -= n;
    }
  }
  const int64_t row_bytes = 16 + 4 * h.dim * (1 + h.state_count);
  std::vector<char> block;
  int64_t rows = 0;
  for (int64_t b = 0;; ++b) {
    int32_t n = 0;
    IPS_RETURN_IF_ERROR(r->ReadPod(&n, "row block header"));
    if (n == 0) break;
    if (n < 0 || n > kRowsPerBlock)
      return Bad(path, "row block " + std::to_string(b) + " at byte " +
                           std::to_string(r->offset() - 4) + " claims " + std::to_string(n) +
                           " rows");
    if (n * row_bytes > r->file_size() - r->offset())
      return Bad(path, "truncated: row block " + std::to_string(b) + " of " + std::to_string(n) +
                           " rows at byte " + std::to_string(r->offset()) + " exceeds the file");
    block.resize(static_cast<size_t>(n * row_bytes));
    IPS_RETURN_IF_ERROR(r->Read(block.data(), block.size(), "row block"));
    if (v.row) {
      std::vector<float> value(static_cast<size_t>(h.dim));
      std::vector<float> state(static_cast<size_t>(h.dim * h.state_count));
      for (int32_t i = 0; i < n; ++i) {
        const char* p = block.data() + i * row_bytes;
        RowRecord rec;
        std::memcpy(&rec.key, p, 8);
        std::memcpy(&rec.last_step, p + 8, 4);
        std::memcpy(&rec.freq, p + 12, 4);
        std::memcpy(value.data(), p + 16, value.size() * 4);
        if (!state.empty()) std::memcpy(state.data(), p + 16 + value.size() * 4, state.size() * 4);
        rec.value = value.data();
        rec.state = state.empty() ? nullptr : state.data();
        IPS_RETURN_IF_ERROR(v.row(rec));
      }
    }
    rows += n;
  }
  int64_t total = 0;
  IPS_RETURN_IF_ERROR(r->ReadPod(&total, "row count"));
  if (total != rows)
    return Bad(path, "row count " + std::to_string(total) + " but " + std::to_string(rows) +
                         " rows in the blocks");
  IPS_RETURN_IF_ERROR(r->FinishAndVerify());
  return h;
}

}  // namespace

StatusOr<TableFileInfo> WriteTableFile(DynamicTable* table, const std::string& path,
                                       const TableWriteOptions& options) {
  const TableOptions& o = table->options();
  const uint32_t epoch = table->BeginCheckpoint();
  const uint32_t since = options.incremental ? options.since_epoch : 0;
  IPS_ASSIGN_OR_RETURN(auto w, CrcFileWriter::Create(path));
  IPS_RETURN_IF_ERROR(w->Write(kMagic, 8));
  IPS_RETURN_IF_ERROR(w->WritePod(kVersion));
  IPS_RETURN_IF_ERROR(w->WritePod(options.incremental ? kFlagIncremental : uint32_t{0}));
  IPS_RETURN_IF_ERROR(w->WriteString(o.name));
  IPS_RETURN_IF_ERROR(w->WritePod(o.dim));
  IPS_RETURN_IF_ERROR(w->WritePod(static_cast<int32_t>(table->state_count())));
  IPS_RETURN_IF_ERROR(w->WritePod(static_cast<int32_t>(o.optimizer.type)));
  IPS_RETURN_IF_ERROR(w->WritePod(table->step()));
  IPS_RETURN_IF_ERROR(w->WritePod(table->last_sweep_step()));
  IPS_RETURN_IF_ERROR(w->WritePod(table->optimizer_step()));
  IPS_RETURN_IF_ERROR(w->WritePod(epoch));
  IPS_RETURN_IF_ERROR(w->WritePod(since));
  const std::vector<SketchState> sketches = table->Sketches();
  IPS_RETURN_IF_ERROR(w->WritePod(static_cast<int64_t>(sketches.size())));
  for (const auto& s : sketches) {
    IPS_RETURN_IF_ERROR(w->WritePod(s.width));
    IPS_RETURN_IF_ERROR(w->WritePod(s.additions));
    IPS_RETURN_IF_ERROR(w->Write(s.counters.data(), s.counters.size() * 2));
  }
  const std::vector<uint64_t> removed =
      options.incremental ? table->RemovedSince(since) : std::vector<uint64_t>();
  IPS_RETURN_IF_ERROR(w->WritePod(static_cast<int64_t>(removed.size())));
  IPS_RETURN_IF_ERROR(w->Write(removed.data(), removed.size() * 8));
  const int64_t dim = o.dim;
  const int sc = table->state_count();
  BlockWriter blocks(w.get(), 16 + 4 * dim * (1 + sc));
  table->ForEachRowSince(since, [&](const RowRecord& r) { blocks.Add(r, dim, sc); });
  IPS_RETURN_IF_ERROR(blocks.Finish());
  IPS_RETURN_IF_ERROR(w->Finish());
  TableFileInfo info;
  info.bytes = w->file_bytes();
  info.crc32c = w->file_crc32c();
  info.rows = blocks.total();
  info.removed = static_cast<int64_t>(removed.size());
  info.epoch = epoch;
  return info;
}

StatusOr<TableFileHeader> VerifyTableFile(const std::string& path) {
  return ReadTableFile(path, Visitor());
}

Status CheckTableFileFits(const std::string& path, const TableFileHeader& h,
                          const DynamicTable& table) {
  const TableOptions& o = table.options();
  if (h.name != o.name)
    return InvalidArgumentError(path + ": holds table '" + h.name + "', loading into '" + o.name +
                                "'");
  if (h.dim != o.dim)
    return InvalidArgumentError(path + ": table '" + h.name + "' dim " + std::to_string(h.dim) +
                                " != the table's dim " + std::to_string(o.dim));
  if (h.state_count != table.state_count() ||
      h.optimizer_type != static_cast<int>(o.optimizer.type))
    return InvalidArgumentError(path + ": table '" + h.name + "' optimizer type " +
                                std::to_string(h.optimizer_type) + " (" +
                                std::to_string(h.state_count) + " state tables) != the table's " +
                                std::to_string(static_cast<int>(o.optimizer.type)));
  return Status::Ok();
}

Status LoadTableFile(const std::string& path, DynamicTable* table, const TableLoadOptions& options,
                     TableLoadStats* stats) {
  TableLoadStats local;
  TableLoadStats& st = stats != nullptr ? *stats : local;
  Visitor v;
  v.header = [&](const TableFileHeader& h) { return CheckTableFileFits(path, h, *table); };
  if (options.merge_sketches) {
    v.sketches = [&](std::vector<SketchState> sketches) {
      if (sketches.empty()) return;
      st.sketches_restored = table->MergeSketches(sketches).ok();
    };
  }
  v.removed = [&](const std::vector<uint64_t>& keys) {
    for (uint64_t k : keys) {
      if (options.keep && !options.keep(k)) continue;
      if (table->Erase(k)) ++st.removed_applied;
    }
    return Status::Ok();
  };
  v.row = [&](const RowRecord& r) -> Status {
    ++st.rows_read;
    if (options.keep && !options.keep(r.key)) return Status::Ok();
    ++st.rows_loaded;
    return table->RestoreRow(r);
  };
  IPS_ASSIGN_OR_RETURN(const TableFileHeader h, ReadTableFile(path, v));
  table->RestoreClock(std::max(table->step(), h.step),
                      std::max(table->last_sweep_step(), h.last_sweep_step),
                      std::max(table->optimizer_step(), h.optimizer_step));
  return Status::Ok();
}

Status LoadTableChain(const std::vector<std::vector<std::string>>& groups, DynamicTable* table,
                      const KeyFilter& keep, TableLoadStats* stats) {
  if (groups.empty() || groups[0].empty())
    return InvalidArgumentError("table '" + table->options().name + "': no checkpoint files");
  for (size_t g = 0; g < groups.size(); ++g) {
    for (const auto& path : groups[g]) {
      IPS_ASSIGN_OR_RETURN(const TableFileHeader h, VerifyTableFile(path));
      IPS_RETURN_IF_ERROR(CheckTableFileFits(path, h, *table));
      if (h.incremental != (g > 0))
        return InvalidArgumentError(path + ": " + (h.incremental ? "an incremental" : "a full") +
                                    " table file where the chain needs " +
                                    (g > 0 ? "an incremental" : "a full") + " one");
    }
  }
  TableLoadStats total;
  for (size_t g = 0; g < groups.size(); ++g) {
    for (const auto& path : groups[g]) {
      TableLoadOptions o;
      o.keep = keep;
      o.merge_sketches = g + 1 == groups.size();
      TableLoadStats s;
      IPS_RETURN_IF_ERROR(LoadTableFile(path, table, o, &s));
      total.rows_read += s.rows_read;
      total.rows_loaded += s.rows_loaded;
      total.removed_applied += s.removed_applied;
      total.sketches_restored = total.sketches_restored || s.sketches_restored;
    }
  }
  if (stats != nullptr) *stats = total;
  return Status::Ok();
}

std::string TableShardFileName(const std::string& table, int rank) {
  return "table-" + table + "-r" + std::to_string(rank) + ".bin";
}

StatusOr<std::vector<TableShardFile>> WriteTableShardFiles(
    const std::string& dir, int rank, const std::vector<DynamicTable*>& tables,
    const std::map<std::string, uint32_t>* since_epochs,
    const std::function<Status(const std::string&)>& fault_hook) {
  std::set<std::string> names;
  for (const auto* t : tables) {
    if (t == nullptr) return InvalidArgumentError("checkpoint: null table");
    if (!names.insert(t->options().name).second)
      return InvalidArgumentError("checkpoint: duplicate table '" + t->options().name + "'");
    if (since_epochs != nullptr && since_epochs->count(t->options().name) == 0)
      return InvalidArgumentError("checkpoint: table '" + t->options().name +
                                  "' was not in the previous checkpoint");
  }
  std::vector<TableShardFile> files;
  for (auto* t : tables) {
    TableShardFile f;
    f.table = t->options().name;
    f.name = TableShardFileName(f.table, rank);
    f.rank = rank;
    TableWriteOptions wo;
    wo.incremental = since_epochs != nullptr;
    wo.since_epoch = wo.incremental ? since_epochs->at(f.table) : 0;
    IPS_ASSIGN_OR_RETURN(f.info, WriteTableFile(t, dir + "/" + f.name, wo));
    files.push_back(std::move(f));
    if (fault_hook) IPS_RETURN_IF_ERROR(fault_hook("file:" + files.back().name));
  }
  return files;
}

}  // namespace ips::ps
