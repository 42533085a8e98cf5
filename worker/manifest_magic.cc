#include "worker/manifest_magic.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "ps/checkpoint_io.h"

namespace ips {

std::string DirectoryContents::DescribeManifest() const {
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

std::string QuoteNames(const std::vector<std::string>& names, size_t max) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < max; ++i) s += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > max) s += " and " + std::to_string(names.size() - max) + " more";
  return s;
}

StatusOr<DirectoryContents> InspectDirectory(const std::string& dir) {
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
