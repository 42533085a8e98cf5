// Record parsers: one function per input format that turns ONE text line into a record.
//
// They are pure functions of the line (no I/O, no allocation except DIEN histories), which is what
// the converters, the fuzz targets and the unit tests share. On failure they return false and say
// which field was wrong and what was expected; the caller adds "file:line:" (FormatFieldError).
// Raw ids here are the dataset's own ids; converters remap them to dense ids later.
#ifndef IPS_WORKER_RECORD_PARSERS_H_
#define IPS_WORKER_RECORD_PARSERS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "worker/events.h"

namespace ips {

// What went wrong in a line: `field` and `expected` are static strings, `got` views the line.
struct FieldError {
  const char* field = "";
  const char* expected = "";
  std::string_view got;
};

// Stable nonzero 64-bit id of a string id (DIEN's user/item/category strings): Mix64 over the
// bytes (FNV-1a then fmix64), with 0 mapped to 1 because 0 is the padding id.
uint64_t StringId(std::string_view s);

// MovieLens-100K u.data: `user \t item \t rating \t unix_ts` (any run of spaces/tabs separates).
// Fills user, item, timestamp; action = kRate; category = 0 (set later from u.item).
bool ParseMovieLens100kRating(std::string_view line, Event* out, FieldError* err);
// MovieLens-100K u.item: `id|title|release|video release|url|f0|...|f18`. category = 1 + index
// of the first set genre flag (1 = genre 0 "unknown", also used when no flag is set).
bool ParseMovieLens100kItem(std::string_view line, uint64_t* item, uint64_t* category,
                            FieldError* err);
// MovieLens-1M ratings.dat: `UserID::MovieID::Rating::Timestamp`.
bool ParseMovieLens1mRating(std::string_view line, Event* out, FieldError* err);
// MovieLens-1M movies.dat: `MovieID::Title (Year)::Genre1|Genre2|...`. category = 1 + index of
// the FIRST listed genre in the README's 18-genre list (Action=1 ... Western=18).
bool ParseMovieLens1mMovie(std::string_view line, uint64_t* item, uint64_t* category,
                           FieldError* err);
// SASRec-style `user item` (space or tab separated, time order = line order). Columns after the
// second are ignored, as the peer does (`line.split()[:2]`). item must be >= 1 (0 is padding);
// user 0 is an ordinary user.
bool ParseSeqRecLine(std::string_view line, Event* out, FieldError* err);
// Taobao UserBehavior CSV `user,item,category,behavior,ts`, behavior in pv|buy|cart|fav.
bool ParseTaobaoLine(std::string_view line, Event* out, FieldError* err);
// The canonical event TSV of worker/events.h: `user \t item \t category \t ts \t action \t domain`.
// user/item/category must be >= 1.
bool ParseEventLine(std::string_view line, Event* out, FieldError* err);
// Appends one event TSV line (with "\n") to *out; ParseEventLine reads it back exactly.
void AppendEventLine(const Event& e, std::string* out);

// DIEN's Amazon example files: `label \t uid \t mid \t cat \t hist_mids \t hist_cats`, histories
// separated by \x02, equal lengths. String ids become StringId() values.
struct DienRecord {
  int label = 0;
  uint64_t user = 0, item = 0, category = 0;
  std::vector<uint64_t> hist_items, hist_cats;
};
bool ParseDienLine(std::string_view line, DienRecord* out, FieldError* err);

// Splits `line` at every `sep` (a string, e.g. "::") into at most `max_fields` pieces (the last
// piece keeps any remaining separators). Returns the number of pieces written to fields[].
int SplitFields(std::string_view line, std::string_view sep, std::string_view* fields,
                int max_fields);

}  // namespace ips

#endif  // IPS_WORKER_RECORD_PARSERS_H_
