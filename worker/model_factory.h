// The model registry: which models exist, their options, and how a config becomes a model.
//
// ModelSpec holds the common sizes once (embedding width, history length, batch capacity, seed)
// plus each model family's own options; CreateCtrModel / CreateSeqModel copy the common sizes
// into the chosen family's options and build it. ModelSpecFromConfig is the one place where
// proto/config.proto's ModelConfig is read, so the trainers, `ips eval`, `ips export` and the
// scorer all build the same model from the same config.
#ifndef IPS_WORKER_MODEL_FACTORY_H_
#define IPS_WORKER_MODEL_FACTORY_H_

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "models/bst.h"
#include "models/dien.h"
#include "models/din.h"
#include "models/gru4rec.h"
#include "models/mind.h"
#include "models/model.h"
#include "models/pooled.h"
#include "models/sasrec.h"

namespace ips {

namespace config {
class Config;
}
struct ConfigSource;  // proto/config_loader.h

enum class ModelKind { kPooled, kDin, kDien, kSasrec, kBst, kMind, kGru4Rec };
const char* ModelKindName(ModelKind kind);
// SASRec and GRU4Rec train on sequences (SeqModel); the others on CTR samples (CtrModel).
bool IsSequenceModel(ModelKind kind);

struct ModelSpec {
  ModelKind kind = ModelKind::kDin;
  // Common sizes; they override the same fields of the family's options.
  int64_t embedding_dim = 18;
  int64_t max_len = 50;
  int64_t max_batch = 512;
  uint64_t seed = 0;
  // Where the model runs (model.device; it overrides the family's device). Every model runs on
  // CUDA in a CUDA build (the model's Create: UNIMPLEMENTED without one).
  kernels::Device device = kernels::Device::kCpu;
  // Per family (only the one of `kind` is read).
  models::DinOptions din;
  models::DienOptions dien;
  models::PooledOptions pooled;
  models::MindOptions mind;
  models::BstOptions bst;
  models::SasrecOptions sasrec;
  models::Gru4RecOptions gru4rec;
};

// Builds the model of spec.kind. INVALID_ARGUMENT for bad options (naming the field),
// FAILED_PRECONDITION for a kind of the other family.
StatusOr<std::unique_ptr<models::CtrModel<float>>> CreateCtrModel(const ModelSpec& spec);
StatusOr<std::unique_ptr<models::SeqModel<float>>> CreateSeqModel(const ModelSpec& spec);

// Maps config.model (+ data.max_history, data.batch_size, train.seed) to a spec. Errors:
// INVALID_ARGUMENT "FIELD_PATH: ..." naming the config field for unsupported values (the model's
// Validate*Options and its MLP head's models::CheckMlpHeadOptions, run with the config's names
// for their options); UNIMPLEMENTED for CUDA in a build without CUDA; FAILED_PRECONDITION for CUDA
// with no visible device.
StatusOr<ModelSpec> ModelSpecFromConfig(const config::Config& config);

// The checks of ModelSpecFromConfig but what model.device needs of the machine, each error blamed
// (BlameConfigField) on the --set or the line of `source` that set the field at fault. Only the
// fields config.model.type reads are checked. For CheckConfigForRun (worker/config_validation.h).
Status CheckModelConfig(const config::Config& config, const ConfigSource& source);

// The model of a config, for scoring (`ips export`, the serving library): the spec from the
// config with max_batch replaced, on the CPU whatever model.device says.
StatusOr<std::unique_ptr<models::CtrModel<float>>> CreateCtrModel(const config::Config& config,
                                                                  int64_t max_batch);

}  // namespace ips

#endif  // IPS_WORKER_MODEL_FACTORY_H_
