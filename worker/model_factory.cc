#include "worker/model_factory.h"

#include <utility>

#include "kernels/context.h"
#include "proto/config.pb.h"

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

StatusOr<models::MlpActivation> ActivationOf(const config::ModelConfig& m) {
  switch (m.activation()) {
    case config::PRELU:
      return models::MlpActivation::kPrelu;
    case config::DICE:
      return models::MlpActivation::kDice;
    default:
      return InvalidArgumentError("model.activation " + config::Activation_Name(m.activation()) +
                                  ": the MLP heads support PRELU and DICE");
  }
}

models::BlockLayout LayoutOf(const config::ModelConfig& m) {
  return m.block_layout() == config::ModelConfig::QUERY_NORM ? models::BlockLayout::kQueryNorm
                                                             : models::BlockLayout::kPreLn;
}

// model.attention_hidden: the activation unit's two hidden widths (unset = the model's default).
Status AttentionHidden(const config::ModelConfig& m, const char* model, int64_t* h1, int64_t* h2) {
  if (m.attention_hidden_size() == 0) return Status::Ok();
  if (m.attention_hidden_size() != 2)
    return InvalidArgumentError(std::string("model.attention_hidden: the ") + model +
                                " activation unit has exactly 2 hidden layers (got " +
                                std::to_string(m.attention_hidden_size()) + " sizes)");
  *h1 = m.attention_hidden(0);
  *h2 = m.attention_hidden(1);
  return Status::Ok();
}

// A model's option check failed on a spec made from a config: names the config field behind the
// option ("MindOptions.num_interests: ..." -> "model.num_interests: ..."), which the user sets.
// ValidateConfig (proto/config_loader.cc) refuses these values first, blaming the file line or
// the --set; this keeps the config's names when a Config that skipped it reaches here. Options
// that no config field sets keep their own names.
Status InConfigTerms(const Status& s, const std::string& options) {
  if (s.ok()) return s;
  const std::string prefix = options + ".";
  const std::string& msg = s.message();
  if (msg.compare(0, prefix.size(), prefix) != 0) return s;
  const size_t colon = msg.find(':', prefix.size());
  if (colon == std::string::npos) return s;
  const std::string field = msg.substr(prefix.size(), colon - prefix.size());
  std::string path;
  if (field == "embedding_dim" || field == "num_interests" || field == "routing_iterations" ||
      field == "num_blocks" || field == "num_heads" || field == "dropout" ||
      field == "aux_loss_weight" || field == "rnn_hidden" || field.rfind("mlp_hidden[", 0) == 0) {
    path = "model." + field;
  } else if (field == "hidden") {  // GRU4Rec's
    path = "model.rnn_hidden";
  } else if (field == "attention_hidden1" || field == "attention_hidden2") {
    path = std::string("model.attention_hidden[") + (field.back() == '1' ? "0" : "1") + "]";
  } else if (field == "max_len") {
    path = "data.max_history";
  } else if (field == "max_batch") {
    path = "data.batch_size";
  } else {
    return s;
  }
  return Status(s.code(), path + msg.substr(colon));
}

}  // namespace

