// Reading the micro-benchmarks' inputs; see inputs.h.
#include "inputs.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "exmode/archive.h"
#include "exmode/error.h"

namespace exmode::bench {

namespace {

std::string programOf(const std::filesystem::path& path) {
  archive::ArchiveReader reader(path);
  const archive::Record* record = reader.find("models/model.json");
  if (record == nullptr) {
    const std::vector<std::string> names = reader.programNames();
    if (names.empty()) throw Error(ErrorKind::kBadArchive, path.string() + ": no program");
    record = reader.find(names.front());
  }
  return std::string(reader.checkedData(*record));
}

std::string fileText(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, path.string() + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  return std::move(text).str();
}

}  // namespace

std::vector<Input> loadInputs(const std::vector<std::string>& paths) {
  std::vector<Input> inputs;
  for (const std::string& p : paths) {
    const std::filesystem::path path(p);
    std::string json = path.extension() == ".json" ? fileText(path) : programOf(path);
    inputs.push_back({path.stem().string(), std::move(json)});
  }
  return inputs;
}

}  // namespace exmode::bench
