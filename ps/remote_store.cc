#include "ps/remote_store.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/timer.h"
#include "proto/ps.pb.h"
#include "ps/server.h"

namespace ips::ps {
namespace {

std::string Serialize(const google::protobuf::MessageLite& m) {
  std::string s;
  m.SerializeToString(&s);
  return s;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<ptrdiff_t>(k), v.end());
  return v[k];
}

// Latency samples kept per kind (a ring: the most recent ones).
constexpr size_t kMaxSamples = 1 << 16;
void Record(std::vector<double>* v, int64_t count, double us) {
  if (v->size() < kMaxSamples) {
    v->push_back(us);
  } else {
    (*v)[static_cast<size_t>(count) % kMaxSamples] = us;
  }
}

}  // namespace

// A PS's share of a large pull is sent as several frames (parts) at once, each of at least
// kMinPullPartKeys keys and at most kMaxPullParts per PS: the PS serves them one after the
// other, so its table lookup of one part overlaps the transfer of the previous part's rows and
// this thread's copy of them into the caller's output (measured with bench/mpi_ps_bench.cc: 64K
// keys x 18 floats from 1 PS). Each part is an ordinary pull frame; in sync mode the parts read
// the rows one frame would, as the PS handles a worker's frames in arrival order and no push of
// a later clock can be applied between two parts (see ps/server.h); in async mode each part
// meets the staleness bound on its own.
constexpr int64_t kMinPullPartKeys = 16384;
constexpr int64_t kMaxPullParts = 4;

struct RemoteEmbeddingStore::Inflight {
  int table = -1;
  int64_t n = 0;
  int64_t clock = 0;           // the reader's own clock (for measured staleness)
  std::vector<uint64_t> keys;  // a prefetch's keys (to match the Pull that consumes it)
  // Per PS: positions in keys. Empty with a single PS, whose positions are the identity (its
  // replies are copied to the output in one piece).
  std::vector<std::vector<int64_t>> positions;
  struct Part {
    int ps = 0;
    int64_t begin = 0, end = 0;  // range of the PS's positions (of keys with a single PS)
    Transport::Ticket ticket;
  };
  std::vector<Part> parts;  // in sending order
  Timer timer;
};

StatusOr<std::unique_ptr<RemoteEmbeddingStore>> RemoteEmbeddingStore::Create(
    Transport* transport, const RemoteStoreOptions& options) {
  if (transport == nullptr) return InvalidArgumentError("remote store: null transport");
  if (options.ps_ranks.empty()) return InvalidArgumentError("remote store: no parameter servers");
  for (int r : options.ps_ranks)
    if (r < 0 || r >= transport->size() || r == transport->rank())
      return InvalidArgumentError("remote store: PS rank " + std::to_string(r) +
                                  " is not another rank of the job");
  if (options.staleness < 0)
    return InvalidArgumentError("remote store: staleness must be >= 0, got " +
                                std::to_string(options.staleness));
  for (const TableOptions& t : options.tables) IPS_RETURN_IF_ERROR(ValidateTableOptions(t));
  std::unique_ptr<RemoteEmbeddingStore> s(new RemoteEmbeddingStore());
  s->transport_ = transport;
  s->options_ = options;
  s->num_ps_ = static_cast<int>(options.ps_ranks.size());
  s->pushes_.assign(options.tables.size(), 0);
  s->prefetch_.resize(options.tables.size());
  return s;
}

RemoteEmbeddingStore::~RemoteEmbeddingStore() {
  // Outstanding prefetches: their tickets are simply dropped (the transport discards replies
  // without a waiter).
}

StatusOr<int> RemoteEmbeddingStore::FindTable(const std::string& name) const {
  for (size_t i = 0; i < options_.tables.size(); ++i)
    if (options_.tables[i].name == name) return static_cast<int>(i);
  return NotFoundError("remote store: no table named '" + name + "'");
}

StatusOr<int64_t> RemoteEmbeddingStore::TableDim(int table) const {
  if (table < 0 || table >= static_cast<int>(options_.tables.size()))
    return NotFoundError("remote store: no table with id " + std::to_string(table));
  return options_.tables[table].dim;
}

