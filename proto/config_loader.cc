#include "proto/config_loader.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <cmath>
#include <fstream>
#include <sstream>

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
// The ranges of the model and table options that a config sets, as the models and the store
// check them (models/mind.cc ValidateMindOptions, ps/table_options.cc ValidateTableOptions).
constexpr int kMaxInterests = 64;
constexpr int kMaxRoutingIterations = 20;
constexpr int kMaxTableDim = 65536;
constexpr int kMaxMinCount = 65535;  // the admission sketch's counters are 16 bits
constexpr int64_t kMaxTtlSteps = (int64_t{1} << 30) - 1;

std::string FieldNames(const pb::Descriptor* d) {
  std::string names;
  for (int i = 0; i < d->field_count(); ++i) names += (i ? ", " : "") + d->field(i)->name();
  return names;
}

// Line (1-based) where the field at `path` was set in the file, or 0 if unknown.
int LineOf(const pb::TextFormat::ParseInfoTree* tree, const pb::Message& root,
           const std::vector<std::pair<std::string, int>>& path) {
  const pb::Message* msg = &root;
  for (size_t i = 0; i < path.size() && tree != nullptr; ++i) {
    const pb::FieldDescriptor* f = msg->GetDescriptor()->FindFieldByName(path[i].first);
    if (f == nullptr) return 0;
    const int index = f->is_repeated() ? std::max(0, path[i].second) : -1;
    // An element the file does not have (appended by --set): no line to name.
    if (f->is_repeated() && index >= msg->GetReflection()->FieldSize(*msg, f)) return 0;
    if (i + 1 == path.size()) {
      const auto loc = tree->GetLocation(f, index);
      return loc.line >= 0 ? loc.line + 1 : 0;
    }
    if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE) return 0;
    tree = tree->GetTreeForNested(f, index);
    const pb::Reflection* r = msg->GetReflection();
    msg = f->is_repeated() ? &r->GetRepeatedMessage(*msg, f, index) : &r->GetMessage(*msg, f);
  }
  return 0;
}

