// Small program JSON documents for unit tests, built the way torch.export writes them.
#pragma once

#include <string>
#include <vector>

namespace exmode::testing {

struct TestNode {
  std::string name;
  std::string target;  // short form, "aten.dropout.default"
  std::string inputs;  // JSON list of NamedArgument
  std::string module;  // module path for nn_module_stack
  std::string module_type = "torch.nn.Module";
};

// A program with the given placeholders (parameters "p_*", buffers "b_*" mapped to
// state-dict names by replacing the prefix and '_' with '.', user input "x"), nodes, and
// a single user output. Every tensor gets the same scalar float metadata, except buffers
// ending in num_batches_tracked and add_* outputs, which get int64 metadata.
std::string makeProgram(const std::vector<std::string>& params,
                        const std::vector<std::string>& buffers, const std::vector<TestNode>& nodes,
                        const std::string& output, int schema_major = 8);

// NamedArgument JSON helpers.
std::string tensorInput(const std::string& name, const std::string& value);
std::string floatInput(const std::string& name, double value);
std::string boolInput(const std::string& name, bool value);
std::string intInput(const std::string& name, long value);
std::string noneInput(const std::string& name);

// A train-mode program: conv-free block x -> batch_norm(bn) -> dropout(0.3), with the
// num_batches_tracked increment, as torch.export writes it for
// Sequential(BatchNorm1d(momentum=0.3, eps=1e-3), Dropout(0.3)).
std::string bnDropoutTrainProgram();
// The same module exported in eval mode.
std::string bnDropoutEvalProgram();

}  // namespace exmode::testing