Status RemoteEmbeddingStore::CheckTable(int table, int64_t dim) const {
  IPS_ASSIGN_OR_RETURN(int64_t d, TableDim(table));
  if (dim != d)
    return InvalidArgumentError("remote store: table '" + options_.tables[table].name +
                                "' has dim " + std::to_string(d) + ", call passed " +
                                std::to_string(dim));
  return Status::Ok();
}

Status RemoteEmbeddingStore::ReplyStatus(const Frame& f) const {
  bytes_received_ += static_cast<int64_t>(f.size());
  if (f.kind() != kPsReply) return DataLossError("remote store: reply of unexpected kind");
  if (f.meta().empty()) return Status::Ok();
  psproto::Response resp;
  if (!resp.ParseFromArray(f.meta().data(), static_cast<int>(f.meta().size())))
    return DataLossError("remote store: unparsable reply");
  if (resp.code() != 0) return Status(static_cast<StatusCode>(resp.code()), resp.error());
  return Status::Ok();
}

std::unique_ptr<RemoteEmbeddingStore::Inflight> RemoteEmbeddingStore::StartPull(
    uint32_t kind, int table, const uint64_t* keys, int64_t n, int64_t clock, bool keep_keys) {
  auto f = std::make_unique<Inflight>();
  f->table = table;
  f->n = n;
  f->clock = clock;
  if (keep_keys) f->keys.assign(keys, keys + n);
  std::vector<int64_t> count(num_ps_, 0);
  if (num_ps_ == 1) {
    count[0] = n;
  } else {
    f->positions.assign(num_ps_, {});
    owner_.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      owner_[i] = PsOfKey(keys[i], num_ps_);
      ++count[owner_[i]];
    }
    for (int p = 0; p < num_ps_; ++p) f->positions[p].reserve(static_cast<size_t>(count[p]));
    for (int64_t i = 0; i < n; ++i) f->positions[owner_[i]].push_back(i);
  }
  psproto::Request req;
  req.set_table(table);
  req.set_dim(options_.tables[table].dim);
  req.set_worker(options_.worker_index);
  const int64_t bound = options_.mode == RemoteStoreOptions::Mode::kSync ? 0 : options_.staleness;
  req.set_clock(std::max<int64_t>(0, clock - bound));
  for (int p = 0; p < num_ps_; ++p) {
    // A pull without keys has no effect on a PS: none is sent.
    if (count[p] == 0) continue;
    const int64_t num_parts =
        std::max<int64_t>(1, std::min(kMaxPullParts, count[p] / kMinPullPartKeys));
    for (int64_t k = 0; k < num_parts; ++k) {
      Inflight::Part part;
      part.ps = p;
      part.begin = count[p] * k / num_parts;
      part.end = count[p] * (k + 1) / num_parts;
      const int64_t m = part.end - part.begin;
      req.set_num_keys(m);
      Frame frame = Frame::Make(kind, Serialize(req), static_cast<size_t>(m) * 8);
      auto* out = reinterpret_cast<uint64_t*>(frame.payload());
      if (num_ps_ == 1) {
        std::memcpy(out, keys + part.begin, static_cast<size_t>(m) * 8);
      } else {
        const int64_t* pos = f->positions[p].data() + part.begin;
        for (int64_t j = 0; j < m; ++j) out[j] = keys[pos[j]];
      }
      bytes_sent_ += static_cast<int64_t>(frame.size());
      part.ticket = transport_->Request(options_.ps_ranks[p], std::move(frame));
      f->parts.push_back(std::move(part));
    }
  }
  return f;
}

