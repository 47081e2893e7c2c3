// Where each switched archive goes, decided and checked before anything is written.
#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <optional>
#include <utility>

#include "cli/commands.h"
#include "exmode/error.h"

namespace exmode::cli {
namespace {

using FileId = std::pair<dev_t, ino_t>;

// The file `path` names after symlinks, if it exists.
std::optional<FileId> fileId(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileId{st.st_dev, st.st_ino};
}

bool isDirectory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

[[noreturn]] void usage(const std::string& message) { throw Error(ErrorKind::kUsage, message); }

// The name DIR/<name> takes: the input's last component ("a/b.pt2/" gives "b.pt2").
std::string outputName(const std::string& input) {
  std::filesystem::path path = std::filesystem::path(input).lexically_normal();
  if (!path.has_filename()) path = path.parent_path();
  const std::string name = path.filename().string();
  if (name.empty() || name == "." || name == "..") {
    usage(input + ": has no file name to write under the -o directory");
  }
  return name;
}

// Several inputs naming one file would be switched by two processes at once.
void refuseRepeatedInputs(const std::vector<std::string>& inputs) {
  std::map<FileId, const std::string*> seen;
  for (const std::string& input : inputs) {
    const std::optional<FileId> id = fileId(input);
    if (!id) continue;  // a missing input fails on its own, without touching anything
    auto [at, added] = seen.emplace(*id, &input);
    if (!added) usage(*at->second + " and " + input + " are the same file; give it once");
  }
}

}  // namespace

std::vector<std::string> plannedOutputs(const SwitchOptions& options) {
  const std::vector<std::string>& inputs = options.inputs;
  if (options.in_place) {
    if (inputs.size() > 1) refuseRepeatedInputs(inputs);
    return inputs;
  }
  const std::string& target = options.output;
  const bool slash = !target.empty() && target.back() == '/';
  const bool directory = isDirectory(target);
  // One input: -o names a file, exactly as it always has (a directory there is refused when
  // the rename fails), unless it ends in '/'.
  if (inputs.size() == 1 && !slash) return {target};
  if (!directory) {
    usage("-o " + target + ": " +
          (inputs.size() > 1 ? "with several inputs, -o must name a directory, and this " : "") +
          (fileId(target) ? "is not a directory" : "does not exist (create it first)"));
  }
  refuseRepeatedInputs(inputs);
  std::map<FileId, const std::string*> input_ids;
  for (const std::string& input : inputs) {
    if (const std::optional<FileId> id = fileId(input)) input_ids.emplace(*id, &input);
  }
  std::map<std::string, const std::string*> by_name;
  std::vector<std::string> outputs;
  outputs.reserve(inputs.size());
  for (const std::string& input : inputs) {
    const std::string name = outputName(input);
    const std::string output = target + (slash ? "" : "/") + name;
    auto [at, added] = by_name.emplace(name, &input);
    if (!added) {
      usage(*at->second + " and " + input + " would both be written to " + output +
            "; switch them into different directories");
    }
    if (const std::optional<FileId> id = fileId(output)) {
      if (auto same = input_ids.find(*id); same != input_ids.end()) {
        usage(output + " is the input " + *same->second +
              " itself; use --in-place to replace inputs");
      }
    }
    outputs.push_back(output);
  }
  return outputs;
}

}  // namespace exmode::cli