// ModelSpecFromConfig without the device checks.
static StatusOr<ModelSpec> SpecOfConfig(const config::Config& cfg) {
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
  if (s.embedding_dim < 1)
    return InvalidArgumentError("model.embedding_dim must be >= 1 (got " +
                                std::to_string(s.embedding_dim) + ")");
  switch (m.type()) {
    case config::ModelConfig::DIN: {
      s.kind = ModelKind::kDin;
      models::DinOptions& d = s.din;
      IPS_RETURN_IF_ERROR(AttentionHidden(m, "DIN", &d.attention_hidden1, &d.attention_hidden2));
      if (m.mlp_hidden_size() != 0)
        d.mlp_hidden.assign(m.mlp_hidden().begin(), m.mlp_hidden().end());
      IPS_ASSIGN_OR_RETURN(d.activation, ActivationOf(m));
      d.attention_softmax = m.attention_softmax();
      IPS_RETURN_IF_ERROR(
          InConfigTerms(models::ValidateDinOptions(WithCommon(d, s)), "DinOptions"));
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
      IPS_RETURN_IF_ERROR(AttentionHidden(m, "DIEN", &d.attention_hidden1, &d.attention_hidden2));
      if (m.mlp_hidden_size() != 0)
        d.mlp_hidden.assign(m.mlp_hidden().begin(), m.mlp_hidden().end());
      IPS_ASSIGN_OR_RETURN(d.activation, ActivationOf(m));
      IPS_RETURN_IF_ERROR(
          InConfigTerms(models::ValidateDienOptions(WithCommon(d, s)), "DienOptions"));
      return s;
    }
    case config::ModelConfig::POOLED: {
      s.kind = ModelKind::kPooled;
      models::PooledOptions& p = s.pooled;
      if (m.mlp_hidden_size() != 0)
        p.mlp_hidden.assign(m.mlp_hidden().begin(), m.mlp_hidden().end());
      IPS_ASSIGN_OR_RETURN(p.activation, ActivationOf(m));
      IPS_RETURN_IF_ERROR(
          InConfigTerms(models::ValidatePooledOptions(WithCommon(p, s)), "PooledOptions"));
      return s;
    }
    case config::ModelConfig::MIND: {
      s.kind = ModelKind::kMind;
      s.mind.num_interests = m.num_interests();
      s.mind.routing_iterations = m.routing_iterations();
      IPS_RETURN_IF_ERROR(
          InConfigTerms(models::ValidateMindOptions(WithCommon(s.mind, s)), "MindOptions"));
      return s;
    }
    case config::ModelConfig::SASREC: {
      s.kind = ModelKind::kSasrec;
      s.sasrec.num_blocks = m.num_blocks();
      s.sasrec.num_heads = m.num_heads();
      s.sasrec.dropout = m.dropout();
      s.sasrec.layout = LayoutOf(m);
      IPS_RETURN_IF_ERROR(
          InConfigTerms(models::ValidateSasrecOptions(WithCommon(s.sasrec, s)), "SasrecOptions"));
      return s;
    }
    case config::ModelConfig::BST: {
      s.kind = ModelKind::kBst;
      models::BstOptions& b = s.bst;
      b.num_blocks = m.num_blocks();
      b.num_heads = m.num_heads();
      b.dropout = m.dropout();
      b.layout = LayoutOf(m);
      if (m.mlp_hidden_size() != 0)
        b.mlp_hidden.assign(m.mlp_hidden().begin(), m.mlp_hidden().end());
      IPS_ASSIGN_OR_RETURN(b.activation, ActivationOf(m));
      IPS_RETURN_IF_ERROR(
          InConfigTerms(models::ValidateBstOptions(WithCommon(b, s)), "BstOptions"));
      return s;
    }
    case config::ModelConfig::GRU4REC: {
      s.kind = ModelKind::kGru4Rec;
      // rnn_hidden's default (36) is DIEN's; GRU4Rec's default is the embedding width.
      s.gru4rec.hidden = m.has_rnn_hidden() ? m.rnn_hidden() : 0;
      s.gru4rec.cell = m.cell() == config::LSTM ? kernels::RnnCell::kLstm : kernels::RnnCell::kGru;
      IPS_RETURN_IF_ERROR(InConfigTerms(models::ValidateGru4RecOptions(WithCommon(s.gru4rec, s)),
                                        "Gru4RecOptions"));
      return s;
    }
    default:
      return UnimplementedError("model.type " + config::ModelConfig::Type_Name(m.type()) +
                                ": not trained yet");
  }
}

StatusOr<ModelSpec> ModelSpecFromConfig(const config::Config& cfg) {
  IPS_ASSIGN_OR_RETURN(ModelSpec s, SpecOfConfig(cfg));
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