Status RemoteEmbeddingStore::FinishPull(Inflight* f, float* out) {
  const int64_t dim = options_.tables[f->table].dim;
  const size_t row_bytes = static_cast<size_t>(dim) * 4;
  Status first;
  for (Inflight::Part& part : f->parts) {
    if (!part.ticket.valid()) continue;
    StatusOr<Frame> reply = transport_->Wait(std::move(part.ticket), options_.timeout_ms);
    part.ticket = Transport::Ticket();
    if (!reply.ok()) {
      if (first.ok()) first = reply.status();
      continue;
    }
    Status s = ReplyStatus(*reply);
    if (!s.ok()) {
      if (first.ok()) first = s;
      continue;
    }
    const int64_t m = part.end - part.begin;
    if (reply->payload_size() != static_cast<size_t>(m) * row_bytes) {
      if (first.ok()) first = DataLossError("remote store: pull reply of wrong size");
      continue;
    }
    const auto* rows = reinterpret_cast<const float*>(reply->payload());
    if (f->positions.empty()) {
      std::memcpy(out + part.begin * dim, rows, static_cast<size_t>(m) * row_bytes);
    } else {
      const int64_t* pos = f->positions[part.ps].data() + part.begin;
      for (int64_t j = 0; j < m; ++j) std::memcpy(out + pos[j] * dim, rows + j * dim, row_bytes);
    }
    psproto::Response resp;
    if (resp.ParseFromArray(reply->meta().data(), static_cast<int>(reply->meta().size())) &&
        resp.has_min_clock()) {
      const int64_t st = std::max<int64_t>(0, f->clock - resp.min_clock());
      staleness_max_ = std::max(staleness_max_, st);
      staleness_sum_ += st;
      ++staleness_count_;
    }
  }
  return first;
}

Status RemoteEmbeddingStore::Pull(int table, const uint64_t* keys, int64_t n, int64_t dim,
                                  float* out) {
  IPS_RETURN_IF_ERROR(CheckTable(table, dim));
  if (n < 0) return InvalidArgumentError("remote store: negative key count");
  if (n > 0 && (keys == nullptr || out == nullptr))
    return InvalidArgumentError("remote store: null keys or output");
  Timer timer;
  std::unique_ptr<Inflight> f;
  Inflight* p = prefetch_[table].get();
  // Only for the pull it was made for: one made a step earlier (no Pull consumed it, then a
  // step without a prefetch) was served before this step's push and would read stale rows.
  if (p != nullptr && p->clock == pushes_[table] && p->n == n &&
      std::equal(keys, keys + n, p->keys.begin())) {
    f = std::move(prefetch_[table]);
    ++prefetch_hits_;
  } else {
    // Not the prefetched keys (or none): pull afresh. A prefetch of other keys stays
    // outstanding; waiting for it here could deadlock, as it may need this step's push.
    f = StartPull(kPsPull, table, keys, n, pushes_[table], /*keep_keys=*/false);
  }
  Status s = FinishPull(f.get(), out);
  Record(&pull_us_, pulls_, timer.Seconds() * 1e6);
  ++pulls_;
  return s;
}

Status RemoteEmbeddingStore::PrefetchPull(int table, const uint64_t* keys, int64_t n) {
  IPS_RETURN_IF_ERROR(TableDim(table).status());
  if (n < 0 || (n > 0 && keys == nullptr))
    return InvalidArgumentError("remote store: bad prefetch keys");
  // An older prefetch still outstanding is abandoned (its reply is discarded on arrival).
  prefetch_[table] = StartPull(kPsPull, table, keys, n, pushes_[table] + 1, /*keep_keys=*/true);
  return Status::Ok();
}

Status RemoteEmbeddingStore::Lookup(int table, const uint64_t* keys, int64_t n, int64_t dim,
                                    float* out) {
  IPS_RETURN_IF_ERROR(CheckTable(table, dim));
  if (n < 0) return InvalidArgumentError("remote store: negative key count");
  if (n > 0 && (keys == nullptr || out == nullptr))
    return InvalidArgumentError("remote store: null keys or output");
  std::unique_ptr<Inflight> f = StartPull(kPsLookup, table, keys, n, 0, /*keep_keys=*/false);
  return FinishPull(f.get(), out);
}

