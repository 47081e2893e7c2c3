// The core's side of a second host of the passes. The host (the FX graph of a PyTorch
// module, python/exmode/torch/_fx_program.py) writes its graph as program JSON, the passes
// switch that program here exactly as they switch an archive's, and every change they make
// comes back as an edit (rewrite::Listener) that the host replays on its own graph
// (_fx_edits.py). No pass knows which host it runs for.
#include "host_program.h"

#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "exmode/error.h"
#include "exmode/findings.h"
#include "exmode/passes.h"
#include "exmode/program.h"
#include "exmode/rewrite.h"
#include "program/ref_text.h"
#include "report_rows.h"
#include "rules_binding.h"

namespace nb = nanobind;

namespace exmode::python {

namespace {

nb::object metadataValue(const Node& node, std::string_view key) {
  if (node.metadataFieldJson(key).empty()) return nb::none();
  return nb::str(node.metadataField(key).c_str());
}

// Each change as a tuple, in the order the passes made them (see _fx_edits.py).
class EditRecorder final : public rewrite::Listener {
 public:
  explicit EditRecorder(nb::list& edits) : edits_(edits) {}

  void inputSet(const Node& node, std::string_view input) override {
    const NamedArgument* in = node.input(input);
    if (in == nullptr) return;
    auto [kind, payload] = argumentPair(in->arg);
    edits_.append(nb::make_tuple("input", text(node.name()), text(input), kind, payload));
  }
  void inputRemoved(const Node& node, std::string_view input) override {
    edits_.append(nb::make_tuple("remove_input", text(node.name()), text(input)));
  }
  void metadataSet(const Node& node, std::string_view key) override {
    edits_.append(
        nb::make_tuple("metadata", text(node.name()), text(key), metadataValue(node, key)));
  }
  void useReplaced(const Node* user, const Value& from, const Value& to) override {
    edits_.append(nb::make_tuple("use",
                                 user == nullptr ? nb::none() : nb::object(text(user->name())),
                                 text(from.name()), text(to.name())));
  }
  void nodeErased(const Node& node) override {
    edits_.append(nb::make_tuple("erase", text(node.name())));
  }
  void nodeInserted(const Node& node, const Node& before) override {
    nb::list inputs;
    for (const NamedArgument& in : node.inputs()) {
      auto [kind, payload] = argumentPair(in.arg);
      inputs.append(nb::make_tuple(text(in.name), kind, payload));
    }
    nb::list outputs;
    for (const Argument& out : node.outputs()) {
      const Value* value = out.tensor();
      outputs.append(value == nullptr ? nb::none() : nb::object(text(value->name())));
    }
    nb::list metadata;
    for (const auto& [key, raw] : node.metadataFields()) {
      metadata.append(nb::make_tuple(text(key), metadataValue(node, key)));
    }
    edits_.append(nb::make_tuple("insert", text(node.name()), text(before.name()),
                                 text(node.target()), inputs, outputs, metadata));
  }
  void outputsChanged() override { edits_.append(nb::make_tuple("outputs")); }
  // Functional-IR rewrites (batch norm's and dropout's forms) change ops and their outputs,
  // which the FX replay does not do: HostProgram refuses the switch before any is replayed.
  void targetSet(const Node& /*node*/) override { functional_ = true; }
  void nodeOutputsSet(const Node& /*node*/) override { functional_ = true; }
  bool changedForms() const { return functional_; }

 private:
  // An argument as the host reads it: its union tag and its payload's JSON text, value
  // references resolved to the values' current names.
  static std::pair<nb::str, nb::str> argumentPair(const Argument& arg) {
    std::string payload;
    appendResolved(payload, arg.payload);
    return {text(arg.kind), nb::str(payload.data(), payload.size())};
  }
  nb::list& edits_;
  bool functional_ = false;
};

class HostProgram {
 public:
  HostProgram(const std::string& json, const std::string& name,
              const std::vector<std::string>& module_types, const UserRules* user_rules)
      : name_(name),
        rules_(std::make_unique<ModuleTypeRules>(ModuleTypeRules::builtIn())),
        user_rules_(keptRules(user_rules)) {
    for (const std::string& file : module_types) rules_->addFile(file);
    program_ = Program::parse(json, name);
    json_ = json;
  }

