// A PT2 archive opened for mode switching: the counterpart of
// torch's allow_exported_model_train_eval, for saved files.
//
//   auto model = exmode::Model::open("m.pt2");
//   for (const auto& report : model->eval()) { ... report.changes ... }
//   model->save("m_eval.pt2");
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "exmode/archive.h"
#include "exmode/findings.h"
#include "exmode/passes.h"
#include "exmode/program.h"
#include "exmode/user_rules.h"

namespace exmode {

class Model {
 public:
  // Maps the archive and parses and verifies every program in it (`models/*.json`).
  // Throws Error(kBadArchive) or Error(kBadProgram) naming the file and the problem.
  static std::unique_ptr<Model> open(const std::filesystem::path& path,
                                     const ReadLimits& limits = {});

  const std::filesystem::path& path() const { return reader_->path(); }
  // Program names: "model" for `models/model.json`.
  std::vector<std::string> programNames() const;
  Program& program(std::string_view name);
  const Program& program(std::string_view name) const;

  // The module type list switches find warnings with (findings.h); null, the default, is
  // ModuleTypeRules::builtIn(). The rules must outlive the model's switches.
  void setModuleTypeRules(const ModuleTypeRules* rules) { rules_ = rules; }
  // User rules (user_rules.h) for switches and mode(); null, the default, is none. The
  // rules must outlive the model's switches and their reports' use.
  void setUserRules(const UserRules* rules) { user_rules_ = rules; }
  const UserRules* userRules() const { return user_rules_; }

  // Switch every program; one report per program.
  std::vector<SwitchReport> train() { return switchAll(Mode::kTrain); }
  std::vector<SwitchReport> eval() { return switchAll(Mode::kEval); }
  // The mode over all programs: train, eval, mixed (they disagree) or none (no site).
  ProgramMode mode() const;
  bool training() const { return mode() == ProgramMode::kTrain; }
  // True when a switch changed some program since open().
  bool modified() const;

  // Writes the archive atomically to `path` (which may be this model's own file): changed
  // programs re-serialized, every other record copied byte for byte. options.sync (the
  // default) also fsyncs the file and its directory; see archive::rewriteArchive.
  void save(const std::filesystem::path& path, const archive::WriteOptions& options = {}) const;

 private:
  struct Entry {
    std::string name;
    std::string record;  // relative record name, "models/<name>.json"
    std::unique_ptr<Program> program;
    bool modified = false;
    SwitchCache sites;  // what the last switch found, for the next one
  };
  std::vector<SwitchReport> switchAll(Mode target);
  const Entry& entry(std::string_view name) const;

  std::unique_ptr<archive::ArchiveReader> reader_;
  std::vector<Entry> entries_;
  const ModuleTypeRules* rules_ = nullptr;
  const UserRules* user_rules_ = nullptr;
};

}  // namespace exmode
