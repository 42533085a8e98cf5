#include "worker/record_parsers.h"

#include <charconv>
#include <cstring>

#include "common/random.h"

namespace ips {
namespace {

constexpr const char* kIdExpected = "an unsigned 64-bit integer id";
constexpr const char* kPositiveIdExpected = "an unsigned 64-bit integer id >= 1 (0 is padding)";
constexpr const char* kTsExpected = "a signed 64-bit integer (Unix seconds)";

bool ParseU64(std::string_view s, uint64_t* v) {
  if (s.empty()) return false;
  const char* end = s.data() + s.size();
  auto r = std::from_chars(s.data(), end, *v);
  return r.ec == std::errc() && r.ptr == end;
}

bool ParseI64(std::string_view s, int64_t* v) {
  if (s.empty()) return false;
  const char* end = s.data() + s.size();
  auto r = std::from_chars(s.data(), end, *v);
  return r.ec == std::errc() && r.ptr == end;
}

bool Fail(FieldError* err, const char* field, const char* expected, std::string_view got) {
  err->field = field;
  err->expected = expected;
  err->got = got;
  return false;
}

// Splits on runs of spaces/tabs (leading/trailing whitespace ignored).
int SplitWhitespace(std::string_view line, std::string_view* fields, int max_fields) {
  int n = 0;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    if (i >= line.size()) break;
    size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t') ++j;
    if (n == max_fields) return n + 1;  // signals "too many"
    fields[n++] = line.substr(i, j - i);
    i = j;
  }
  return n;
}

bool ParseRating(std::string_view s, FieldError* err) {
  uint64_t r = 0;
  if (!ParseU64(s, &r) || r > 10) return Fail(err, "rating", "an integer rating 0..10", s);
  return true;
}

constexpr const char* kMl1mGenres[] = {
    "Action",      "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama",     "Fantasy",   "Film-Noir",  "Horror", "Musical",
    "Mystery",     "Romance",   "Sci-Fi",    "Thriller",   "War",    "Western"};

}  // namespace

uint64_t StringId(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  h = Mix64(h);
  return h == 0 ? 1 : h;
}

int SplitFields(std::string_view line, std::string_view sep, std::string_view* fields,
                int max_fields) {
  int n = 0;
  size_t start = 0;
  while (n + 1 < max_fields) {
    const size_t p = line.find(sep, start);
    if (p == std::string_view::npos) break;
    fields[n++] = line.substr(start, p - start);
    start = p + sep.size();
  }
  fields[n++] = line.substr(start);
  return n;
}

bool ParseMovieLens100kRating(std::string_view line, Event* out, FieldError* err) {
  std::string_view f[4];
  const int n = SplitWhitespace(line, f, 4);
  if (n != 4) return Fail(err, "line", "4 fields: user item rating timestamp", line);
  if (!ParseU64(f[0], &out->user)) return Fail(err, "user", kIdExpected, f[0]);
  if (!ParseU64(f[1], &out->item)) return Fail(err, "item", kIdExpected, f[1]);
  if (!ParseRating(f[2], err)) return false;
  if (!ParseI64(f[3], &out->timestamp)) return Fail(err, "timestamp", kTsExpected, f[3]);
  out->category = 0;
  out->action = Action::kRate;
  out->domain = 0;
  return true;
}

bool ParseMovieLens100kItem(std::string_view line, uint64_t* item, uint64_t* category,
                            FieldError* err) {
  std::string_view f[25];
  const int n = SplitFields(line, "|", f, 25);
  if (n != 24)
    return Fail(err, "line", "24 '|'-separated fields (id, 4 text, 19 genre flags)", line);
  if (!ParseU64(f[0], item)) return Fail(err, "movie_id", kIdExpected, f[0]);
  *category = 1;
  bool found = false;
  for (int g = 0; g < 19; ++g) {
    const std::string_view flag = f[5 + g];
    if (flag != "0" && flag != "1") return Fail(err, "genre_flag", "0 or 1", flag);
    if (flag == "1" && !found) {
      *category = 1 + static_cast<uint64_t>(g);
      found = true;
    }
  }
  return true;
}

