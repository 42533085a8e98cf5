#include "proto/config_loader.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <sstream>
#include <utility>

namespace ips {
namespace {

namespace pb = google::protobuf;

// Collects the parser's first error with its position (protobuf reports 0-based line/column).
class FirstErrorCollector : public pb::io::ErrorCollector {
 public:
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (!has_error_) {
      has_error_ = true;
      line_ = line;
      column_ = column;
      message_ = message;
    }
  }
  void AddWarning(int, pb::io::ColumnNumber, const std::string&) override {}
  bool has_error() const { return has_error_; }
  std::string Describe(const std::string& filename) const {
    std::ostringstream os;
    os << filename << ":" << (line_ + 1) << ":" << (column_ + 1) << ": " << message_;
    return os.str();
  }

 private:
  bool has_error_ = false;
  int line_ = 0;
  int column_ = 0;
  std::string message_;
};

// Splits "a.b[2].c" into components; each is a field name with an optional index.
struct PathPart {
  std::string name;
  int index = -1;
};

StatusOr<std::vector<PathPart>> SplitPath(const std::string& path, const std::string& context) {
  std::vector<PathPart> parts;
  std::stringstream ss(path);
  std::string item;
  while (std::getline(ss, item, '.')) {
    PathPart part;
    const auto bracket = item.find('[');
    if (bracket != std::string::npos) {
      if (item.back() != ']')
        return InvalidArgumentError(context + ": malformed index in '" + item + "'");
      const std::string idx = item.substr(bracket + 1, item.size() - bracket - 2);
      char* end = nullptr;
      const long v = std::strtol(idx.c_str(), &end, 10);
      if (idx.empty() || *end != '\0' || v < 0)
        return InvalidArgumentError(context + ": bad index '" + idx + "' in '" + item + "'");
      part.index = static_cast<int>(v);
      item = item.substr(0, bracket);
    }
    if (item.empty()) return InvalidArgumentError(context + ": empty path component");
    part.name = item;
    parts.push_back(part);
  }
  if (parts.empty()) return InvalidArgumentError(context + ": empty field path");
  return parts;
}

constexpr int kMaxThreads = 1024;
constexpr int kMaxBatch = 1 << 20;

std::string FieldNames(const pb::Descriptor* d) {
  std::string names;
  for (int i = 0; i < d->field_count(); ++i) names += (i ? ", " : "") + d->field(i)->name();
  return names;
}

// Line (1-based) where the field at `path` was set in the file, or 0 if unknown.
int LineOf(const pb::TextFormat::ParseInfoTree* tree, const pb::Message& root,
           const std::vector<PathPart>& path) {
  const pb::Message* msg = &root;
  for (size_t i = 0; i < path.size() && tree != nullptr; ++i) {
    const pb::FieldDescriptor* f = msg->GetDescriptor()->FindFieldByName(path[i].name);
    if (f == nullptr) return 0;
    const int index = f->is_repeated() ? std::max(0, path[i].index) : -1;
    // An element the file does not have (appended by --set): no line to name.
    if (f->is_repeated() && index >= msg->GetReflection()->FieldSize(*msg, f)) return 0;
    if (i + 1 == path.size()) {
      // A list written as [a, b] records one location, its first element's: a later element is
      // on the line of the nearest element before it that has one.
      for (int k = index; k >= 0 || k == index; --k) {
        const auto loc = tree->GetLocation(f, k);
        if (loc.line >= 0) return loc.line + 1;
      }
      return 0;
    }
    if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE) return 0;
    tree = tree->GetTreeForNested(f, index);
    const pb::Reflection* r = msg->GetReflection();
    msg = f->is_repeated() ? &r->GetRepeatedMessage(*msg, f, index) : &r->GetMessage(*msg, f);
  }
  return 0;
}

// The line of `field_path` in source.text, or 0 (no text, not set in it, or not a field path).
int LineInSource(const ConfigSource& source, const std::string& field_path) {
  if (source.text.empty()) return 0;
  auto path = SplitPath(field_path, field_path);
  if (!path.ok()) return 0;
  pb::TextFormat::ParseInfoTree tree;
  config::Config parsed;
  pb::TextFormat::Parser parser;
  parser.WriteLocationsTo(&tree);
  // Errors go to a collector: a text that does not parse names no line (protobuf would log).
  FirstErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(source.text, &parsed)) return 0;
  return LineOf(&tree, parsed, *path);
}

