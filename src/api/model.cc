// Model: an archive plus its parsed programs; see model.h.
#include "exmode/model.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <thread>

#include "exmode/error.h"

namespace exmode {

std::unique_ptr<Model> Model::open(const std::filesystem::path& path, const ReadLimits& limits) {
  auto model = std::unique_ptr<Model>(new Model());
  model->reader_ = std::make_unique<archive::ArchiveReader>(path);
  const archive::ArchiveReader& reader = *model->reader_;
  struct stat info {};
  if (::fstat(reader.fd(), &info) != 0) {
    throw Error(ErrorKind::kIo, path.string() + ": cannot stat: " + std::strerror(errno));
  }
  const auto file_size = static_cast<std::uint64_t>(info.st_size);
  for (const std::string& record : reader.programNames()) {
    const std::string name =
        record.substr(archive::kModelsDir.size(), record.size() - archive::kModelsDir.size() -
                                                      archive::kModelsExtension.size());
    const archive::Record* r = reader.find(record);
    reader.prefetch(*r);
    const std::string_view json = reader.data(*r);
    std::string name_in_errors = path.string() + ": " + record;
    // Parsed in place in the map when the archive has bytes to spare after the record
    // (there always are: the central directory follows), copied otherwise.
    const bool padded = r->data_offset + r->size + kJsonPadding <= file_size;
    // The CRC-32 is checked on a second core while the program is parsed; a damaged record
    // is reported as such even when the damage also broke the JSON.
    std::exception_ptr crc_error;
    std::thread crc_check([&] {
      try {
        reader.checkCrc(*r);
      } catch (...) {
        crc_error = std::current_exception();
      }
    });
    std::unique_ptr<Program> program;
    std::exception_ptr parse_error;
    try {
      program = padded ? Program::parseInPlace(json, std::move(name_in_errors), limits)
                       : Program::parse(json, std::move(name_in_errors), limits);
    } catch (...) {
      parse_error = std::current_exception();
    }
    crc_check.join();
    if (crc_error) std::rethrow_exception(crc_error);
    if (parse_error) std::rethrow_exception(parse_error);
    model->entries_.push_back({name, record, std::move(program), false});
  }
  if (model->entries_.empty()) {
    throw Error(ErrorKind::kBadArchive,
                path.string() + ": no program in the archive (no models/*.json record)");
  }
  return model;
}

std::vector<std::string> Model::programNames() const {
  std::vector<std::string> names;
  for (const Entry& e : entries_) names.push_back(e.name);
  return names;
}

const Model::Entry& Model::entry(std::string_view name) const {
  for (const Entry& e : entries_) {
    if (e.name == name) return e;
  }
  throw Error(ErrorKind::kUsage,
              path().string() + ": no program named '" + std::string(name) + "'");
}

Program& Model::program(std::string_view name) { return *entry(name).program; }
const Program& Model::program(std::string_view name) const { return *entry(name).program; }

std::vector<SwitchReport> Model::switchAll(Mode target) {
  std::vector<SwitchReport> reports;
  for (Entry& e : entries_) {
    reports.push_back(
        switchMode(*e.program, target, e.name, &e.sites, rules_, nullptr, user_rules_));
    e.modified = e.modified || !reports.back().changes.empty();
  }
  return reports;
}

ProgramMode Model::mode() const {
  std::vector<Site> all;
  for (const Entry& e : entries_) {
    std::vector<Site> sites = collectSites(*e.program, user_rules_);
    all.insert(all.end(), sites.begin(), sites.end());
  }
  return detectMode(all);
}

bool Model::modified() const {
  for (const Entry& e : entries_) {
    if (e.modified) return true;
  }
  return false;
}

void Model::save(const std::filesystem::path& path, const archive::WriteOptions& options) const {
  // Each changed program as chunks of its source and new text: nothing is joined, the
  // writer takes the chunks as they are.
  std::vector<SerializedProgram> texts;
  texts.reserve(entries_.size());
  for (const Entry& e : entries_) {
    if (e.modified) texts.push_back(e.program->serialize());
  }
  std::vector<archive::Replacement> replacements;
  std::size_t next = 0;
  for (const Entry& e : entries_) {
    if (e.modified) replacements.emplace_back(e.record, texts[next++].chunks);
  }
  archive::rewriteArchive(*reader_, replacements, path, options);
}

}  // namespace exmode
