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

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/status.h"
#include "ps/checkpoint_io.h"

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
  std::string DescribeManifest() const {
    switch (kind) {
      case kDataset:
        return "is a converted dataset (" + manifest + " is a dataset manifest)";
      case kCheckpoint:
        return "looks like a training checkpoint (" + manifest + " is a checkpoint manifest)";
      case kBundleVersion:
        return "looks like a serving bundle version (" + manifest + " is a bundle manifest)";
      case kOtherManifest:
        return "holds a MANIFEST of no kind interest-ps writes (" + manifest + ")";
      default:
        return "";
    }
  }
};

// "'a', 'b', 'c' and 2 more": the first `max` of `names`, quoted, for messages.
inline std::string QuoteNames(const std::vector<std::string>& names, size_t max = 3) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < max; ++i) s += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > max) s += " and " + std::to_string(names.size() - max) + " more";
  return s;
}

// Looks at `dir` (stat, the first bytes of DIR/MANIFEST, the names in DIR; nothing is written).
// FAILED_PRECONDITION "DIR: cannot check it: ..." / "cannot read M ..." / "cannot list it: ..."
// when it cannot be looked at.
inline StatusOr<DirectoryContents> InspectDirectory(const std::string& dir) {
  DirectoryContents c;
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT && errno != ENOTDIR)
      return FailedPreconditionError(dir + ": cannot check it: " + std::strerror(errno));
    return c;  // kMissing
  }
  if (!S_ISDIR(st.st_mode)) {
    c.kind = DirectoryContents::kNotDirectory;
    return c;
  }
  c.manifest = dir + "/MANIFEST";
  if (::stat(c.manifest.c_str(), &st) == 0) {
    std::string head(32, '\0');
    size_t n = 0;
    if (FILE* f = S_ISREG(st.st_mode) ? std::fopen(c.manifest.c_str(), "rb") : nullptr) {
      n = std::fread(head.data(), 1, head.size(), f);
      std::fclose(f);
    } else if (S_ISREG(st.st_mode)) {
      return FailedPreconditionError(dir + ": cannot read " + c.manifest +
                                     " to check what it is: " + std::strerror(errno));
    }
    head.resize(n);
    if (head.rfind(kDatasetManifestPrefix, 0) == 0)
      c.kind = DirectoryContents::kDataset;
    else if (head.compare(0, 8, kCheckpointManifestMagic, 8) == 0)
      c.kind = DirectoryContents::kCheckpoint;
    else if (head.compare(0, 8, kBundleManifestMagic, 8) == 0)
      c.kind = DirectoryContents::kBundleVersion;
    else
      c.kind = DirectoryContents::kOtherManifest;
    return c;
  }
  c.kind = DirectoryContents::kNoManifest;
  auto listed = ps::ListDir(dir);
  if (!listed.ok())
    return FailedPreconditionError(dir + ": cannot list it: " + listed.status().message());
  for (const std::string& name : *listed)
    if (!name.empty() && name[0] != '.') c.names.push_back(name);
  std::sort(c.names.begin(), c.names.end());
  // "<prefix><digits>" naming a directory (ckpt-20, v-3).
  const auto numbered_dir = [&dir](const std::string& name, const std::string& prefix) {
    return name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
           std::all_of(name.begin() + prefix.size(), name.end(),
                       [](char ch) { return ch >= '0' && ch <= '9'; }) &&
           ps::IsDirectory(dir + "/" + name);
  };
  std::string ckpt, bundle, lock;
  for (const std::string& n : c.names) {
    if (ckpt.empty() && (n == "LATEST" || numbered_dir(n, "ckpt-"))) ckpt = n;
    if (bundle.empty() && (n == "CURRENT" || numbered_dir(n, "v-"))) bundle = n;
    if (n == "LOCK") lock = n;  // both writers' lock: it says only that one of them was here
  }
  if (!ckpt.empty()) {
    c.root_kind = DirectoryContents::kCheckpointRoot;
    c.root = "a training checkpoint root (it holds " + ckpt + ")";
  } else if (!bundle.empty()) {
    c.root_kind = DirectoryContents::kBundleRoot;
    c.root = "a serving bundle root (it holds " + bundle + ")";
  } else if (!lock.empty()) {
    c.root_kind = DirectoryContents::kLockOnly;
    c.root = "a training checkpoint or serving bundle root (it holds LOCK)";
  }
  return c;
}

}  // namespace ips

#endif  // IPS_WORKER_MANIFEST_MAGIC_H_