// The last override that set the field at `field_path`, or null. An element of a repeated scalar
// ("model.mlp_hidden[1]") is set by an override of the whole list ("model.mlp_hidden=64,0").
const std::string* OverrideOf(const std::vector<std::string>& overrides,
                              const std::string& field_path) {
  std::vector<std::string> names = {field_path};
  if (!field_path.empty() && field_path.back() == ']')
    names.push_back(field_path.substr(0, field_path.rfind('[')));
  for (auto o = overrides.rbegin(); o != overrides.rend(); ++o)
    for (const std::string& name : names)
      if (o->compare(0, name.size() + 1, name + "=") == 0) return &*o;
  return nullptr;
}

// The first float or double field (depth first, in field-number order, set fields only: the
// defaults are finite) that holds NaN or an infinity: its path in *path, its value in *value.
bool FindNonFinite(const pb::Message& msg, std::vector<PathPart>* path, double* value) {
  const pb::Reflection* r = msg.GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  r->ListFields(msg, &fields);
  for (const pb::FieldDescriptor* f : fields) {
    const int n = f->is_repeated() ? r->FieldSize(msg, f) : 1;
    for (int i = 0; i < n; ++i) {
      path->push_back({f->name(), f->is_repeated() ? i : -1});
      double v = 0;
      switch (f->cpp_type()) {
        case pb::FieldDescriptor::CPPTYPE_FLOAT:
          v = f->is_repeated() ? r->GetRepeatedFloat(msg, f, i) : r->GetFloat(msg, f);
          break;
        case pb::FieldDescriptor::CPPTYPE_DOUBLE:
          v = f->is_repeated() ? r->GetRepeatedDouble(msg, f, i) : r->GetDouble(msg, f);
          break;
        case pb::FieldDescriptor::CPPTYPE_MESSAGE:
          if (FindNonFinite(
                  f->is_repeated() ? r->GetRepeatedMessage(msg, f, i) : r->GetMessage(msg, f), path,
                  value))
            return true;
          break;
        default:
          break;
      }
      if (!std::isfinite(v)) {
        *value = v;
        return true;
      }
      path->pop_back();
    }
  }
  return false;
}

std::string NumberText(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::ostringstream os;
  os << v;
  return os.str();
}

StatusOr<std::string> ReadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(path + ": cannot open the config file");
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

}  // namespace

StatusOr<config::Config> ParseConfigText(const std::string& text, const std::string& filename) {
  config::Config cfg;
  pb::TextFormat::Parser parser;
  FirstErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &cfg)) {
    if (errors.has_error()) return InvalidArgumentError(errors.Describe(filename));
    return InvalidArgumentError(filename + ": could not parse the config");
  }
  return cfg;
}

StatusOr<config::Config> LoadConfigFile(const std::string& path) {
  IPS_ASSIGN_OR_RETURN(const std::string text, ReadConfigFile(path));
  return ParseConfigText(text, path);
}

