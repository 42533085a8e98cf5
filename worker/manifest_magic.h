// What a directory on disk is, for the commands that write into one: the 8-byte magics that open
// the binary MANIFEST of a training checkpoint (worker/checkpoint.cc) and of a serving bundle
// version (worker/serving.cc), the first line of a converted dataset's (worker/manifest.h), and
// InspectDirectory, which names what a directory holds from them and from the names in it. In one
// place because `ips data convert --output` (worker/dataset_builder.cc CheckConvertOutput), `ips
// export --output` and `ips train --stream --stream_publish_dir` (worker/serving.cc
// CheckBundleRoot) each refuse to write into a directory that holds something else, and must name
// it the same way.
#ifndef IPS_WORKER_MANIFEST_MAGIC_H_
#define IPS_WORKER_MANIFEST_MAGIC_H_

#include <cstddef>
#include <string>
#include <vector>

#include "common/status.h"

namespace ips {

inline constexpr char kCheckpointManifestMagic[8] = {'I', 'P', 'S', 'M', 'A', 'N', '0', '1'};
inline constexpr char kBundleManifestMagic[8] = {'I', 'P', 'S', 'B', 'N', 'D', '0', '1'};
// The first line of a converted dataset's MANIFEST starts with this (a text file).
inline constexpr char kDatasetManifestPrefix[] = "ips_dataset_manifest ";

struct DirectoryContents {
  enum Kind {
    kMissing,        // nothing at the path
    kNotDirectory,   // a file (or anything else that is not a directory)
    kDataset,        // DIR/MANIFEST is a converted dataset's (`ips data convert`)
    kCheckpoint,     // DIR/MANIFEST is a training checkpoint's (a ROOT/ckpt-<step>)
    kBundleVersion,  // DIR/MANIFEST is a serving bundle version's (a ROOT/v-<n>)
    kOtherManifest,  // DIR/MANIFEST is none of these
    kNoManifest,     // a directory without DIR/MANIFEST: see `root` and `names`
  };
  Kind kind = kMissing;
  std::string manifest;  // DIR/MANIFEST
  // kNoManifest: what DIR's names say it is: "a training checkpoint root (it holds LATEST)" (LATEST
  // or a ckpt-<step> directory), "a serving bundle root (it holds CURRENT)" (CURRENT or a v-<n>
  // directory), "a training checkpoint or serving bundle root (it holds LOCK)" (only their writers'
  // lock), or "" (none of these).
  std::string root;
  enum RootKind { kNoRoot, kCheckpointRoot, kBundleRoot, kLockOnly } root_kind = kNoRoot;
  // kNoManifest: DIR's entries, sorted, without hidden ones (".gitkeep", ".nfs*": never written or
  // removed by a writer, so they never make a directory someone else's).
  std::vector<std::string> names;

  // For kDataset, kCheckpoint, kBundleVersion and kOtherManifest: "is a converted dataset (M is a
  // dataset manifest)", "looks like a training checkpoint (M is a checkpoint manifest)", "looks
  // like a serving bundle version (M is a bundle manifest)", "holds a MANIFEST of no kind
  // interest-ps writes (M)"; "" for the other kinds (their callers word them).
  std::string DescribeManifest() const;
};

// "'a', 'b', 'c' and 2 more": the first `max` of `names`, quoted, for messages.
std::string QuoteNames(const std::vector<std::string>& names, size_t max = 3);

// Looks at `dir` (stat, the first bytes of DIR/MANIFEST, the names in DIR; nothing is written).
// FAILED_PRECONDITION "DIR: cannot check it: ..." / "cannot read M ..." / "cannot list it: ..."
// when it cannot be looked at.
StatusOr<DirectoryContents> InspectDirectory(const std::string& dir);

}  // namespace ips

#endif  // IPS_WORKER_MANIFEST_MAGIC_H_
