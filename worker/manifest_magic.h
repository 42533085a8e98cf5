// The 8-byte magics that open the binary MANIFEST of a training checkpoint (worker/checkpoint.cc)
// and of a serving bundle version (worker/serving.cc). In one place because `ips data convert`
// also reads them, to name what an --output directory holds before refusing to write over it
// (worker/dataset_builder.cc CheckConvertOutput).
#ifndef IPS_WORKER_MANIFEST_MAGIC_H_
#define IPS_WORKER_MANIFEST_MAGIC_H_

namespace ips {

inline constexpr char kCheckpointManifestMagic[8] = {'I', 'P', 'S', 'M', 'A', 'N', '0', '1'};
inline constexpr char kBundleManifestMagic[8] = {'I', 'P', 'S', 'B', 'N', 'D', '0', '1'};

}  // namespace ips

#endif  // IPS_WORKER_MANIFEST_MAGIC_H_