Status ApplyOverride(const std::string& assignment, config::Config* config) {
  const std::string context = "--set " + assignment;
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    return InvalidArgumentError(context + ": expected path.to.field=value");
  IPS_ASSIGN_OR_RETURN(auto parts, SplitPath(assignment.substr(0, eq), context));
  const std::string value = assignment.substr(eq + 1);

  pb::Message* msg = config;
  for (size_t i = 0; i < parts.size(); ++i) {
    const pb::Descriptor* d = msg->GetDescriptor();
    const pb::Reflection* r = msg->GetReflection();
    const pb::FieldDescriptor* f = d->FindFieldByName(parts[i].name);
    if (f == nullptr)
      return InvalidArgumentError(context + ": " + d->full_name() + " has no field '" +
                                  parts[i].name + "' (fields: " + FieldNames(d) + ")");
    const bool last = i + 1 == parts.size();
    if (f->is_repeated() && f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      const int size = r->FieldSize(*msg, f);
      if (parts[i].index < 0)
        return InvalidArgumentError(context + ": '" + parts[i].name +
                                    "' is repeated: give an index, e.g. " + parts[i].name + "[0]");
      if (parts[i].index > size)
        return InvalidArgumentError(context + ": index " + std::to_string(parts[i].index) +
                                    " of '" + parts[i].name + "' is past its size " +
                                    std::to_string(size));
      if (last)
        return InvalidArgumentError(context + ": '" + parts[i].name +
                                    "' is a message; set one of its fields");
      msg = parts[i].index == size ? r->AddMessage(msg, f)
                                   : r->MutableRepeatedMessage(msg, f, parts[i].index);
      continue;
    }
    if (parts[i].index >= 0)
      return InvalidArgumentError(context + ": '" + parts[i].name + "' is not a repeated message");
    if (!last) {
      if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE)
        return InvalidArgumentError(context + ": '" + parts[i].name + "' is not a message");
      msg = r->MutableMessage(msg, f);
      continue;
    }
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE)
      return InvalidArgumentError(context + ": '" + parts[i].name +
                                  "' is a message; set one of its fields");
    // Leaf: parse the value with the text-format rules of the field's type.
    std::vector<std::string> values;
    if (f->is_repeated()) {
      const std::string field = assignment.substr(0, eq);
      // An empty list would clear the field, which the models read as "use the default sizes"
      // (e.g. model.mlp_hidden= would mean 200,80, not "no hidden layer"): refuse it. Leave the
      // field out of the config for the default.
      if (value.empty())
        return InvalidArgumentError(context + ": " + field +
                                    ": empty list (give at least one value; for the default, "
                                    "leave the field out of the config)");
      for (size_t start = 0;;) {
        const size_t comma = value.find(',', start);
        values.push_back(value.substr(start, comma == std::string::npos ? comma : comma - start));
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
      // "64,32," would otherwise drop its empty last element silently.
      if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_STRING) {
        for (size_t k = 0; k < values.size(); ++k)
          if (values[k].empty())
            return InvalidArgumentError(context + ": " + field + ": element " + std::to_string(k) +
                                        " of '" + value + "' is empty");
      }
      r->ClearField(msg, f);
    } else {
      values.push_back(value);
    }
    for (const auto& v : values) {
      std::string literal = v;
      if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
        // Strings need quotes in text format; accept bare values.
        std::string escaped;
        for (char c : v) {
          if (c == '"' || c == '\\') escaped.push_back('\\');
          escaped.push_back(c);
        }
        literal = "\"" + escaped + "\"";
      }
      // Parse into a scratch message first so that a bad value leaves the config untouched.
      std::unique_ptr<pb::Message> scratch(msg->New());
      // Errors go to a collector: the message below says it all (protobuf would log its own).
      FirstErrorCollector errors;
      pb::TextFormat::Parser value_parser;
      value_parser.RecordErrorsTo(&errors);
      if (!value_parser.ParseFieldValueFromString(literal, f, scratch.get()))
        return InvalidArgumentError(context + ": '" + v + "' is not a valid " + f->type_name() +
                                    " for field '" + f->full_name() + "'");
      // For a repeated field this appends one element.
      if (!pb::TextFormat::ParseFieldValueFromString(literal, f, msg))
        return InternalError(context + ": could not set value");
    }
  }
  return Status::Ok();
}

Status BlameConfigField(const ConfigSource& source, const std::string& field_path,
                        const std::string& message, const std::vector<std::string>& also_read) {
  // A value an override set is blamed on the override (the last one of the field), not on the
  // file's line that it replaced.
  const std::string* o = OverrideOf(source.overrides, field_path);
  for (size_t i = 0; o == nullptr && i < also_read.size(); ++i)
    o = OverrideOf(source.overrides, also_read[i]);
  if (o != nullptr) return InvalidArgumentError("--set " + *o + ": " + field_path + ": " + message);
  if (source.filename.empty()) return InvalidArgumentError(field_path + ": " + message);
  std::string where = source.filename;
  if (const int line = LineInSource(source, field_path); line > 0)
    where += ":" + std::to_string(line);
  return InvalidArgumentError(where + ": " + field_path + ": " + message);
}

Status BlameConfigFields(const ConfigSource& source, const std::string& path_a,
                         const std::string& message_a, const std::string& path_b,
                         const std::string& message_b) {
  if (OverrideOf(source.overrides, path_b) != nullptr &&
      OverrideOf(source.overrides, path_a) == nullptr)
    return BlameConfigField(source, path_b, message_b);
  return BlameConfigField(source, path_a, message_a);
}