// The first float or double field (depth first, in field-number order, set fields only: the
// defaults are finite) that holds NaN or an infinity: its path in *path, its value in *value.
bool FindNonFinite(const pb::Message& msg, std::vector<std::pair<std::string, int>>* path,
                   double* value) {
  const pb::Reflection* r = msg.GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  r->ListFields(msg, &fields);
  for (const pb::FieldDescriptor* f : fields) {
    const int n = f->is_repeated() ? r->FieldSize(msg, f) : 1;
    for (int i = 0; i < n; ++i) {
      path->emplace_back(f->name(), f->is_repeated() ? i : -1);
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

Status ValidateConfig(const config::Config& cfg, const std::string& filename,
                      const std::string& text, const std::vector<std::string>& overrides) {
  pb::TextFormat::ParseInfoTree tree;
  config::Config reparsed;
  const pb::TextFormat::ParseInfoTree* tree_ptr = nullptr;
  if (!text.empty()) {
    pb::TextFormat::Parser parser;
    parser.WriteLocationsTo(&tree);
    if (parser.ParseFromString(text, &reparsed)) tree_ptr = &tree;
  }
  using Path = std::vector<std::pair<std::string, int>>;
  auto dotted_of = [](const Path& path) {
    std::string dotted;
    for (const auto& [name, index] : path) {
      dotted += (dotted.empty() ? "" : ".") + name;
      if (index >= 0) dotted += "[" + std::to_string(index) + "]";
    }
    return dotted;
  };
  // The last override that set the field at `path`, or null. An element of a repeated scalar
  // ("model.mlp_hidden[1]") is set by an override of the whole list ("model.mlp_hidden=64,0").
  auto override_of = [&](const Path& path) -> const std::string* {
    std::vector<std::string> names = {dotted_of(path)};
    if (!path.empty() && path.back().second >= 0) {
      Path list = path;
      list.back().second = -1;
      names.push_back(dotted_of(list));
    }
    for (auto o = overrides.rbegin(); o != overrides.rend(); ++o)
      for (const std::string& name : names)
        if (o->compare(0, name.size() + 1, name + "=") == 0) return &*o;
    return nullptr;
  };
  auto fail = [&](const Path& path, const std::string& what) {
    const std::string dotted = dotted_of(path);
    // A value an override set is blamed on the override (the last one of the field), not on the
    // file's line that it replaced.
    if (const std::string* o = override_of(path))
      return InvalidArgumentError("--set " + *o + ": " + dotted + ": " + what);
    const int line = tree_ptr ? LineOf(tree_ptr, reparsed, path) : 0;
    std::string where = filename;
    if (line > 0) where += ":" + std::to_string(line);
    return InvalidArgumentError(where + ": " + dotted + ": " + what);
  };
  // A check of two fields together: blamed on the first that an override set (with what that
  // field's message says), else on the first field.
  auto fail_either = [&](const Path& a, const std::string& what_a, const Path& b,
                         const std::string& what_b) {
    if (override_of(b) != nullptr && override_of(a) == nullptr) return fail(b, what_b);
    return fail(a, what_a);
  };

  if (cfg.version() < 1 || cfg.version() > kConfigVersion)
    return fail({{"version", -1}}, "unsupported schema version " + std::to_string(cfg.version()) +
                                       " (this binary reads 1.." + std::to_string(kConfigVersion) +
                                       ")");
  {
    // NaN passes every range check below (each comparison with it is false) and an infinity
    // passes most: refuse both in every float and double field, wherever it sits.
    std::vector<std::pair<std::string, int>> path;
    double value = 0;
    if (FindNonFinite(cfg, &path, &value))
      return fail(path, "must be a finite number, got " + NumberText(value));
  }
  const auto& d = cfg.data();
  if (d.batch_size() <= 0 || d.batch_size() > kMaxBatch)
    return fail({{"data", -1}, {"batch_size", -1}},
                (d.batch_size() <= 0 ? "must be positive, got "
                                     : "must be at most " + std::to_string(kMaxBatch) + ", got ") +
                    std::to_string(d.batch_size()));
  if (d.has_synthetic() && !d.train_dir().empty())
    return fail({{"data", -1}, {"train_dir", -1}},
                "data.synthetic is set too: a run trains on one of them (use a config "
                "without data.synthetic to train on '" +
                    d.train_dir() + "')");
  if (!d.eval_dir().empty())
    return fail({{"data", -1}, {"eval_dir", -1}},
                "is not used: evaluation reads the held-out events that `ips data convert` "
                "keeps in data.train_dir");
  if (d.max_history() <= 0)
    return fail({{"data", -1}, {"max_history", -1}},
                "must be positive, got " + std::to_string(d.max_history()));
  if (d.has_synthetic()) {
    if (d.synthetic().num_items() <= 0)
      return fail({{"data", -1}, {"synthetic", -1}, {"num_items", -1}}, "must be positive");
    if (d.synthetic().num_categories() <= 0)
      return fail({{"data", -1}, {"synthetic", -1}, {"num_categories", -1}}, "must be positive");
  }
  const auto& m = cfg.model();
  if (m.embedding_dim() <= 0)
    return fail({{"model", -1}, {"embedding_dim", -1}},
                "must be positive, got " + std::to_string(m.embedding_dim()));
  for (int i = 0; i < m.mlp_hidden_size(); ++i)
    if (m.mlp_hidden(i) <= 0) return fail({{"model", -1}, {"mlp_hidden", i}}, "must be positive");
  for (int i = 0; i < m.attention_hidden_size(); ++i)
    if (m.attention_hidden(i) <= 0)
      return fail({{"model", -1}, {"attention_hidden", i}}, "must be positive");
  if (m.dropout() < 0 || m.dropout() >= 1)
    return fail({{"model", -1}, {"dropout", -1}}, "must be in [0, 1)");
  if (m.num_heads() <= 0) return fail({{"model", -1}, {"num_heads", -1}}, "must be positive");
  // The checks of the model that the config builds (worker/model_factory.cc ModelSpecFromConfig
  // and the models' Validate*Options, which stay as the models' own guard), made here so that a
  // bad value is blamed on its --set or its line. Only the fields the model type reads.
  const config::ModelConfig::Type type = m.type();
  const std::string kind = config::ModelConfig::Type_Name(type);
  const int64_t width = m.embedding_dim();
  const Path embedding_dim = {{"model", -1}, {"embedding_dim", -1}};
  if (type == config::ModelConfig::DIN || type == config::ModelConfig::DIEN ||
      type == config::ModelConfig::POOLED || type == config::ModelConfig::BST) {
    const Path activation = {{"model", -1}, {"activation", -1}};
    if (m.activation() != config::PRELU && m.activation() != config::DICE)
      return fail(activation, config::Activation_Name(m.activation()) + ": the MLP head of " +
                                  kind + " supports PRELU and DICE");
    // Dice normalises each hidden layer over the rows of the batch.
    if (m.activation() == config::DICE && d.batch_size() < 2)
      return fail_either({{"data", -1}, {"batch_size", -1}},
                         "model.activation DICE needs batches of at least 2 rows, got " +
                             std::to_string(d.batch_size()),
                         activation,
                         "DICE needs batches of at least 2 rows (data.batch_size is " +
                             std::to_string(d.batch_size()) + ")");
  }
  if ((type == config::ModelConfig::DIN || type == config::ModelConfig::DIEN) &&
      m.attention_hidden_size() != 0 && m.attention_hidden_size() != 2)
    return fail({{"model", -1}, {"attention_hidden", -1}},
                "the " + kind + " activation unit has exactly 2 hidden layers (got " +
                    std::to_string(m.attention_hidden_size()) + " sizes)");
  const Path rnn_hidden = {{"model", -1}, {"rnn_hidden", -1}};
  switch (type) {
    case config::ModelConfig::DIEN:
      // The activation unit compares the target (item and category: 2 * embedding_dim wide) with
      // the interest extractor's states. Unset or 0: that width.
      if (m.has_rnn_hidden() && m.rnn_hidden() != 0 && m.rnn_hidden() != 2 * width)
        return fail_either(rnn_hidden,
                           "must be 2 * model.embedding_dim = " + std::to_string(2 * width) +
                               " (or 0 for that), got " + std::to_string(m.rnn_hidden()),
                           embedding_dim,
                           std::to_string(width) + " needs model.rnn_hidden " +
                               std::to_string(2 * width) + " (2 * embedding_dim) or 0, not " +
                               std::to_string(m.rnn_hidden()));
      if (m.aux_loss_weight() < 0)
        return fail({{"model", -1}, {"aux_loss_weight", -1}},
                    "must be >= 0 (0: no auxiliary loss), got " + NumberText(m.aux_loss_weight()));
      break;
    case config::ModelConfig::GRU4REC:
      if (m.has_rnn_hidden() && m.rnn_hidden() < 0)
        return fail(rnn_hidden,
                    "must be >= 0 (0: model.embedding_dim), got " + std::to_string(m.rnn_hidden()));
      break;
    case config::ModelConfig::MIND:
      if (m.num_interests() < 1 || m.num_interests() > kMaxInterests)
        return fail({{"model", -1}, {"num_interests", -1}},
                    "must be in [1, " + std::to_string(kMaxInterests) + "], got " +
                        std::to_string(m.num_interests()));
      if (m.routing_iterations() < 1 || m.routing_iterations() > kMaxRoutingIterations)
        return fail({{"model", -1}, {"routing_iterations", -1}},
                    "must be in [1, " + std::to_string(kMaxRoutingIterations) + "], got " +
                        std::to_string(m.routing_iterations()));
      break;
    case config::ModelConfig::SASREC:
    case config::ModelConfig::BST: {
      if (m.num_blocks() < 1)
        return fail({{"model", -1}, {"num_blocks", -1}},
                    "must be >= 1, got " + std::to_string(m.num_blocks()));
      // The heads split the blocks' width: SASRec's is the embedding, BST's item and category.
      const bool bst = type == config::ModelConfig::BST;
      const int64_t block_width = bst ? 2 * width : width;
      const std::string of =
          bst ? "BST's block width 2 * model.embedding_dim = " + std::to_string(block_width)
              : "model.embedding_dim " + std::to_string(width);
      if (block_width % m.num_heads() != 0)
        return fail_either({{"model", -1}, {"num_heads", -1}},
                           std::to_string(m.num_heads()) + " does not divide " + of, embedding_dim,
                           (bst ? "2 * " : "") + std::to_string(width) +
                               " is not divisible by model.num_heads " +
                               std::to_string(m.num_heads()));
      break;
    }
    default:
      break;
  }
  // The optimizer of the dense weights, and of every table without its own: the store's checks
  // (ps/table_options.cc ValidateTableOptions) of the fields its type reads.
  auto check_optimizer = [&](const config::OptimizerConfig& o, const Path& at) -> Status {
    auto field = [&](const char* name) {
      Path p = at;
      p.emplace_back(name, -1);
      return p;
    };
    if (o.learning_rate() <= 0) return fail(field("learning_rate"), "must be positive");
    const bool adam = o.type() == config::OptimizerConfig::ADAM;
    if (adam && !(o.beta1() >= 0 && o.beta1() < 1))
      return fail(field("beta1"), "must be in [0, 1), got " + NumberText(o.beta1()));
    if (adam && !(o.beta2() >= 0 && o.beta2() < 1))
      return fail(field("beta2"), "must be in [0, 1), got " + NumberText(o.beta2()));
    if ((adam || o.type() == config::OptimizerConfig::ADAGRAD) && o.epsilon() <= 0)
      return fail(field("epsilon"), "must be positive, got " + NumberText(o.epsilon()));
    if (o.initial_accumulator() < 0)
      return fail(field("initial_accumulator"),
                  "must be >= 0, got " + NumberText(o.initial_accumulator()));
    if (o.type() == config::OptimizerConfig::FTRL) {
      if (o.l1() < 0) return fail(field("l1"), "must be >= 0, got " + NumberText(o.l1()));
      if (o.l2() < 0) return fail(field("l2"), "must be >= 0, got " + NumberText(o.l2()));
      if (o.ftrl_beta() < 0)
        return fail(field("ftrl_beta"), "must be >= 0, got " + NumberText(o.ftrl_beta()));
    }
    return Status::Ok();
  };
  IPS_RETURN_IF_ERROR(check_optimizer(cfg.optimizer(), {{"optimizer", -1}}));
  for (int i = 0; i < cfg.tables_size(); ++i) {
    const auto& t = cfg.tables(i);
    if (t.name().empty()) return fail({{"tables", i}, {"name", -1}}, "every table needs a name");
    if (t.dim() <= 0) return fail({{"tables", i}, {"dim", -1}}, "must be positive");
    if (t.dim() > kMaxTableDim)
      return fail({{"tables", i}, {"dim", -1}}, "must be at most " + std::to_string(kMaxTableDim) +
                                                    ", got " + std::to_string(t.dim()));
    if (t.min_count() < 0) return fail({{"tables", i}, {"min_count", -1}}, "must be >= 0");
    if (t.min_count() > kMaxMinCount)
      return fail({{"tables", i}, {"min_count", -1}},
                  "must be at most " + std::to_string(kMaxMinCount) +
                      " (the admission counters are 16 bits), got " +
                      std::to_string(t.min_count()));
    if (t.ttl_steps() < 0 || t.ttl_steps() > kMaxTtlSteps)
      return fail({{"tables", i}, {"ttl_steps", -1}},
                  "must be in [0, " + std::to_string(kMaxTtlSteps) +
                      "] (0: rows never expire), got " + std::to_string(t.ttl_steps()));
    // The smallest cap that holds the table is the store's to check (it depends on its layout):
    // ps/dynamic_table.cc names it.
    if (t.max_memory_mb() < 0)
      return fail({{"tables", i}, {"max_memory_mb", -1}},
                  "must be >= 0 (0: no cap), got " + std::to_string(t.max_memory_mb()));
    if (t.has_optimizer())
      IPS_RETURN_IF_ERROR(check_optimizer(t.optimizer(), {{"tables", i}, {"optimizer", -1}}));
    const auto& init = t.initializer();
    if (init.type() == config::InitializerConfig::NORMAL && init.stddev() < 0)
      return fail({{"tables", i}, {"initializer", -1}, {"stddev", -1}},
                  "must be >= 0, got " + NumberText(init.stddev()));
    if (init.type() == config::InitializerConfig::UNIFORM && init.range() < 0)
      return fail({{"tables", i}, {"initializer", -1}, {"range", -1}},
                  "must be >= 0, got " + NumberText(init.range()));
    for (int j = 0; j < i; ++j)
      if (cfg.tables(j).name() == t.name())
        return fail({{"tables", i}, {"name", -1}}, "duplicate table name '" + t.name() + "'");
  }
  // The model reads its embeddings from the 'item' table (CTR models: and 'category'), rows of
  // model.embedding_dim floats (worker/trainer.cc TrainJobFromConfig).
  const bool sequence = type == config::ModelConfig::SASREC || type == config::ModelConfig::GRU4REC;
  for (int i = 0; i < cfg.tables_size(); ++i) {
    const auto& t = cfg.tables(i);
    if (t.name() != "item" && (sequence || t.name() != "category")) continue;
    if (t.dim() != width)
      return fail_either(
          {{"tables", i}, {"dim", -1}},
          std::to_string(t.dim()) + " != model.embedding_dim " + std::to_string(width) +
              " (table '" + t.name() + "' holds the model's embeddings)",
          embedding_dim,
          std::to_string(width) + " != tables[" + std::to_string(i) + "].dim " +
              std::to_string(t.dim()) + " (table '" + t.name() + "' holds the model's embeddings)");
  }
  if (cfg.train().epochs() <= 0) return fail({{"train", -1}, {"epochs", -1}}, "must be positive");
  // Thread counts are capped: a typo of 10000 would start that many threads and abort in
  // std::thread instead of failing here.
  if (cfg.train().num_threads() <= 0 || cfg.train().num_threads() > kMaxThreads)
    return fail({{"train", -1}, {"num_threads", -1}},
                "must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                    std::to_string(cfg.train().num_threads()));
  if (cfg.cluster().num_ps() < 0) return fail({{"cluster", -1}, {"num_ps", -1}}, "must be >= 0");
  if (cfg.cluster().staleness() < 0)
    return fail({{"cluster", -1}, {"staleness", -1}}, "must be >= 0");
  // SYNC waits for every push before a pull (a bound of 0): a staleness there would be ignored.
  if (cfg.cluster().staleness() > 0 && cfg.cluster().sync() != config::ClusterConfig::ASYNC) {
    const std::string s = std::to_string(cfg.cluster().staleness());
    return fail_either({{"cluster", -1}, {"staleness", -1}},
                       s + " is read only with cluster.sync ASYNC, and cluster.sync is SYNC: set "
                           "cluster.sync to ASYNC, or leave cluster.staleness out",
                       {{"cluster", -1}, {"sync", -1}},
                       "SYNC would ignore cluster.staleness " + s +
                           " (only ASYNC reads a staleness bound): set cluster.sync to ASYNC, or "
                           "leave cluster.staleness out");
  }
  if (cfg.cluster().ps_threads() < 0 || cfg.cluster().ps_threads() > kMaxThreads)
    return fail({{"cluster", -1}, {"ps_threads", -1}},
                "must be in [0, " + std::to_string(kMaxThreads) + "] (0: automatic), got " +
                    std::to_string(cfg.cluster().ps_threads()));
  if (cfg.cluster().transport_spin_us() < -1 || cfg.cluster().transport_spin_us() > 1000000)
    return fail({{"cluster", -1}, {"transport_spin_us", -1}},
                "must be in [0, 1000000] microseconds, or -1 (automatic)");
  if (cfg.checkpoint().keep_last() <= 0)
    return fail({{"checkpoint", -1}, {"keep_last", -1}}, "must be positive");
  if (cfg.checkpoint().every_steps() < 0)
    return fail({{"checkpoint", -1}, {"every_steps", -1}},
                "must be >= 0 (0: no step-based checkpoints), got " +
                    std::to_string(cfg.checkpoint().every_steps()));
  if (cfg.checkpoint().every_seconds() < 0)
    return fail({{"checkpoint", -1}, {"every_seconds", -1}},
                "must be >= 0 (0: no time-based checkpoints), got " +
                    NumberText(cfg.checkpoint().every_seconds()));
  return Status::Ok();
}

StatusOr<config::Config> LoadConfig(const std::string& path,
                                    const std::vector<std::string>& overrides) {
  IPS_ASSIGN_OR_RETURN(const std::string text, ReadConfigFile(path));
  IPS_ASSIGN_OR_RETURN(config::Config cfg, ParseConfigText(text, path));
  for (const auto& o : overrides) IPS_RETURN_IF_ERROR(ApplyOverride(o, &cfg));
  IPS_RETURN_IF_ERROR(ValidateConfig(cfg, path, text, overrides));
  return cfg;
}

std::string ConfigToText(const config::Config& config) {
  std::string out;
  pb::TextFormat::PrintToString(config, &out);
  return out;
}

}  // namespace ips