bool ParseMovieLens1mRating(std::string_view line, Event* out, FieldError* err) {
  std::string_view f[5];
  const int n = SplitFields(line, "::", f, 5);
  if (n != 4)
    return Fail(err, "line", "4 '::'-separated fields: UserID MovieID Rating Timestamp", line);
  if (!ParseU64(f[0], &out->user)) return Fail(err, "user", kIdExpected, f[0]);
  if (!ParseU64(f[1], &out->item)) return Fail(err, "item", kIdExpected, f[1]);
  if (!ParseRating(f[2], err)) return false;
  if (!ParseI64(f[3], &out->timestamp)) return Fail(err, "timestamp", kTsExpected, f[3]);
  out->category = 0;
  out->action = Action::kRate;
  out->domain = 0;
  return true;
}

bool ParseMovieLens1mMovie(std::string_view line, uint64_t* item, uint64_t* category,
                           FieldError* err) {
  // The title may itself contain "::"-free text with '(' etc.; genres are after the LAST "::".
  const size_t first = line.find("::");
  const size_t last = line.rfind("::");
  if (first == std::string_view::npos || last == first)
    return Fail(err, "line", "3 '::'-separated fields: MovieID Title Genres", line);
  const std::string_view id = line.substr(0, first);
  if (!ParseU64(id, item)) return Fail(err, "movie_id", kIdExpected, id);
  const std::string_view genres = line.substr(last + 2);
  const std::string_view g0 = genres.substr(0, genres.find('|'));
  for (int g = 0; g < 18; ++g) {
    if (g0 == kMl1mGenres[g]) {
      *category = 1 + static_cast<uint64_t>(g);
      return true;
    }
  }
  return Fail(err, "genres", "a MovieLens-1M genre name (Action, Adventure, ..., Western)", g0);
}

bool ParseSeqRecLine(std::string_view line, Event* out, FieldError* err) {
  std::string_view f[2];
  int n = 0;
  // Only the first two columns matter; later ones (if any) are ignored, like the peer.
  size_t i = 0;
  while (n < 2 && i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    if (i >= line.size()) break;
    size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t') ++j;
    f[n++] = line.substr(i, j - i);
    i = j;
  }
  if (n != 2) return Fail(err, "line", "2 fields: user item", line);
  if (!ParseU64(f[0], &out->user)) return Fail(err, "user", kIdExpected, f[0]);
  // Item 0 is the padding id of the readers' histories (and of the peer's), so a file using it
  // as a real item cannot be told apart from padding. Users are never padded: 0 is a user.
  if (!ParseU64(f[1], &out->item) || out->item == 0)
    return Fail(err, "item", kPositiveIdExpected, f[1]);
  out->category = 0;
  out->timestamp = 0;
  out->action = Action::kView;
  out->domain = 0;
  return true;
}

bool ParseTaobaoLine(std::string_view line, Event* out, FieldError* err) {
  std::string_view f[6];
  const int n = SplitFields(line, ",", f, 6);
  if (n != 5)
    return Fail(err, "line", "5 comma-separated fields: user,item,category,behavior,timestamp",
                line);
  if (!ParseU64(f[0], &out->user)) return Fail(err, "user", kIdExpected, f[0]);
  if (!ParseU64(f[1], &out->item)) return Fail(err, "item", kIdExpected, f[1]);
  if (!ParseU64(f[2], &out->category)) return Fail(err, "category", kIdExpected, f[2]);
  if (f[3] == "pv") {
    out->action = Action::kView;
  } else if (f[3] == "buy") {
    out->action = Action::kBuy;
  } else if (f[3] == "cart") {
    out->action = Action::kCart;
  } else if (f[3] == "fav") {
    out->action = Action::kFav;
  } else {
    return Fail(err, "behavior", "one of pv, buy, cart, fav", f[3]);
  }
  if (!ParseI64(f[4], &out->timestamp)) return Fail(err, "timestamp", kTsExpected, f[4]);
  out->domain = 0;
  return true;
}

