// Inputs of the micro-benchmarks: program JSON texts, read from PT2 archives (their
// `models/model.json`, or the first program) or from .json files.
#pragma once

#include <string>
#include <vector>

namespace exmode::bench {

struct Input {
  std::string name;  // file name without extension, e.g. "resnetish_train"
  std::string json;  // the program JSON text
};

// Reads each path (`.pt2` archive or program `.json` file). Throws exmode::Error on a bad file.
std::vector<Input> loadInputs(const std::vector<std::string>& paths);

// Registers the benchmarks of each family for `input`.
void registerJsonBenchmarks(const Input& input);
void registerMatchBenchmarks(const Input& input);
void registerPassBenchmarks(const Input& input);

}  // namespace exmode::bench
