// The column names of a dataset shard and of the vocabulary file, shared by the converter that
// writes them (dataset_builder.cc) and the reader (data_reader.cc).
//
// Design: a shard stores every user's event sequence ONCE (records) and examples as references
// (record, position): the history of an example is the view of its record's events before the
// position, so histories cost nothing extra on disk and training negatives are NOT stored — the
// reader draws them per epoch from (seed, epoch, shard, row), which gives fresh negatives every
// epoch exactly like the peer, deterministically and independent of batch order (resume = skip).
#ifndef IPS_WORKER_SHARD_SCHEMA_H_
#define IPS_WORKER_SHARD_SCHEMA_H_

namespace ips::shard_columns {

// Records (one per user; one per example line for DIEN's given examples). R records.
constexpr char kRecUser[] = "rec_user";            // u64 [R] raw user id
constexpr char kRecOffset[] = "rec_offset";        // u64 [R+1] into the event columns
constexpr char kRecTrainLen[] = "rec_train_len";   // u32 [R] leading events that are training
constexpr char kRecSeenOffset[] = "rec_seen_off";  // u64 [R+1] into seen_item
constexpr char kSeenItem[] = "seen_item";          // u32 sorted unique items of each record
// Events, grouped by record, time-ordered within a record. E events.
constexpr char kEvItem[] = "ev_item";      // u32 dense item id (1..items)
constexpr char kEvCat[] = "ev_cat";        // u32 dense category id (1..categories)
constexpr char kEvTs[] = "ev_ts";          // i64 timestamp (line index for `seqrec` input)
constexpr char kEvAction[] = "ev_action";  // u8 worker/events.h Action
constexpr char kEvDomain[] = "ev_domain";  // u8
// Training rows: target = event rec_offset[rec] + pos, history = the events before it.
constexpr char kTrainRec[] = "train_rec";      // u32 [P]
constexpr char kTrainPos[] = "train_pos";      // u32 [P]
constexpr char kTrainLabel[] = "train_label";  // u8 [P] (1 for stored positives)
// Evaluation rows: history = events before pos; candidates (if any) replace the target.
constexpr char kEvalRec[] = "eval_rec";      // u32 [V]
constexpr char kEvalPos[] = "eval_pos";      // u32 [V]
constexpr char kEvalLabel[] = "eval_label";  // u8 [V]
constexpr char kEvalCand[] = "eval_cand";    // u32 [V*C]: column 0 = the held-out item

// Vocabulary file (vocab.ips): dense id -> raw id, item -> category, item popularity.
constexpr char kItemRaw[] = "item_raw";      // u64 [items+1], [0] = 0 (padding)
constexpr char kItemCat[] = "item_cat";      // u32 [items+1]
constexpr char kItemCount[] = "item_count";  // u64 [items+1] training events per item
constexpr char kCatRaw[] = "cat_raw";        // u64 [categories+1]

}  // namespace ips::shard_columns

#endif  // IPS_WORKER_SHARD_SCHEMA_H_