Status RemoteEmbeddingStore::Push(int table, const uint64_t* keys, int64_t n, int64_t dim,
                                  const float* grads) {
  IPS_RETURN_IF_ERROR(CheckTable(table, dim));
  if (n < 0) return InvalidArgumentError("remote store: negative key count");
  if (n > 0 && (keys == nullptr || grads == nullptr))
    return InvalidArgumentError("remote store: null keys or gradients");
  if (finished_) return FailedPreconditionError("remote store: Push after Finish");
  Timer timer;
  const bool sync = options_.mode == RemoteStoreOptions::Mode::kSync;
  const int64_t seq = ++pushes_[table];
  std::vector<int64_t> count(num_ps_, 0);
  if (num_ps_ == 1) {
    count[0] = n;
  } else {
    owner_.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      owner_[i] = PsOfKey(keys[i], num_ps_);
      ++count[owner_[i]];
    }
  }
  std::vector<Transport::Ticket> tickets(num_ps_);
  for (int p = 0; p < num_ps_; ++p) {
    // Every PS gets the push, empty or not: one push is one optimizer step (Adam's count) and
    // advances this worker's clock there, whatever the number of PS.
    psproto::Request req;
    req.set_table(table);
    req.set_num_keys(count[p]);
    req.set_dim(dim);
    req.set_worker(options_.worker_index);
    req.set_clock(seq);
    req.set_want_ack(sync);
    Frame frame =
        Frame::Make(kPsPush, Serialize(req), static_cast<size_t>(count[p]) * (8 + dim * 4));
    auto* k = reinterpret_cast<uint64_t*>(frame.payload());
    auto* g = reinterpret_cast<float*>(frame.payload() + count[p] * 8);
    if (num_ps_ == 1) {
      std::memcpy(k, keys, static_cast<size_t>(n) * 8);
      std::memcpy(g, grads, static_cast<size_t>(n * dim) * 4);
    } else {
      int64_t j = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (owner_[i] != p) continue;
        k[j] = keys[i];
        std::memcpy(g + j * dim, grads + i * dim, static_cast<size_t>(dim) * 4);
        ++j;
      }
    }
    bytes_sent_ += static_cast<int64_t>(frame.size());
    if (sync) {
      tickets[p] = transport_->Request(options_.ps_ranks[p], std::move(frame));
    } else {
      transport_->Send(options_.ps_ranks[p], std::move(frame));
    }
  }
  Status first;
  if (sync) {
    for (int p = 0; p < num_ps_; ++p) {
      StatusOr<Frame> reply = transport_->Wait(std::move(tickets[p]), options_.timeout_ms);
      Status s = reply.ok() ? ReplyStatus(*reply) : reply.status();
      if (first.ok() && !s.ok()) first = s;
    }
  }
  Record(&push_us_, pushes_total_, timer.Seconds() * 1e6);
  ++pushes_total_;
  return first;
}

Status RemoteEmbeddingStore::SendAll(uint32_t kind, const std::string& meta) {
  std::vector<Transport::Ticket> tickets(num_ps_);
  for (int p = 0; p < num_ps_; ++p) {
    Frame frame = Frame::Make(kind, meta, 0);
    bytes_sent_ += static_cast<int64_t>(frame.size());
    tickets[p] = transport_->Request(options_.ps_ranks[p], std::move(frame));
  }
  Status first;
  for (int p = 0; p < num_ps_; ++p) {
    StatusOr<Frame> reply = transport_->Wait(std::move(tickets[p]), options_.timeout_ms);
    Status s = reply.ok() ? ReplyStatus(*reply) : reply.status();
    if (first.ok() && !s.ok()) first = s;
  }
  return first;
}

Status RemoteEmbeddingStore::AdvanceStep(int64_t step) {
  psproto::Request req;
  req.set_worker(options_.worker_index);
  req.set_step(step);
  return SendAll(kPsAdvance, Serialize(req));
}

StatusOr<TableStats> RemoteEmbeddingStore::Stats(int table) const {
  IPS_ASSIGN_OR_RETURN(int64_t dim, TableDim(table));
  (void)dim;
  psproto::Request req;
  req.set_worker(options_.worker_index);
  req.set_table(table);
  const std::string meta = Serialize(req);
  std::vector<Transport::Ticket> tickets(num_ps_);
  for (int p = 0; p < num_ps_; ++p)
    tickets[p] = transport_->Request(options_.ps_ranks[p], Frame::Make(kPsStats, meta, 0));
  TableStats sum;
  Status first;
  for (int p = 0; p < num_ps_; ++p) {
    StatusOr<Frame> reply = transport_->Wait(std::move(tickets[p]), options_.timeout_ms);
    Status s = reply.ok() ? ReplyStatus(*reply) : reply.status();
    if (!s.ok()) {
      if (first.ok()) first = s;
      continue;
    }
    psproto::Response resp;
    resp.ParseFromArray(reply->meta().data(), static_cast<int>(reply->meta().size()));
    const psproto::TableStatsProto& t = resp.stats();
    sum.name = t.name();
    sum.dim = t.dim();
    sum.payload_bytes_per_row = t.payload_bytes_per_row();
    sum.rows += t.rows();
    sum.capacity_rows += t.capacity_rows();
    sum.bytes += t.bytes();
    sum.slab_bytes += t.slab_bytes();
    sum.index_bytes += t.index_bytes();
    sum.sketch_bytes += t.sketch_bytes();
    sum.created_rows += t.created_rows();
    sum.unadmitted_pulls += t.unadmitted_pulls();
    sum.dropped_push_keys += t.dropped_push_keys();
    sum.evicted_ttl += t.evicted_ttl();
    sum.evicted_capacity += t.evicted_capacity();
    sum.pulled_keys += t.pulled_keys();
    sum.pushed_keys += t.pushed_keys();
    sum.optimizer_step = std::max(sum.optimizer_step, t.optimizer_step());
  }
  if (!first.ok()) return first;
  return sum;
}