Status ValidateConfig(const config::Config& cfg, const ConfigSource& source) {
  auto fail = [&](const std::string& path, const std::string& what) {
    return BlameConfigField(source, path, what);
  };
  if (cfg.version() < 1 || cfg.version() > kConfigVersion)
    return fail("version", "unsupported schema version " + std::to_string(cfg.version()) +
                               " (this binary reads 1.." + std::to_string(kConfigVersion) + ")");
  {
    // NaN passes every range check (each comparison with it is false) and an infinity passes
    // most: refuse both in every float and double field, wherever it sits.
    std::vector<PathPart> path;
    double value = 0;
    if (FindNonFinite(cfg, &path, &value)) {
      std::string dotted;
      for (const PathPart& p : path) {
        dotted += (dotted.empty() ? "" : ".") + p.name;
        if (p.index >= 0) dotted += "[" + std::to_string(p.index) + "]";
      }
      return fail(dotted, "must be a finite number, got " + NumberText(value));
    }
  }
  const auto& d = cfg.data();
  if (d.batch_size() <= 0 || d.batch_size() > kMaxBatch)
    return fail("data.batch_size",
                (d.batch_size() <= 0 ? "must be positive, got "
                                     : "must be at most " + std::to_string(kMaxBatch) + ", got ") +
                    std::to_string(d.batch_size()));
  if (d.has_synthetic() && !d.train_dir().empty())
    return fail("data.train_dir",
                "data.synthetic is set too: a run trains on one of them (use a config without "
                "data.synthetic to train on '" +
                    d.train_dir() + "')");
  if (!d.eval_dir().empty())
    return fail("data.eval_dir",
                "is not used: evaluation reads the held-out events that `ips data convert` "
                "keeps in data.train_dir");
  if (d.max_history() <= 0)
    return fail("data.max_history", "must be positive, got " + std::to_string(d.max_history()));
  if (d.has_synthetic()) {
    if (d.synthetic().num_items() <= 0) return fail("data.synthetic.num_items", "must be positive");
    if (d.synthetic().num_categories() <= 0)
      return fail("data.synthetic.num_categories", "must be positive");
  }
  // The tables are looked up by name (the model's 'item' and 'category'; the store keys its
  // tables by name). Their options are the store's to check (CheckConfigForRun).
  for (int i = 0; i < cfg.tables_size(); ++i) {
    const std::string name = "tables[" + std::to_string(i) + "].name";
    const std::string& t = cfg.tables(i).name();
    if (t.empty()) return fail(name, "every table needs a name");
    for (int j = 0; j < i; ++j)
      if (cfg.tables(j).name() == t) return fail(name, "duplicate table name '" + t + "'");
  }
  if (cfg.train().epochs() <= 0) return fail("train.epochs", "must be positive");
  // Thread counts are capped: a typo of 10000 would start that many threads and abort in
  // std::thread instead of failing here.
  if (cfg.train().num_threads() <= 0 || cfg.train().num_threads() > kMaxThreads)
    return fail("train.num_threads", "must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                                         std::to_string(cfg.train().num_threads()));
  if (cfg.cluster().num_ps() < 0) return fail("cluster.num_ps", "must be >= 0");
  if (cfg.cluster().staleness() < 0) return fail("cluster.staleness", "must be >= 0");
  // SYNC waits for every push before a pull (a bound of 0): a staleness there would be ignored.
  if (cfg.cluster().staleness() > 0 && cfg.cluster().sync() != config::ClusterConfig::ASYNC) {
    const std::string s = std::to_string(cfg.cluster().staleness());
    return BlameConfigFields(
        source, "cluster.staleness",
        s + " is read only with cluster.sync ASYNC, and cluster.sync is SYNC: set cluster.sync to "
            "ASYNC, or leave cluster.staleness out",
        "cluster.sync",
        "SYNC would ignore cluster.staleness " + s +
            " (only ASYNC reads a staleness bound): set cluster.sync to ASYNC, or leave "
            "cluster.staleness out");
  }
  if (cfg.cluster().ps_threads() < 0 || cfg.cluster().ps_threads() > kMaxThreads)
    return fail("cluster.ps_threads", "must be in [0, " + std::to_string(kMaxThreads) +
                                          "] (0: automatic), got " +
                                          std::to_string(cfg.cluster().ps_threads()));
  if (cfg.cluster().transport_spin_us() < -1 || cfg.cluster().transport_spin_us() > 1000000)
    return fail("cluster.transport_spin_us",
                "must be in [0, 1000000] microseconds, or -1 (automatic)");
  if (cfg.checkpoint().keep_last() <= 0) return fail("checkpoint.keep_last", "must be positive");
  if (cfg.checkpoint().every_steps() < 0)
    return fail("checkpoint.every_steps", "must be >= 0 (0: no step-based checkpoints), got " +
                                              std::to_string(cfg.checkpoint().every_steps()));
  if (cfg.checkpoint().every_seconds() < 0)
    return fail("checkpoint.every_seconds", "must be >= 0 (0: no time-based checkpoints), got " +
                                                NumberText(cfg.checkpoint().every_seconds()));
  return Status::Ok();
}

StatusOr<config::Config> LoadConfig(const std::string& path,
                                    const std::vector<std::string>& overrides,
                                    ConfigSource* source) {
  ConfigSource src;
  src.filename = path;
  src.overrides = overrides;
  IPS_ASSIGN_OR_RETURN(src.text, ReadConfigFile(path));
  IPS_ASSIGN_OR_RETURN(config::Config cfg, ParseConfigText(src.text, path));
  for (const auto& o : overrides) IPS_RETURN_IF_ERROR(ApplyOverride(o, &cfg));
  IPS_RETURN_IF_ERROR(ValidateConfig(cfg, src));
  if (source != nullptr) *source = std::move(src);
  return cfg;
}

std::string ConfigToText(const config::Config& config) {
  std::string out;
  pb::TextFormat::PrintToString(config, &out);
  return out;
}

}  // namespace ips
