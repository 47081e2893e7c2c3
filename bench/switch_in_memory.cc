// exmode_bench_switch: times exmode's in-memory switch of an already-loaded archive.
//
//   exmode_bench_switch ARCHIVE [--repeat N] [--warmup N]
//
// Opens ARCHIVE once (exmode::Model::open: map, parse, verify), then calls model->eval()
// and model->train() alternately, so that every call switches every program of the
// archive; each call is timed on its own with std::chrono::steady_clock. The first
// --warmup pairs are not timed. Prints one JSON object:
//   {"archive", "nodes", "sites", "open_ns", "repeat", "warmup",
//    "eval": {"median_ns", "min_ns", "max_ns", "samples", "changes"}, "train": {...}}
// where "changes" is the number of changes one call made (0 means the archive has nothing
// to switch, and the numbers measure nothing). Exit status 2 on a bad command line, 1 when
// exmode throws.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "exmode/model.h"
#include "exmode/passes.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Summary {
  std::int64_t median = 0;
  std::int64_t min = 0;
  std::int64_t max = 0;
};

Summary summarize(std::vector<std::int64_t> samples) {
  std::sort(samples.begin(), samples.end());
  const std::size_t n = samples.size();
  const std::int64_t median =
      n % 2 == 1 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
  return {median, samples.front(), samples.back()};
}

std::size_t changeCount(const std::vector<exmode::SwitchReport>& reports) {
  std::size_t n = 0;
  for (const auto& r : reports) n += r.changes.size();
  return n;
}

// The archive name is a path given by the user: escape it for JSON.
std::string jsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      static const char* hex = "0123456789abcdef";
      out += "\\u00";
      out += hex[(c >> 4) & 0xf];
      out += hex[c & 0xf];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

void printDirection(std::string_view name, const std::vector<std::int64_t>& samples,
                    std::size_t changes) {
  const Summary s = summarize(samples);
  std::cout << jsonString(name) << ": {\"median_ns\": " << s.median << ", \"min_ns\": " << s.min
            << ", \"max_ns\": " << s.max << ", \"samples\": " << samples.size()
            << ", \"changes\": " << changes << "}";
}

int usage(const char* message) {
  std::cerr << "exmode_bench_switch: " << message << "\n"
            << "usage: exmode_bench_switch ARCHIVE [--repeat N] [--warmup N]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string archive;
  long repeat = 100;
  long warmup = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if ((arg == "--repeat" || arg == "--warmup") && i + 1 < argc) {
      char* end = nullptr;
      const long value = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || value < 0 || (arg == "--repeat" && value < 1)) {
        return usage("bad count");
      }
      (arg == "--repeat" ? repeat : warmup) = value;
    } else if (!arg.empty() && arg[0] != '-' && archive.empty()) {
      archive = arg;
    } else {
      return usage("bad argument");
    }
  }
  if (archive.empty()) return usage("no archive given");

  try {
    const auto open_start = Clock::now();
    auto model = exmode::Model::open(archive);
    const auto open_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - open_start).count();

    std::size_t nodes = 0;
    std::size_t sites = 0;
    for (const std::string& name : model->programNames()) {
      nodes += model->program(name).graph().nodes().size();
      sites += exmode::collectSites(model->program(name)).size();
    }

    std::vector<std::int64_t> eval_ns;
    std::vector<std::int64_t> train_ns;
    std::size_t eval_changes = 0;
    std::size_t train_changes = 0;
    for (long i = 0; i < warmup + repeat; ++i) {
      const auto t0 = Clock::now();
      const auto eval_reports = model->eval();
      const auto t1 = Clock::now();
      const auto train_reports = model->train();
      const auto t2 = Clock::now();
      eval_changes = changeCount(eval_reports);
      train_changes = changeCount(train_reports);
      if (i >= warmup) {
        eval_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
        train_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t2 - t1).count());
      }
    }

    std::cout << "{\"archive\": " << jsonString(archive) << ", \"nodes\": " << nodes
              << ", \"sites\": " << sites << ", \"open_ns\": " << open_ns
              << ", \"repeat\": " << repeat << ", \"warmup\": " << warmup << ", ";
    printDirection("eval", eval_ns, eval_changes);
    std::cout << ", ";
    printDirection("train", train_ns, train_changes);
    std::cout << "}\n";
  } catch (const std::exception& e) {
    std::cerr << "exmode_bench_switch: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
