// exmode_bench_phases: where the time of one file switch goes.
//
//   exmode_bench_phases IN OUT [--train]
//
// Does what `exmode eval IN -o OUT` does, through the library, timing each phase on its own
// with std::chrono::steady_clock: open (map, parse, verify), switch, save (serialize,
// verify, write, rename; no fsync). Prints one JSON object:
//   {"open_ns", "switch_ns", "save_ns", "changes"}
// Exit status 2 on a bad command line, 1 when exmode throws.
#include <chrono>
#include <cstdint>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>

#include "exmode/model.h"

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t nanoseconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4 || (argc == 4 && std::string_view(argv[3]) != "--train")) {
    std::cerr << "usage: exmode_bench_phases IN OUT [--train]\n";
    return 2;
  }
  try {
    const auto t0 = Clock::now();
    auto model = exmode::Model::open(argv[1]);
    const auto t1 = Clock::now();
    const auto reports = argc == 4 ? model->train() : model->eval();
    const auto t2 = Clock::now();
    model->save(argv[2], {.sync = false});
    const auto t3 = Clock::now();
    std::size_t changes = 0;
    for (const auto& report : reports) changes += report.changes.size();
    std::cout << "{\"open_ns\": " << nanoseconds(t0, t1)
              << ", \"switch_ns\": " << nanoseconds(t1, t2)
              << ", \"save_ns\": " << nanoseconds(t2, t3) << ", \"changes\": " << changes << "}\n";
    // Like the CLI, leave the model to the kernel at exit rather than freeing it.
    model.release();
  } catch (const std::exception& e) {
    std::cerr << "exmode_bench_phases: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