Status RemoteEmbeddingStore::Finish() {
  if (finished_) return Status::Ok();
  for (auto& f : prefetch_) f.reset();
  finished_ = true;
  psproto::Request req;
  req.set_worker(options_.worker_index);
  return SendAll(kPsClockDone, Serialize(req));
}

Status RemoteEmbeddingStore::ShutdownServers() {
  IPS_RETURN_IF_ERROR(Finish());
  psproto::Request req;
  req.set_worker(options_.worker_index);
  return SendAll(kPsShutdown, Serialize(req));
}

StatusOr<std::vector<TableShardFile>> RemoteEmbeddingStore::CheckpointServers(
    const std::string& dir, int64_t step, bool incremental) {
  psproto::Request req;
  req.set_worker(options_.worker_index);
  req.set_step(step);
  req.set_checkpoint_dir(dir);
  req.set_incremental(incremental);
  const std::string meta = Serialize(req);
  std::vector<Transport::Ticket> tickets(num_ps_);
  for (int p = 0; p < num_ps_; ++p) {
    Frame frame = Frame::Make(kPsCheckpoint, meta, 0);
    bytes_sent_ += static_cast<int64_t>(frame.size());
    tickets[p] = transport_->Request(options_.ps_ranks[p], std::move(frame));
  }
  std::vector<TableShardFile> files;
  Status first;
  for (int p = 0; p < num_ps_; ++p) {
    StatusOr<Frame> reply = transport_->Wait(std::move(tickets[p]), /*timeout_ms=*/-1);
    Status s = reply.ok() ? ReplyStatus(*reply) : reply.status();
    if (!s.ok()) {
      if (first.ok()) first = s;
      continue;
    }
    psproto::Response resp;
    if (!resp.ParseFromArray(reply->meta().data(), static_cast<int>(reply->meta().size()))) {
      if (first.ok()) first = DataLossError("remote store: unparsable checkpoint reply");
      continue;
    }
    for (const psproto::ShardFileProto& f : resp.shard_files()) {
      TableShardFile t;
      t.name = f.name();
      t.table = f.table();
      t.rank = f.rank();
      t.info.bytes = f.bytes();
      t.info.crc32c = f.crc32c();
      t.info.rows = f.rows();
      t.info.removed = f.removed();
      t.info.epoch = f.epoch();
      files.push_back(std::move(t));
    }
  }
  if (!first.ok()) return first;
  return files;
}

Status RemoteEmbeddingStore::CommitServerCheckpoint(int64_t step) {
  psproto::Request req;
  req.set_worker(options_.worker_index);
  req.set_step(step);
  return SendAll(kPsCheckpointCommit, Serialize(req));
}

RemoteStoreMetrics RemoteEmbeddingStore::metrics() const {
  RemoteStoreMetrics m;
  m.pulls = pulls_;
  m.pushes = pushes_total_;
  m.prefetch_hits = prefetch_hits_;
  m.pull_p50_us = Percentile(pull_us_, 0.5);
  m.pull_p99_us = Percentile(pull_us_, 0.99);
  m.push_p50_us = Percentile(push_us_, 0.5);
  m.push_p99_us = Percentile(push_us_, 0.99);
  m.bytes_sent = bytes_sent_;
  m.bytes_received = bytes_received_;
  m.staleness_max = staleness_max_;
  m.staleness_mean =
      staleness_count_ > 0 ? static_cast<double>(staleness_sum_) / staleness_count_ : 0.0;
  return m;
}

}  // namespace ips::ps
