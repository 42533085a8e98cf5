// Opening an output file that a command appends to (--metrics_out, train.metrics_out), with the
// reason of a failure: std::ofstream says only that it failed (it does not promise errno), so the
// file is opened with open(2) first, whose errno is the reason and picks the code.
#ifndef IPS_COMMON_OUTPUT_FILE_H_
#define IPS_COMMON_OUTPUT_FILE_H_

#include <fstream>
#include <string>

#include "common/status.h"

namespace ips {

// Opens (creating it when missing) the file `path` for appending into *out. `what` names where
// the path was given, for the message: "--metrics_out", "train.metrics_out". Errors:
// StatusFromErrno's "cannot open <what> file '<path>': <reason>" (NOT_FOUND for a missing
// directory, INVALID_ARGUMENT for a directory, FAILED_PRECONDITION for a file that may not be
// written, RESOURCE_EXHAUSTED for a full disk or file table); nothing is opened then.
Status OpenAppendFile(const std::string& path, const std::string& what, std::ofstream* out);

}  // namespace ips

#endif  // IPS_COMMON_OUTPUT_FILE_H_
