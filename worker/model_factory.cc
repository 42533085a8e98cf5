#include "worker/model_factory.h"

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kernels/context.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"

namespace ips {

const char* ModelKindName(ModelKind kind) {
  switch (kind) {
    case ModelKind::kPooled:
      return "pooled";
    case ModelKind::kDin:
      return "din";
    case ModelKind::kDien:
      return "dien";
    case ModelKind::kSasrec:
      return "sasrec";
    case ModelKind::kBst:
      return "bst";
    case ModelKind::kMind:
      return "mind";
    case ModelKind::kGru4Rec:
      return "gru4rec";
  }
  return "unknown";
}

bool IsSequenceModel(ModelKind kind) {
  return kind == ModelKind::kSasrec || kind == ModelKind::kGru4Rec;
}

namespace {

template <typename Options>
Options WithCommon(Options o, const ModelSpec& s) {
  o.embedding_dim = s.embedding_dim;
  o.max_len = s.max_len;
  o.max_batch = s.max_batch;
  o.seed = s.seed;
  o.device = s.device;
  return o;
}

template <typename Model>
StatusOr<std::unique_ptr<models::CtrModel<float>>> Upcast(StatusOr<std::unique_ptr<Model>> m) {
  if (!m.ok()) return m.status();
  return std::unique_ptr<models::CtrModel<float>>(std::move(*m));
}

template <typename Model>
StatusOr<std::unique_ptr<models::SeqModel<float>>> UpcastSeq(StatusOr<std::unique_ptr<Model>> m) {
  if (!m.ok()) return m.status();
  return std::unique_ptr<models::SeqModel<float>>(std::move(*m));
}

}  // namespace

StatusOr<std::unique_ptr<models::CtrModel<float>>> CreateCtrModel(const ModelSpec& spec) {
  switch (spec.kind) {
    case ModelKind::kDin:
      return Upcast(models::Din<float>::Create(WithCommon(spec.din, spec)));
    case ModelKind::kDien:
      return Upcast(models::Dien<float>::Create(WithCommon(spec.dien, spec)));
    case ModelKind::kPooled:
      return Upcast(models::PooledModel<float>::Create(WithCommon(spec.pooled, spec)));
    case ModelKind::kMind:
      return Upcast(models::Mind<float>::Create(WithCommon(spec.mind, spec)));
    case ModelKind::kBst:
      return Upcast(models::Bst<float>::Create(WithCommon(spec.bst, spec)));
    default:
      break;
  }
  if (IsSequenceModel(spec.kind))
    return FailedPreconditionError(std::string("model ") + ModelKindName(spec.kind) +
                                   " is a sequence model, not a CTR model");
  return UnimplementedError(std::string("model ") + ModelKindName(spec.kind) + " is not built yet");
}

StatusOr<std::unique_ptr<models::SeqModel<float>>> CreateSeqModel(const ModelSpec& spec) {
  if (!IsSequenceModel(spec.kind))
    return FailedPreconditionError(std::string("model ") + ModelKindName(spec.kind) +
                                   " is a CTR model, not a sequence model");
  switch (spec.kind) {
    case ModelKind::kGru4Rec:
      return UpcastSeq(models::Gru4Rec<float>::Create(WithCommon(spec.gru4rec, spec)));
    case ModelKind::kSasrec:
      return UpcastSeq(models::Sasrec<float>::Create(WithCommon(spec.sasrec, spec)));
    default:
      break;
  }
  return UnimplementedError(std::string("model ") + ModelKindName(spec.kind) + " is not built yet");
}

namespace {

models::BlockLayout LayoutOf(const config::ModelConfig& m) {
  return m.block_layout() == config::ModelConfig::QUERY_NORM ? models::BlockLayout::kQueryNorm
                                                             : models::BlockLayout::kPreLn;
}

// model.attention_hidden: the activation unit's two hidden widths (unset = the model's default).
Status AttentionHidden(const config::ModelConfig& m, const std::string& kind,
                       const ConfigSource& src, int64_t* h1, int64_t* h2) {
  if (m.attention_hidden_size() == 0) return Status::Ok();
  if (m.attention_hidden_size() != 2)
    return BlameConfigField(src, "model.attention_hidden",
                            "the " + kind + " activation unit has exactly 2 hidden layers (got " +
                                std::to_string(m.attention_hidden_size()) + " sizes)");
  *h1 = m.attention_hidden(0);
  *h2 = m.attention_hidden(1);
  return Status::Ok();
}

// The config field that sets a model option (ModelSpecFromConfig's mapping below), or "" for an
// option no config field sets.
std::string ConfigPathOfOption(const std::string& field) {
  if (field == "embedding_dim" || field == "num_interests" || field == "routing_iterations" ||
      field == "num_blocks" || field == "num_heads" || field == "dropout" ||
      field == "aux_loss_weight" || field == "rnn_hidden" || field == "activation" ||
      field.rfind("mlp_hidden[", 0) == 0)
    return "model." + field;
  if (field == "hidden") return "model.rnn_hidden";  // GRU4Rec's
  if (field == "attention_hidden1") return "model.attention_hidden[0]";
  if (field == "attention_hidden2") return "model.attention_hidden[1]";
  if (field == "max_len") return "data.max_history";
  if (field == "max_batch") return "data.batch_size";
  return "";
}

// The `names` a model's checks take: the config field path that sets an option, else the
// options' own name ("DinOptions.aux_hidden[0]").
std::function<std::string(const std::string&)> ConfigNamesOf(const char* options_name) {
  return [options_name](const std::string& field) {
    const std::string path = ConfigPathOfOption(field);
    return path.empty() ? std::string(options_name) + "." + field : path;
  };
}

// The error of a model check run with ConfigNamesOf, blamed on the config field at fault
// (BlameConfigField). `also_read`: for a field at fault, the other config fields its check reads
// (SASRec's model.num_heads must divide model.embedding_dim), so that a --set of one of them is
// named. A failure of an option no config field sets keeps the options' name.
Status BlameOptionError(const Status& s, const ConfigSource& src,
                        const std::map<std::string, std::vector<std::string>>& also_read = {}) {
  if (s.ok()) return s;
  // The message starts with the name of the option at fault: a config field path ("model.",
  // "data.") when a config field sets it.
  const std::string& message = s.message();
  const size_t colon = message.find(": ");
  if (colon == std::string::npos) return s;
  const std::string path = message.substr(0, colon);
  if (path.rfind("model.", 0) != 0 && path.rfind("data.", 0) != 0) return s;
  const auto also = also_read.find(path);
  return BlameConfigField(src, path, message.substr(colon + 2),
                          also == also_read.end() ? std::vector<std::string>{} : also->second);
}

// model.mlp_hidden and model.activation of a model with an MLP head (DIN, DIEN, POOLED, BST),
// checked by the head's own rules (models/layers.h CheckMlpHeadOptions: the widths, and Dice's
// batches against data.batch_size) under the config's names. The head's options know two
// activations (models::MlpActivation).
Status MlpHead(const config::Config& cfg, const std::string& kind, const char* options_name,
               const ConfigSource& src, std::vector<int64_t>* hidden,
               models::MlpActivation* activation) {
  const config::ModelConfig& m = cfg.model();
  if (m.mlp_hidden_size() != 0) hidden->assign(m.mlp_hidden().begin(), m.mlp_hidden().end());
  switch (m.activation()) {
    case config::PRELU:
      *activation = models::MlpActivation::kPrelu;
      break;
    case config::DICE:
      *activation = models::MlpActivation::kDice;
      break;
    default:
      return BlameConfigField(src, "model.activation",
                              config::Activation_Name(m.activation()) + ": the MLP head of " +
                                  kind + " supports PRELU and DICE");
  }
  return BlameOptionError(
      models::CheckMlpHeadOptions(
          options_name, *hidden, *activation, cfg.data().batch_size(), ConfigNamesOf(options_name),
          [&](const std::string& a, const std::string& what_a, const std::string& b,
              const std::string& what_b) { return BlameConfigFields(src, a, what_a, b, what_b); }),
      src);
}

// Runs a model's Validate*Options, the one copy of its checks, on options made from the config,
// with the config's names for the options (ConfigNamesOf), and blames a failure on the config
// field at fault (BlameOptionError, `also_read` as there).
template <typename Options>
Status CheckModelOptions(Status (*validate)(const Options&,
                                            const std::function<std::string(const std::string&)>&),
                         const Options& options, const char* options_name, const ConfigSource& src,
                         const std::map<std::string, std::vector<std::string>>& also_read = {}) {
  return BlameOptionError(validate(options, ConfigNamesOf(options_name)), src, also_read);
}

// ModelSpecFromConfig without the device checks, its errors blamed on `src`.
StatusOr<ModelSpec> SpecOfConfig(const config::Config& cfg, const ConfigSource& src) {
  const auto& m = cfg.model();
  ModelSpec s;
  if (m.device() == config::CUDA) {
    s.device = kernels::Device::kCuda;
  } else if (m.device() != config::CPU) {
    return UnimplementedError("model.device " + config::Device_Name(m.device()) +
                              ": unknown device");
  }
  s.embedding_dim = m.embedding_dim();
  s.max_len = cfg.data().max_history();
  s.max_batch = cfg.data().batch_size();
  s.seed = cfg.train().seed();
  const std::string kind = config::ModelConfig::Type_Name(m.type());
  // SASRec's and BST's heads split a width of model.embedding_dim: a check of model.num_heads
  // reads it too.
  const std::map<std::string, std::vector<std::string>> heads_split_width = {
      {"model.num_heads", {"model.embedding_dim"}}};
  switch (m.type()) {
    case config::ModelConfig::DIN: {
      s.kind = ModelKind::kDin;
      models::DinOptions& d = s.din;
      IPS_RETURN_IF_ERROR(
          AttentionHidden(m, kind, src, &d.attention_hidden1, &d.attention_hidden2));
      IPS_RETURN_IF_ERROR(MlpHead(cfg, kind, "DinOptions", src, &d.mlp_hidden, &d.activation));
      d.attention_softmax = m.attention_softmax();
      IPS_RETURN_IF_ERROR(
          CheckModelOptions(models::ValidateDinOptions, WithCommon(d, s), "DinOptions", src));
      return s;
    }
    case config::ModelConfig::DIEN: {
      s.kind = ModelKind::kDien;
      models::DienOptions& d = s.dien;
      d.rnn_hidden = m.has_rnn_hidden() ? m.rnn_hidden() : 0;  // 0 = 2 * embedding_dim
      d.cell = m.cell() == config::LSTM ? models::DienCell::kLstm : models::DienCell::kGru;
      d.aux_loss_weight = m.aux_loss_weight();
      // A zero weight skips the auxiliary network's work instead of multiplying it by zero.
      d.aux_loss_disabled = m.aux_loss_weight() == 0;
      IPS_RETURN_IF_ERROR(
          AttentionHidden(m, kind, src, &d.attention_hidden1, &d.attention_hidden2));
      IPS_RETURN_IF_ERROR(MlpHead(cfg, kind, "DienOptions", src, &d.mlp_hidden, &d.activation));
      IPS_RETURN_IF_ERROR(CheckModelOptions(models::ValidateDienOptions, WithCommon(d, s),
                                            "DienOptions", src,
                                            {{"model.rnn_hidden", {"model.embedding_dim"}}}));
      return s;
    }
    case config::ModelConfig::POOLED: {
      s.kind = ModelKind::kPooled;
      models::PooledOptions& p = s.pooled;
      IPS_RETURN_IF_ERROR(MlpHead(cfg, kind, "PooledOptions", src, &p.mlp_hidden, &p.activation));
      IPS_RETURN_IF_ERROR(
          CheckModelOptions(models::ValidatePooledOptions, WithCommon(p, s), "PooledOptions", src));
      return s;
    }
    case config::ModelConfig::MIND: {
      s.kind = ModelKind::kMind;
      s.mind.num_interests = m.num_interests();
      s.mind.routing_iterations = m.routing_iterations();
      IPS_RETURN_IF_ERROR(CheckModelOptions(models::ValidateMindOptions, WithCommon(s.mind, s),
                                            "MindOptions", src));
      return s;
    }
    case config::ModelConfig::SASREC: {
      s.kind = ModelKind::kSasrec;
      s.sasrec.num_blocks = m.num_blocks();
      s.sasrec.num_heads = m.num_heads();
      s.sasrec.dropout = m.dropout();
      s.sasrec.layout = LayoutOf(m);
      IPS_RETURN_IF_ERROR(CheckModelOptions(models::ValidateSasrecOptions, WithCommon(s.sasrec, s),
                                            "SasrecOptions", src, heads_split_width));
      return s;
    }
    case config::ModelConfig::BST: {
      s.kind = ModelKind::kBst;
      models::BstOptions& b = s.bst;
      b.num_blocks = m.num_blocks();
      b.num_heads = m.num_heads();
      b.dropout = m.dropout();
      b.layout = LayoutOf(m);
      IPS_RETURN_IF_ERROR(MlpHead(cfg, kind, "BstOptions", src, &b.mlp_hidden, &b.activation));
      IPS_RETURN_IF_ERROR(CheckModelOptions(models::ValidateBstOptions, WithCommon(b, s),
                                            "BstOptions", src, heads_split_width));
      return s;
    }
    case config::ModelConfig::GRU4REC: {
      s.kind = ModelKind::kGru4Rec;
      // rnn_hidden's default (36) is DIEN's; GRU4Rec's default is the embedding width.
      s.gru4rec.hidden = m.has_rnn_hidden() ? m.rnn_hidden() : 0;
      s.gru4rec.cell = m.cell() == config::LSTM ? kernels::RnnCell::kLstm : kernels::RnnCell::kGru;
      IPS_RETURN_IF_ERROR(CheckModelOptions(models::ValidateGru4RecOptions,
                                            WithCommon(s.gru4rec, s), "Gru4RecOptions", src));
      return s;
    }
    default:
      return UnimplementedError("model.type " + kind + ": not trained yet");
  }
}

}  // namespace

Status CheckModelConfig(const config::Config& cfg, const ConfigSource& source) {
  return SpecOfConfig(cfg, source).status();
}

StatusOr<ModelSpec> ModelSpecFromConfig(const config::Config& cfg) {
  // Without a source, an error names the config field alone ("model.num_interests: ...").
  IPS_ASSIGN_OR_RETURN(ModelSpec s, SpecOfConfig(cfg, ConfigSource()));
  if (s.device == kernels::Device::kCuda && !kernels::CudaBuilt())
    return UnimplementedError(
        "model.device CUDA: this ips was built without CUDA (nvcc was not found at configure "
        "time)");
  if (s.device == kernels::Device::kCuda && !kernels::CudaDeviceAvailable())
    return FailedPreconditionError("model.device CUDA: no CUDA device is visible");
  return s;
}

StatusOr<std::unique_ptr<models::CtrModel<float>>> CreateCtrModel(const config::Config& config,
                                                                  int64_t max_batch) {
  // Scoring runs on the CPU whatever device trained the model: the serving library and `ips
  // eval` read host weights, and a checkpoint holds the same tensors either way.
  config::Config on_cpu = config;
  on_cpu.mutable_model()->set_device(config::CPU);
  IPS_ASSIGN_OR_RETURN(ModelSpec spec, ModelSpecFromConfig(on_cpu));
  spec.max_batch = max_batch;
  return CreateCtrModel(spec);
}

}  // namespace ips
