#include "model_binding.h"

#include <fcntl.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "exmode/error.h"
#include "exmode/findings.h"
#include "exmode/model.h"
#include "exmode/pattern.h"
#include "report_rows.h"
#include "rules_binding.h"

namespace nb = nanobind;

namespace exmode::python {

namespace {

void replaceAll(std::string& s, const std::string& from, const std::string& to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
}

class PyModel {
 public:
  PyModel(std::vector<std::string> module_types, const UserRules* user_rules, int memfd)
      : rules_(std::make_unique<ModuleTypeRules>(ModuleTypeRules::builtIn())),
        user_rules_(keptRules(user_rules)),
        memfd_(memfd) {
    for (const std::string& file : module_types) rules_->addFile(file);
  }
  PyModel(const PyModel&) = delete;
  PyModel& operator=(const PyModel&) = delete;
  ~PyModel() {
    model_.reset();  // unmaps the archive before its memory file goes
    if (memfd_ >= 0) ::close(memfd_);
  }

  static std::unique_ptr<PyModel> open(const std::string& path,
                                       const std::vector<std::string>& module_types,
                                       const UserRules* user_rules) {
    nb::gil_scoped_release release;
    auto model = std::make_unique<PyModel>(module_types, user_rules, -1);
    model->load(path);
    return model;
  }

  // The archive is copied into a memory file and opened through /proc, so the reader maps
  // it as it maps any file; messages name it "<bytes>" rather than that path.
  static std::unique_ptr<PyModel> fromBytes(nb::bytes data,
                                            const std::vector<std::string>& module_types,
                                            const UserRules* user_rules) {
    const char* bytes = data.c_str();
    const std::size_t size = data.size();
    nb::gil_scoped_release release;
    auto model = std::make_unique<PyModel>(module_types, user_rules, -1);
    const int fd = ::memfd_create("exmode-archive", MFD_CLOEXEC);
    if (fd < 0) {
      throw Error(ErrorKind::kIo,
                  std::string("<bytes>: cannot create a memory file: ") + std::strerror(errno));
    }
    model->memfd_ = fd;  // closed with the model from here on
    for (std::size_t done = 0; done < size;) {
      const ssize_t n = ::write(fd, bytes + done, size - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        throw Error(ErrorKind::kIo,
                    std::string("<bytes>: cannot write a memory file: ") + std::strerror(errno));
      }
      done += static_cast<std::size_t>(n);
    }
    model->shown_path_ = "<bytes>";
    model->load("/proc/self/fd/" + std::to_string(fd));
    return model;
  }

  std::optional<std::string> path() const {
    if (!shown_path_.empty()) return std::nullopt;
    return model_->path().string();
  }

  std::vector<std::string> programNames() {
    return locked([&] { return model_->programNames(); });
  }

  std::string mode() {
    return locked([&] { return std::string(programModeName(model_->mode())); });
  }

  bool modified() {
    return locked([&] { return model_->modified(); });
  }

  nb::list switchMode(const std::string& mode_name) {
    const Mode target = parseMode(mode_name);
    std::vector<ReportRow> rows = locked([&] {
      std::vector<ReportRow> out;
      for (const SwitchReport& r : target == Mode::kTrain ? model_->train() : model_->eval()) {
        out.push_back(reportRow(r));
      }
      return out;
    });
    nb::list out;
    for (const ReportRow& row : rows) out.append(reportDict(row));
    return out;
  }

  // What switching to `mode` would warn of, per program, without switching: strict=True
  // refuses before anything changes.
  nb::list switchWarnings(const std::string& mode_name) {
    const Mode target = parseMode(mode_name);
    auto rows = locked([&] {
      std::vector<std::pair<std::string, std::vector<Finding>>> out;
      for (const std::string& name : model_->programNames()) {
        const Program& program = std::as_const(*model_).program(name);
        const std::vector<Site> sites = collectSites(program, user_rules_.get());
        out.emplace_back(
            name, findingsForSwitch(analyze(program, sites, *rules_), detectMode(sites), target));
      }
      return out;
    });
    nb::list out;
    for (const auto& [name, findings] : rows) {
      nb::dict d;
      d["program"] = name;
      d["warnings"] = findingList(findings);
      out.append(d);
    }
    return out;
  }

  // The programs of `exmode inspect --json`.
  nb::list inspect() {
    std::vector<ProgramRow> rows = locked([&] {
      std::vector<ProgramRow> out;
      for (const std::string& name : model_->programNames()) {
        out.push_back(
            programRow(name, std::as_const(*model_).program(name), *rules_, user_rules_.get()));
      }
      return out;
    });
    nb::list out;
    for (const ProgramRow& row : rows) out.append(programDict(row));
    return out;
  }

  void save(const std::string& path, bool sync) {
    locked([&] {
      model_->save(path, {.sync = sync});
      return 0;
    });
  }

 private:
  void load(const std::string& path) {
    guarded([&] {
      model_ = Model::open(path);
      model_->setModuleTypeRules(rules_.get());
      model_->setUserRules(user_rules_.get());
      return 0;
    });
  }

  // Runs `f` without the GIL (it may take a while on a large archive) and with this model to
  // itself, so Python threads sharing it take turns. The GIL is released before the lock is
  // taken, and nothing here takes the GIL while holding the lock, so neither waits on the
  // other.
  template <class F>
  std::invoke_result_t<F&> locked(F f) {
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    return guarded(f);
  }

  // Messages about an archive given as bytes name it "<bytes>", not its /proc path.
  template <class F>
  std::invoke_result_t<F&> guarded(F f) {
    if (shown_path_.empty()) return f();
    try {
      return f();
    } catch (const Error& e) {
      std::string message = e.what();
      replaceAll(message, "/proc/self/fd/" + std::to_string(memfd_), shown_path_);
      throw Error(e.kind(), message);
    }
  }

  std::unique_ptr<ModuleTypeRules> rules_;       // switches keep a pointer to it
  std::unique_ptr<const UserRules> user_rules_;  // null: none; switches keep a pointer to it
  std::unique_ptr<Model> model_;
  int memfd_ = -1;          // the memory file of an archive given as bytes, else -1
  std::string shown_path_;  // what messages call the archive, when not its path
  std::mutex mutex_;
};

}  // namespace

void bindModel(nb::module_& m) {
  nb::class_<PyModel>(m, "Model", "An opened PT2 archive (exmode::Model)")
      .def_static("open", &PyModel::open, nb::arg("path"), nb::arg("module_types"),
                  nb::arg("rules").none())
      .def_static("from_bytes", &PyModel::fromBytes, nb::arg("data"), nb::arg("module_types"),
                  nb::arg("rules").none())
      .def_prop_ro("path", &PyModel::path)
      .def("program_names", &PyModel::programNames)
      .def("mode", &PyModel::mode)
      .def("modified", &PyModel::modified)
      .def("switch_mode", &PyModel::switchMode, nb::arg("mode"))
      .def("switch_warnings", &PyModel::switchWarnings, nb::arg("mode"))
      .def("inspect", &PyModel::inspect)
      .def("save", &PyModel::save, nb::arg("path"), nb::arg("sync"));
}

}  // namespace exmode::python
