#include "worker/manifest.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/crc32c.h"
#include "worker/manifest_magic.h"

namespace ips {
namespace {

std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

std::string FileLine(const ManifestFile& f) {
  std::ostringstream os;
  os << f.file << ',' << f.bytes << ',' << Hex(f.crc) << ',' << f.users << ',' << f.events << ','
     << f.train_examples << ',' << f.eval_examples;
  return os.str();
}

bool ParseU64(const std::string& s, uint64_t* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const bool hex = s.size() > 2 && s[0] == '0' && s[1] == 'x';
  *v = std::strtoull(s.c_str(), &end, hex ? 16 : 10);
  return errno == 0 && *end == '\0' && s[0] != '-';
}

bool ParseFileLine(const std::string& s, ManifestFile* f) {
  std::vector<std::string> parts;
  std::stringstream ss(s);
  std::string p;
  while (std::getline(ss, p, ',')) parts.push_back(p);
  if (parts.size() != 7 || parts[0].empty() || parts[0].find('/') != std::string::npos)
    return false;
  f->file = parts[0];
  uint64_t crc = 0;
  if (!ParseU64(parts[1], &f->bytes) || !ParseU64(parts[2], &crc) || crc > 0xffffffffULL ||
      !ParseU64(parts[3], &f->users) || !ParseU64(parts[4], &f->events) ||
      !ParseU64(parts[5], &f->train_examples) || !ParseU64(parts[6], &f->eval_examples))
    return false;
  f->crc = static_cast<uint32_t>(crc);
  return true;
}

}  // namespace

std::string Manifest::ToText() const {
  std::ostringstream os;
  os << kDatasetManifestPrefix << kManifestVersion << "\n";
  os << "format=" << format << "\nprotocol=" << protocol << "\ninput=" << input << "\nseed=" << seed
     << "\nmax_history=" << max_history << "\neval_negatives=" << eval_negatives
     << "\neval_users=" << eval_users << "\nmin_user_events=" << min_user_events
     << "\ntrain_negatives=" << train_negatives
     << "\nnegatives_per_positive=" << negatives_per_positive << "\ninput_lines=" << input_lines
     << "\nusers=" << users << "\nitems=" << items << "\ncategories=" << categories
     << "\nevents=" << events << "\ntrain_events=" << train_events
     << "\ntrain_examples=" << train_examples
     << "\ntrain_examples_per_epoch=" << train_examples_per_epoch
     << "\neval_examples=" << eval_examples << "\neval_candidates=" << eval_candidates
     << "\nbad_records=" << bad_records << "\n";
  for (const auto& [reason, n] : filtered) os << "filtered." << reason << "=" << n << "\n";
  os << "history_histogram=";
  for (size_t i = 0; i < history_histogram.size(); ++i)
    os << (i ? "," : "") << history_histogram[i];
  os << "\nvocab=" << FileLine(vocab) << "\n";
  for (const ManifestFile& s : shards) os << "shard=" << FileLine(s) << "\n";
  std::string text = os.str();
  text += "manifest_crc32c=" + Hex(Crc32c(text.data(), text.size())) + "\n";
  return text;
}

StatusOr<Manifest> Manifest::Parse(const std::string& path, const std::string& text) {
  const std::string kCrcKey = "manifest_crc32c=";
  const size_t pos = text.rfind(kCrcKey);
  if (pos == std::string::npos || (pos > 0 && text[pos - 1] != '\n'))
    return DataLossError(path + ": missing manifest_crc32c line (truncated?)");
  std::string crc_text = text.substr(pos + kCrcKey.size());
  while (!crc_text.empty() && (crc_text.back() == '\n' || crc_text.back() == '\r'))
    crc_text.pop_back();
  uint64_t stored = 0;
  if (!ParseU64(crc_text, &stored))
    return DataLossError(path + ": manifest_crc32c: expected 0x........ (got '" + crc_text + "')");
  const uint32_t computed = Crc32c(text.data(), pos);
  if (stored != computed)
    return DataLossError(path + ": CRC mismatch (stored " + Hex(static_cast<uint32_t>(stored)) +
                         ", computed " + Hex(computed) + ")");
  Manifest m;
  std::istringstream in(text.substr(0, pos));
  std::string line;
  int line_no = 0;
  bool have_vocab = false;
  while (std::getline(in, line)) {
    ++line_no;
    const std::string where = path + ":" + std::to_string(line_no) + ": ";
    if (line_no == 1) {
      if (line.rfind(kDatasetManifestPrefix, 0) != 0)
        return DataLossError(where + "expected 'ips_dataset_manifest <version>'");
      if (line != kDatasetManifestPrefix + std::to_string(kManifestVersion))
        return FailedPreconditionError(where + "unsupported manifest version '" + line + "'");
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == std::string::npos) return DataLossError(where + "expected key=value");
    const std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    uint64_t u = 0;
    const auto num = [&](auto* field) -> Status {
      if (!ParseU64(value, &u))
        return DataLossError(where + key + ": expected an unsigned integer (got '" + value + "')");
      *field = static_cast<std::remove_pointer_t<decltype(field)>>(u);
      return Status::Ok();
    };
    if (key == "format")
      m.format = value;
    else if (key == "protocol")
      m.protocol = value;
    else if (key == "input")
      m.input = value;
    else if (key == "train_negatives")
      m.train_negatives = value;
    else if (key == "seed")
      IPS_RETURN_IF_ERROR(num(&m.seed));
    else if (key == "max_history")
      IPS_RETURN_IF_ERROR(num(&m.max_history));
    else if (key == "eval_negatives")
      IPS_RETURN_IF_ERROR(num(&m.eval_negatives));
    else if (key == "eval_users")
      IPS_RETURN_IF_ERROR(num(&m.eval_users));
    else if (key == "min_user_events")
      IPS_RETURN_IF_ERROR(num(&m.min_user_events));
    else if (key == "negatives_per_positive")
      IPS_RETURN_IF_ERROR(num(&m.negatives_per_positive));
    else if (key == "input_lines")
      IPS_RETURN_IF_ERROR(num(&m.input_lines));
    else if (key == "users")
      IPS_RETURN_IF_ERROR(num(&m.users));
    else if (key == "items")
      IPS_RETURN_IF_ERROR(num(&m.items));
    else if (key == "categories")
      IPS_RETURN_IF_ERROR(num(&m.categories));
    else if (key == "events")
      IPS_RETURN_IF_ERROR(num(&m.events));
    else if (key == "train_events")
      IPS_RETURN_IF_ERROR(num(&m.train_events));
    else if (key == "train_examples")
      IPS_RETURN_IF_ERROR(num(&m.train_examples));
    else if (key == "train_examples_per_epoch")
      IPS_RETURN_IF_ERROR(num(&m.train_examples_per_epoch));
    else if (key == "eval_examples")
      IPS_RETURN_IF_ERROR(num(&m.eval_examples));
    else if (key == "eval_candidates")
      IPS_RETURN_IF_ERROR(num(&m.eval_candidates));
    else if (key == "bad_records")
      IPS_RETURN_IF_ERROR(num(&m.bad_records));
    else if (key.rfind("filtered.", 0) == 0) {
      IPS_RETURN_IF_ERROR(num(&u));
      m.filtered[key.substr(9)] = u;
    } else if (key == "history_histogram") {
      std::stringstream ss(value);
      std::string p;
      while (std::getline(ss, p, ',')) {
        if (!ParseU64(p, &u))
          return DataLossError(where + key + ": expected unsigned integers (got '" + p + "')");
        m.history_histogram.push_back(u);
      }
    } else if (key == "vocab" || key == "shard") {
      ManifestFile f;
      if (!ParseFileLine(value, &f))
        return DataLossError(where + key +
                             ": expected file,bytes,crc,users,events,train,eval (got '" + value +
                             "')");
      if (key == "vocab") {
        m.vocab = f;
        have_vocab = true;
      } else {
        m.shards.push_back(f);
      }
    } else {
      return DataLossError(where + "unknown key '" + key + "'");
    }
  }
  if (!have_vocab || m.shards.empty())
    return DataLossError(path + ": manifest lists no vocab or no shards");
  return m;
}

Status Manifest::WriteTo(const std::string& dir) const {
  const std::string path = dir + "/" + kManifestFile;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return NotFoundError(tmp + ": cannot create");
    out << ToText();
    out.flush();
    if (!out) return ResourceExhaustedError(tmp + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return InternalError(path + ": rename failed: " + std::strerror(errno));
  return Status::Ok();
}

StatusOr<Manifest> Manifest::ReadFrom(const std::string& dir) {
  const std::string path = dir + "/" + kManifestFile;
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(path + ": cannot open (not a converted dataset directory?)");
  std::stringstream ss;
  ss << in.rdbuf();
  return Parse(path, ss.str());
}

}  // namespace ips
