// Model: an archive plus its parsed programs; see model.h.
#include "exmode/model.h"

#include "exmode/error.h"

namespace exmode {

std::unique_ptr<Model> Model::open(const std::filesystem::path& path) {
  auto model = std::unique_ptr<Model>(new Model());
  model->reader_ = std::make_unique<archive::ArchiveReader>(path);
  const archive::ArchiveReader& reader = *model->reader_;
  for (const std::string& record : reader.programNames()) {
    const std::string name =
        record.substr(archive::kModelsDir.size(), record.size() - archive::kModelsDir.size() -
                                                      archive::kModelsExtension.size());
    const archive::Record* r = reader.find(record);
    auto program = Program::parse(reader.checkedData(*r), path.string() + ": " + record);
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
    reports.push_back(switchMode(*e.program, target, e.name));
    e.modified = e.modified || !reports.back().changes.empty();
  }
  return reports;
}

ProgramMode Model::mode() const {
  std::vector<Site> all;
  for (const Entry& e : entries_) {
    std::vector<Site> sites = collectSites(*e.program);
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
  std::vector<std::string> texts;  // the replacements view them: filled first, then not touched
  for (const Entry& e : entries_) {
    if (e.modified) texts.push_back(e.program->toJson());
  }
  std::vector<archive::Replacement> replacements;
  std::size_t next = 0;
  for (const Entry& e : entries_) {
    if (e.modified) replacements.push_back({e.record, std::string_view(texts[next++])});
  }
  archive::rewriteArchive(*reader_, replacements, path, options);
}

}  // namespace exmode
