#include "ps/server.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "proto/ps.pb.h"
#include "ps/table_checkpoint.h"

namespace ips::ps {
namespace {

constexpr int64_t kDone = std::numeric_limits<int64_t>::max();

std::string Serialize(const google::protobuf::MessageLite& m) {
  std::string s;
  m.SerializeToString(&s);
  return s;
}

void ToProto(const TableStats& s, psproto::TableStatsProto* p) {
  p->set_name(s.name);
  p->set_dim(s.dim);
  p->set_rows(s.rows);
  p->set_capacity_rows(s.capacity_rows);
  p->set_bytes(s.bytes);
  p->set_slab_bytes(s.slab_bytes);
  p->set_index_bytes(s.index_bytes);
  p->set_sketch_bytes(s.sketch_bytes);
  p->set_payload_bytes_per_row(s.payload_bytes_per_row);
  p->set_created_rows(s.created_rows);
  p->set_unadmitted_pulls(s.unadmitted_pulls);
  p->set_dropped_push_keys(s.dropped_push_keys);
  p->set_evicted_ttl(s.evicted_ttl);
  p->set_evicted_capacity(s.evicted_capacity);
  p->set_pulled_keys(s.pulled_keys);
  p->set_pushed_keys(s.pushed_keys);
  p->set_optimizer_step(s.optimizer_step);
}

}  // namespace

StatusOr<std::unique_ptr<ParameterServer>> ParameterServer::Create(Transport* transport,
                                                                   const ServerOptions& options) {
  if (transport == nullptr) return InvalidArgumentError("parameter server: null transport");
  if (options.num_workers < 1)
    return InvalidArgumentError("parameter server: num_workers must be >= 1, got " +
                                std::to_string(options.num_workers));
  std::unique_ptr<ParameterServer> s(new ParameterServer());
  s->transport_ = transport;
  s->options_ = options;
  IPS_ASSIGN_OR_RETURN(s->store_,
                       LocalEmbeddingStore::CreateThreaded(options.tables, options.num_threads));
  s->applied_.assign(options.num_workers, std::vector<int64_t>(options.tables.size(), 0));
  s->async_error_.assign(options.num_workers, Status::Ok());
  s->shut_down_.assign(options.num_workers, false);
  s->held_pushes_.resize(options.tables.size());
  if (options.num_workers > 1) {
    for (int t = 0; t < s->store_->num_tables(); ++t) {
      IPS_ASSIGN_OR_RETURN(DynamicTable * table, s->store_->table(t));
      table->SetWindowedAdmission(true);
    }
  }
  return s;
}

ParameterServer::~ParameterServer() {
  if (checkpoint_thread_.joinable()) checkpoint_thread_.join();
}

int64_t ParameterServer::MinApplied(int table) const {
  int64_t m = kDone;
  for (const auto& w : applied_) m = std::min(m, w[table]);
  return m;
}

void ParameterServer::ReplyError(const Incoming& in, const Status& s) {
  psproto::Response resp;
  resp.set_code(static_cast<int>(s.code()));
  resp.set_error(transport_->Describe(transport_->rank()) + ": " + s.message());
  transport_->Reply(in.source, in.frame.id(), Frame::Make(kPsReply, Serialize(resp), 0));
}

void ParameterServer::ServePull(const Incoming& in, int table, int64_t n, int64_t dim,
                                bool lookup) {
  psproto::Response resp;
  resp.set_min_clock(MinApplied(table));
  Frame reply = Frame::Make(kPsReply, Serialize(resp), static_cast<size_t>(n * dim) * 4);
  const auto* keys = reinterpret_cast<const uint64_t*>(in.frame.payload());
  float* out = reinterpret_cast<float*>(reply.payload());
  // The store spreads a large pull over its num_threads threads, shard by shard.
  const Status status =
      lookup ? store_->Lookup(table, keys, n, dim, out) : store_->Pull(table, keys, n, dim, out);
  if (!status.ok()) return ReplyError(in, status);
  if (lookup) {
    ++stats_.lookups;
  } else {
    ++stats_.pulls;
  }
  transport_->Reply(in.source, in.frame.id(), std::move(reply));
}

void ParameterServer::Handle(Incoming in) {
  const uint32_t kind = in.frame.kind();
  psproto::Request req;
  const std::string_view meta = in.frame.meta();
  if (!req.ParseFromArray(meta.data(), static_cast<int>(meta.size())))
    return ReplyError(in,
                      DataLossError("unparsable request from " + transport_->Describe(in.source)));
  const int w = req.worker();
  if (w < 0 || w >= options_.num_workers)
    return ReplyError(
        in, InvalidArgumentError("request from worker index " + std::to_string(w) +
                                 " outside [0, " + std::to_string(options_.num_workers) + ")"));
  if (!async_error_[w].ok() && kind != kPsPush) {
    Status s = async_error_[w];
    async_error_[w] = Status::Ok();
    return ReplyError(in, s.WithContext("an earlier unacknowledged push failed"));
  }
  const int table = req.table();
  const bool needs_table =
      kind == kPsPull || kind == kPsLookup || kind == kPsPush || kind == kPsStats;
  if (needs_table && (table < 0 || table >= store_->num_tables()))
    return ReplyError(in, NotFoundError("no table with id " + std::to_string(table)));
  const int64_t n = req.num_keys(), dim = req.dim();
  switch (kind) {
    case kPsPull:
    case kPsLookup: {
      if (n < 0 || in.frame.payload_size() != static_cast<size_t>(n) * 8)
        return ReplyError(
            in, DataLossError("pull payload of " + std::to_string(in.frame.payload_size()) +
                              " bytes for " + std::to_string(n) + " keys"));
      if (kind == kPsPull && MinApplied(table) < req.clock()) {
        ++stats_.deferred_pulls;
        deferred_.push_back(std::move(in));
        return;
      }
      return ServePull(in, table, n, dim, kind == kPsLookup);
    }
    case kPsPush: {
      if (n < 0 || dim < 1 || in.frame.payload_size() != static_cast<size_t>(n) * (8 + 4 * dim))
        return ReplyError(
            in, DataLossError("push payload of " + std::to_string(in.frame.payload_size()) +
                              " bytes for " + std::to_string(n) + " keys x dim " +
                              std::to_string(dim)));
      if (req.want_ack() && options_.num_workers > 1) {
        // Sync mode: held until every active worker's push of this clock is here, then applied
        // in worker order (see the header).
        held_pushes_[table][req.clock()].push_back({w, std::move(in)});
        ReleaseHeldPushes(table);
      } else {
        ApplyPush(in, req);
      }
      RetryDeferred();
      return;
    }
    case kPsAdvance: {
      Status s;
      if (req.step() > max_step_) {
        max_step_ = req.step();
        s = store_->AdvanceStep(req.step());
      }
      if (!s.ok()) return ReplyError(in, s);
      transport_->Reply(in.source, in.frame.id(), Frame::Make(kPsReply, {}, 0));
      return;
    }
    case kPsStats: {
      StatusOr<TableStats> st = store_->Stats(table);
      if (!st.ok()) return ReplyError(in, st.status());
      psproto::Response resp;
      ToProto(*st, resp.mutable_stats());
      transport_->Reply(in.source, in.frame.id(), Frame::Make(kPsReply, Serialize(resp), 0));
      return;
    }
    case kPsClockDone:
    case kPsShutdown: {
      for (auto& c : applied_[w]) c = kDone;
      if (kind == kPsShutdown) shut_down_[w] = true;
      transport_->Reply(in.source, in.frame.id(), Frame::Make(kPsReply, {}, 0));
      // Held pushes no longer wait for this worker.
      for (int t = 0; t < store_->num_tables(); ++t) ReleaseHeldPushes(t);
      RetryDeferred();
      return;
    }
    case kPsCheckpoint: {
      if (req.checkpoint_dir().empty())
        return ReplyError(in, InvalidArgumentError("checkpoint request without a directory"));
      if (req.incremental() && committed_epochs_.empty())
        return ReplyError(
            in, FailedPreconditionError("incremental checkpoint requested, but this server has "
                                        "committed no checkpoint to be incremental to"));
      // The previous write replied before its commit could be sent: joining is immediate.
      if (checkpoint_thread_.joinable()) checkpoint_thread_.join();
      checkpoint_thread_ =
          std::thread(&ParameterServer::WriteCheckpoint, this, in.source, in.frame.id(),
                      req.checkpoint_dir(), req.step(), req.incremental(), committed_epochs_);
      return;
    }
    case kPsCheckpointCommit: {
      if (checkpoint_thread_.joinable()) checkpoint_thread_.join();
      if (pending_step_ < 0 || pending_step_ != req.step())
        return ReplyError(
            in, FailedPreconditionError("commit of checkpoint " + std::to_string(req.step()) +
                                        ", but the last one written here is " +
                                        std::to_string(pending_step_)));
      for (int t = 0; t < store_->num_tables(); ++t) {
        StatusOr<DynamicTable*> table = store_->table(t);
        if (!table.ok()) return ReplyError(in, table.status());
        auto it = pending_epochs_.find((*table)->options().name);
        if (it != pending_epochs_.end()) (*table)->DiscardChangesThrough(it->second);
      }
      committed_epochs_ = pending_epochs_;
      pending_step_ = -1;
      transport_->Reply(in.source, in.frame.id(), Frame::Make(kPsReply, {}, 0));
      return;
    }
    default:
      return ReplyError(in, InvalidArgumentError("unknown frame kind " + std::to_string(kind)));
  }
}

void ParameterServer::WriteCheckpoint(int source, uint64_t id, const std::string& dir, int64_t step,
                                      bool incremental, std::map<std::string, uint32_t> since) {
  auto fail = [&](const Status& st) {
    psproto::Response resp;
    resp.set_code(static_cast<int>(st.code()));
    resp.set_error(transport_->Describe(transport_->rank()) + ": " + st.message());
    transport_->Reply(source, id, Frame::Make(kPsReply, Serialize(resp), 0));
  };
  std::vector<DynamicTable*> tables;
  for (int t = 0; t < store_->num_tables(); ++t) {
    StatusOr<DynamicTable*> table = store_->table(t);
    if (!table.ok()) return fail(table.status());
    tables.push_back(*table);
  }
  StatusOr<std::vector<TableShardFile>> files =
      WriteTableShardFiles(dir, transport_->rank(), tables, incremental ? &since : nullptr);
  if (!files.ok()) return fail(files.status());
  pending_step_ = step;
  pending_epochs_.clear();
  psproto::Response resp;
  for (const TableShardFile& f : *files) {
    pending_epochs_[f.table] = f.info.epoch;
    psproto::ShardFileProto* p = resp.add_shard_files();
    p->set_name(f.name);
    p->set_table(f.table);
    p->set_rank(f.rank);
    p->set_bytes(f.info.bytes);
    p->set_crc32c(f.info.crc32c);
    p->set_rows(f.info.rows);
    p->set_removed(f.info.removed);
    p->set_epoch(f.info.epoch);
  }
  if (options_.kill_in_checkpoint_step >= 0 && step == options_.kill_in_checkpoint_step) {
    std::fprintf(stderr, "ips: test: %s kills itself with SIGKILL while writing checkpoint %lld\n",
                 transport_->Describe(transport_->rank()).c_str(), static_cast<long long>(step));
    std::fflush(stderr);
    std::raise(SIGKILL);
  }
  transport_->Reply(source, id, Frame::Make(kPsReply, Serialize(resp), 0));
}

void ParameterServer::ApplyPush(const Incoming& in, const psproto::Request& req) {
  const int w = req.worker(), table = req.table();
  const int64_t n = req.num_keys(), dim = req.dim();
  const auto* keys = reinterpret_cast<const uint64_t*>(in.frame.payload());
  const auto* grads = reinterpret_cast<const float*>(in.frame.payload() + n * 8);
  Status s = store_->Push(table, keys, n, dim, grads);
  ++stats_.pushes;
  if (applied_[w][table] != kDone) applied_[w][table] = req.clock();
  if (options_.kill_after_pushes >= 0 && stats_.pushes >= options_.kill_after_pushes) {
    std::fprintf(stderr, "ips: test: %s kills itself with SIGKILL after %lld pushes\n",
                 transport_->Describe(transport_->rank()).c_str(),
                 static_cast<long long>(stats_.pushes));
    std::fflush(stderr);
    std::raise(SIGKILL);
  }
  if (req.want_ack()) {
    if (!s.ok()) {
      ReplyError(in, s);
    } else {
      transport_->Reply(in.source, in.frame.id(), Frame::Make(kPsReply, {}, 0));
    }
  } else if (!s.ok()) {
    async_error_[w] = s;
  }
}

void ParameterServer::ReleaseHeldPushes(int table) {
  auto& held = held_pushes_[table];
  while (!held.empty()) {
    auto first = held.begin();
    std::vector<HeldPush>& pushes = first->second;
    // Workers that have finished (CLOCK_DONE) push no more; the others all push every clock.
    size_t active = 0;
    for (int w = 0; w < options_.num_workers; ++w)
      if (applied_[w][table] != kDone) ++active;
    if (pushes.size() < active) return;
    std::sort(pushes.begin(), pushes.end(),
              [](const HeldPush& a, const HeldPush& b) { return a.worker < b.worker; });
    for (HeldPush& p : pushes) {
      psproto::Request req;
      const std::string_view meta = p.in.frame.meta();
      req.ParseFromArray(meta.data(), static_cast<int>(meta.size()));  // parsed before holding
      ApplyPush(p.in, req);
    }
    held.erase(first);
  }
}

void ParameterServer::RetryDeferred() {
  if (deferred_.empty()) return;
  std::vector<Incoming> waiting;
  waiting.swap(deferred_);
  for (Incoming& in : waiting) Handle(std::move(in));  // re-defers what is still early
}

Status ParameterServer::Run() {
  // Requests are served on the transport's comm thread (no hand-off per request); this thread
  // sleeps until every worker has shut down.
  std::unique_lock<std::mutex> l(done_mu_);
  done_ = false;
  l.unlock();
  transport_->SetRequestHandler([this](Incoming in) {
    Handle(std::move(in));
    bool all_done = true;
    for (bool d : shut_down_) all_done = all_done && d;
    if (all_done) {
      std::lock_guard<std::mutex> g(done_mu_);
      done_ = true;
      done_cv_.notify_all();
    }
  });
  l.lock();
  while (!done_) {
    done_cv_.wait_for(l, std::chrono::seconds(1));
    if (!done_ && transport_->stopped()) {
      l.unlock();
      transport_->SetRequestHandler(nullptr);
      return UnavailableError(transport_->Describe(transport_->rank()) +
                              ": transport stopped before every worker shut down");
    }
  }
  l.unlock();
  transport_->SetRequestHandler(nullptr);
  if (checkpoint_thread_.joinable()) checkpoint_thread_.join();
  return Status::Ok();
}

}  // namespace ips::ps
