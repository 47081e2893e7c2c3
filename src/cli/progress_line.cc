// See progress_line.h.
#include "cli/progress_line.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

namespace exmode::cli {
namespace {

void writeAll(const std::string& text) {
  const char* at = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, at, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a progress line is not worth an error
    at += n;
    left -= static_cast<std::size_t>(n);
  }
}

std::size_t terminalWidth() {
  winsize size{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 1) return size.ws_col;
  return 80;
}

}  // namespace

ProgressLine::ProgressLine(bool wanted) : enabled_(wanted && ::isatty(STDERR_FILENO) == 1) {}

void ProgressLine::show(std::size_t done, std::size_t total, const std::string& name) {
  if (!enabled_) return;
  // Erase, then draw, in one write so that the terminal never shows the line half drawn.
  std::string line = "\r\033[K[";
  line += std::to_string(done);
  line += '/';
  line += std::to_string(total);
  line += "] ";
  line += name;
  // One column short of the width: a line filling it wraps on some terminals.
  const std::size_t width = terminalWidth() - 1 + 4;  // the 4 bytes of "\r\033[K" take none
  if (line.size() > width) line.resize(width);
  if (shown_ && line == last_) return;  // a child ended whose output must wait its turn
  writeAll(line);
  last_ = std::move(line);
  shown_ = true;
}

void ProgressLine::clear() {
  if (!shown_) return;
  writeAll("\r\033[K");
  shown_ = false;
}

}  // namespace exmode::cli
