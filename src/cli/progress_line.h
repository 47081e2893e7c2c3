// `[k/N] name` on stderr, rewritten in place, while many files are switched. Shown only when
// stderr is a terminal and the run is not quiet: in a pipe or a log the \r would be noise.
#pragma once

#include <cstddef>
#include <string>

namespace exmode::cli {

class ProgressLine {
 public:
  // Enabled only if `wanted` and stderr is a terminal.
  explicit ProgressLine(bool wanted);
  ~ProgressLine() { clear(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  bool enabled() const { return enabled_; }
  // Draws `[done/total] name`, cut to the terminal's width so that it never wraps (a
  // wrapped line could not be rewritten with \r).
  void show(std::size_t done, std::size_t total, const std::string& name);
  // Erases the line, so that other output starts at the left margin; show() draws it again.
  void clear();

 private:
  bool enabled_ = false;
  bool shown_ = false;
  std::string last_;  // what is drawn while shown_
};

}  // namespace exmode::cli
