// Builders for the unit tests' program JSON; see test_programs.h.
#include "test_programs.h"

#include "program/json_text.h"

namespace exmode::testing {

namespace {

std::string stateName(const std::string& placeholder) {
  std::string name = placeholder.substr(2);
  // "bn_running_mean" -> "bn.running_mean": the module is the part before the first '_'.
  const auto cut = name.find('_');
  if (cut != std::string::npos) name[cut] = '.';
  return name;
}

std::string meta(bool integer) {
  return std::string("{\"dtype\": ") + (integer ? "5" : "7") +
         ", \"sizes\": [], \"requires_grad\": false, \"device\": {\"type\": \"cpu\", \"index\": "
         "null}, \"strides\": [], \"storage_offset\": {\"as_int\": 0}, \"layout\": 7}";
}

bool isInteger(const std::string& value) {
  return value.find("num_batches_tracked") != std::string::npos || value.rfind("add_", 0) == 0;
}

}  // namespace

std::string tensorInput(const std::string& name, const std::string& value) {
  return "{\"name\": \"" + name + "\", \"arg\": {\"as_tensor\": {\"name\": \"" + value +
         "\"}}, \"kind\": 1}";
}
std::string floatInput(const std::string& name, double value) {
  std::string text;
  json::appendDouble(text, value);  // as torch writes it (Python's repr)
  return "{\"name\": \"" + name + "\", \"arg\": {\"as_float\": " + text + "}, \"kind\": 1}";
}
std::string boolInput(const std::string& name, bool value) {
  return "{\"name\": \"" + name + "\", \"arg\": {\"as_bool\": " + (value ? "true" : "false") +
         "}, \"kind\": 1}";
}
std::string intInput(const std::string& name, long value) {
  return "{\"name\": \"" + name + "\", \"arg\": {\"as_int\": " + std::to_string(value) +
         "}, \"kind\": 1}";
}
std::string noneInput(const std::string& name) {
  return "{\"name\": \"" + name + "\", \"arg\": {\"as_none\": true}, \"kind\": 1}";
}

std::string makeProgram(const std::vector<std::string>& params,
                        const std::vector<std::string>& buffers, const std::vector<TestNode>& nodes,
                        const std::string& output, int schema_major) {
  std::string inputs, specs, tensor_values, node_text;
  auto sep = [](std::string& s) {
    if (!s.empty()) s += ", ";
  };
  for (const auto& p : params) {
    sep(inputs);
    inputs += "{\"as_tensor\": {\"name\": \"" + p + "\"}}";
    sep(specs);
    specs += "{\"parameter\": {\"arg\": {\"name\": \"" + p + "\"}, \"parameter_name\": \"" +
             stateName(p) + "\"}}";
    sep(tensor_values);
    tensor_values += "\"" + p + "\": " + meta(false);
  }
  for (const auto& b : buffers) {
    sep(inputs);
    inputs += "{\"as_tensor\": {\"name\": \"" + b + "\"}}";
    sep(specs);
    specs += "{\"buffer\": {\"arg\": {\"name\": \"" + b + "\"}, \"buffer_name\": \"" +
             stateName(b) + "\", \"persistent\": true}}";
    sep(tensor_values);
    tensor_values += "\"" + b + "\": " + meta(isInteger(b));
  }
  sep(inputs);
  inputs += "{\"as_tensor\": {\"name\": \"x\"}}";
  sep(specs);
  specs += "{\"user_input\": {\"arg\": {\"as_tensor\": {\"name\": \"x\"}}}}";
  sep(tensor_values);
  tensor_values += "\"x\": " + meta(false);
  for (const auto& n : nodes) {
    sep(node_text);
    node_text +=
        "{\"target\": \"torch.ops." + n.target + "\", \"inputs\": [" + n.inputs +
        "], \"outputs\": [{\"as_tensor\": {\"name\": \"" + n.name +
        "\"}}], \"metadata\": {\"stack_trace\": \"File m.py, line 1\", \"nn_module_stack\": "
        "\"L__self__,,M;L__self__" +
        n.module + "," + n.module + "," + n.module_type +
        "\"}, "
        "\"is_hop_single_tensor_return\": null, \"name\": \"" +
        n.name + "\"}";
    sep(tensor_values);
    tensor_values += "\"" + n.name + "\": " + meta(isInteger(n.name));
  }
  return "{\"graph_module\": {\"graph\": {\"inputs\": [" + inputs +
         "], \"outputs\": [{\"as_tensor\": {\"name\": \"" + output + "\"}}], \"nodes\": [" +
         node_text + "], \"tensor_values\": {" + tensor_values +
         "}, \"sym_int_values\": {}, \"sym_bool_values\": {}, \"is_single_tensor_return\": false, "
         "\"custom_obj_values\": {}, \"sym_float_values\": {}}, \"signature\": {\"input_specs\": "
         "[" +
         specs + "], \"output_specs\": [{\"user_output\": {\"arg\": {\"as_tensor\": {\"name\": \"" +
         output +
         "\"}}}}]}, \"module_call_graph\": [{\"fqn\": \"\", \"signature\": null}], \"metadata\": "
         "{}, "
         "\"treespec_namedtuple_fields\": {}}, \"opset_version\": {\"aten\": 10}, "
         "\"range_constraints\": {}, "
         "\"schema_version\": {\"major\": " +
         std::to_string(schema_major) +
         ", \"minor\": 20}, \"verifiers\": "
         "[\"TRAINING\"], \"torch_version\": \"2.13.0+cpu\", \"guards_code\": [], "
         "\"future_field\": {\"kept\": [1, 2.5, \"x\"]}}";
}

namespace {
std::string bnDropout(bool train) {
  std::vector<TestNode> nodes;
  if (train)
    nodes.push_back({"add_", "aten.add_.Tensor",
                     tensorInput("self", "b_bn_num_batches_tracked") + ", " + intInput("other", 1),
                     "bn"});
  nodes.push_back({"batch_norm", "aten.batch_norm.default",
                   tensorInput("input", "x") + ", " + tensorInput("weight", "p_bn_weight") + ", " +
                       tensorInput("bias", "p_bn_bias") + ", " +
                       tensorInput("running_mean", "b_bn_running_mean") + ", " +
                       tensorInput("running_var", "b_bn_running_var") + ", " +
                       boolInput("training", train) + ", " + floatInput("momentum", 0.3) + ", " +
                       floatInput("eps", 0.001) + ", " + boolInput("cudnn_enabled", false),
                   "bn"});
  nodes.push_back({"dropout", "aten.dropout.default",
                   tensorInput("input", "batch_norm") + ", " + floatInput("p", 0.3) + ", " +
                       boolInput("train", train),
                   "drop"});
  return makeProgram({"p_bn_weight", "p_bn_bias"},
                     {"b_bn_running_mean", "b_bn_running_var", "b_bn_num_batches_tracked"}, nodes,
                     "dropout");
}
}  // namespace

std::string bnDropoutTrainProgram() { return bnDropout(true); }
std::string bnDropoutEvalProgram() { return bnDropout(false); }

}  // namespace exmode::testing