  std::string mode() const {
    return std::string(programModeName(detectMode(collectSites(*program_, user_rules_.get()))));
  }

  // Switches the program to `mode`: (the report, as Model.switch_mode gives it per program,
  // and the edits that make the host's graph the switched program).
  nb::tuple switchMode(const std::string& mode) {
    const Mode target = parseMode(mode);
    refuseFunctionalIr(target);
    nb::list edits;
    EditRecorder recorder(edits);
    const SwitchReport report = exmode::switchMode(*program_, target, name_, &cache_, rules_.get(),
                                                   &recorder, user_rules_.get());
    if (recorder.changedForms()) {
      // A pass changed an op after all: the host's graph is untouched, and this program goes
      // back to what the host wrote.
      program_ = Program::parse(json_, name_);
      cache_ = SwitchCache{};
      throw functionalIrError();
    }
    return nb::make_tuple(reportDict(reportRow(report)), edits);
  }

  // What switching to `mode` would warn of, without switching (strict=True refuses first).
  nb::list switchWarnings(const std::string& mode) const {
    const Mode target = parseMode(mode);
    const std::vector<Site> sites = collectSites(*program_, user_rules_.get());
    return findingList(
        findingsForSwitch(analyze(*program_, sites, *rules_), detectMode(sites), target));
  }

  // The row of `exmode inspect --json` for this program.
  nb::dict inspect() const {
    return programDict(programRow(name_, *program_, *rules_, user_rules_.get()));
  }

  // The program as JSON, as the passes see it (for tests and debugging).
  std::string json() const { return program_->toJson(); }

 private:
  // The functional IR's batch norm and dropout change ops and graph outputs, which the FX
  // replay (_fx_edits.py) does not do: such a switch is refused before anything changes.
  void refuseFunctionalIr(Mode target) const {
    for (const Site& site : collectSites(*program_, user_rules_.get())) {
      const std::string_view pass = site.pass == nullptr ? "" : site.pass->name();
      if ((pass == "batch_norm_functional" || pass == "dropout_functional") &&
          site.state != Site::State::kFixed && site.state != siteStateOf(target)) {
        throw functionalIrError(site.node);
      }
    }
  }
  static Site::State siteStateOf(Mode target) {
    return target == Mode::kTrain ? Site::State::kTrain : Site::State::kEval;
  }
  Error functionalIrError(const Node* node = nullptr) const {
    const std::string where = node == nullptr ? std::string()
                                              : ": node '" + std::string(node->name()) + "' (" +
                                                    std::string(shortTarget(node->target())) + ")";
    return Error(ErrorKind::kUnsupported,
                 "program '" + name_ + "'" + where +
                     " is in the functional IR of run_decompositions(); switching it changes "
                     "ops and graph outputs, which exmode does not replay on FX graphs yet: save "
                     "the ExportedProgram and switch the archive (exmode.open(path).eval() or "
                     "the exmode command)");
  }

  std::string name_;
  std::string json_;  // what the host wrote, to start over from after a refused switch
  std::unique_ptr<ModuleTypeRules> rules_;       // the switch cache keeps a pointer to it
  std::unique_ptr<const UserRules> user_rules_;  // null: none; the cache keeps a pointer too
  std::unique_ptr<Program> program_;
  SwitchCache cache_;
};

}  // namespace

void bindHostProgram(nb::module_& m) {
  nb::class_<HostProgram>(m, "HostProgram",
                          "A program another host wrote as program JSON, switched by the passes")
      .def(nb::init<const std::string&, const std::string&, const std::vector<std::string>&,
                    const UserRules*>(),
           nb::arg("json"), nb::arg("name"), nb::arg("module_types"), nb::arg("rules").none())
      .def("mode", &HostProgram::mode)
      .def("switch_mode", &HostProgram::switchMode, nb::arg("mode"))
      .def("switch_warnings", &HostProgram::switchWarnings, nb::arg("mode"))
      .def("inspect", &HostProgram::inspect)
      .def("json", &HostProgram::json);
}

}  // namespace exmode::python