bool ParseEventLine(std::string_view line, Event* out, FieldError* err) {
  std::string_view f[7];
  const int n = SplitFields(line, "\t", f, 7);
  if (n != 6)
    return Fail(err, "line", "6 tab-separated fields: user item category timestamp action domain",
                line);
  if (!ParseU64(f[0], &out->user) || out->user == 0)
    return Fail(err, "user", kPositiveIdExpected, f[0]);
  if (!ParseU64(f[1], &out->item) || out->item == 0)
    return Fail(err, "item", kPositiveIdExpected, f[1]);
  if (!ParseU64(f[2], &out->category) || out->category == 0)
    return Fail(err, "category", kPositiveIdExpected, f[2]);
  if (!ParseI64(f[3], &out->timestamp)) return Fail(err, "timestamp", kTsExpected, f[3]);
  const auto action = ParseAction(f[4]);
  if (!action) return Fail(err, "action", "one of pv, click, cart, fav, buy, rate", f[4]);
  out->action = *action;
  uint64_t domain = 0;
  if (!ParseU64(f[5], &domain) || domain > 255)
    return Fail(err, "domain", "an integer 0..255", f[5]);
  out->domain = static_cast<uint8_t>(domain);
  return true;
}

void AppendEventLine(const Event& e, std::string* out) {
  char buf[24];
  const auto num = [&](auto v) {
    const auto r = std::to_chars(buf, buf + sizeof(buf), v);
    out->append(buf, r.ptr - buf);
  };
  num(e.user);
  out->push_back('\t');
  num(e.item);
  out->push_back('\t');
  num(e.category);
  out->push_back('\t');
  num(e.timestamp);
  out->push_back('\t');
  out->append(ActionName(e.action));
  out->push_back('\t');
  num(static_cast<unsigned>(e.domain));
  out->push_back('\n');
}

bool ParseDienLine(std::string_view line, DienRecord* out, FieldError* err) {
  std::string_view f[7];
  const int n = SplitFields(line, "\t", f, 7);
  if (n != 6)
    return Fail(err, "line", "6 tab-separated fields: label uid mid cat hist_mids hist_cats", line);
  if (f[0] != "0" && f[0] != "1") return Fail(err, "label", "0 or 1", f[0]);
  out->label = f[0] == "1" ? 1 : 0;
  if (f[1].empty()) return Fail(err, "uid", "a non-empty id", f[1]);
  if (f[2].empty()) return Fail(err, "mid", "a non-empty id", f[2]);
  if (f[3].empty()) return Fail(err, "cat", "a non-empty id", f[3]);
  out->user = StringId(f[1]);
  out->item = StringId(f[2]);
  out->category = StringId(f[3]);
  out->hist_items.clear();
  out->hist_cats.clear();
  auto split_hist = [](std::string_view s, std::vector<uint64_t>* v) {
    if (s.empty()) return true;
    size_t start = 0;
    for (;;) {
      const size_t p = s.find('\x02', start);
      const std::string_view piece =
          s.substr(start, p == std::string_view::npos ? s.npos : p - start);
      if (piece.empty()) return false;
      v->push_back(StringId(piece));
      if (p == std::string_view::npos) return true;
      start = p + 1;
    }
  };
  if (!split_hist(f[4], &out->hist_items))
    return Fail(err, "hist_mids", "non-empty ids separated by \\x02", f[4]);
  if (!split_hist(f[5], &out->hist_cats))
    return Fail(err, "hist_cats", "non-empty ids separated by \\x02", f[5]);
  if (out->hist_items.size() != out->hist_cats.size())
    return Fail(err, "hist_cats", "as many entries as hist_mids", f[5]);
  return true;
}

}  // namespace ips
