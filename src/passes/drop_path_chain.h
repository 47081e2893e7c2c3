// The chains the drop-path pass removes going to eval (drop_path.cc): random-mask arithmetic
// that a module runs only in training and that its eval export does not hold at all.
//
// Forms (x the input, keep = 1 - p, y the chain's output; the readers of y read x in eval):
//  drop path, default IR (torchvision StochasticDepth, timm DropPath):
//    m = empty.memory_format([N, 1, ..., 1], ...) | new_empty(t, [N, 1, ..., 1], ...)
//    b = bernoulli_.float(m, keep); d = div_.Tensor|Scalar(b, keep); y = mul(x, d) | mul(d, x)
//  drop path after run_decompositions() (functional and core): the same with bernoulli.p
//    and div.Tensor|Scalar (core: new_empty becomes empty.memory_format);
//  drop path, Hugging Face: r = rand([N, 1, ..., 1], ...); a = add.Tensor(r, keep);
//    f = floor_|floor(a); s = div.Tensor|Scalar(x, keep); y = mul(s, f) | mul(f, s);
//  dropout (nn.Dropout(inplace=True), decomposed): m = empty_like(x) | (core)
//    empty_permuted(<x's sizes>, [0, 1, ...], ...); then bernoulli.p, div.Scalar, mul;
//  feature dropout (nn.Dropout1d/2d/3d, decomposed): m = new_empty(x, [N, C, 1, ..., 1]) |
//    (core) empty.memory_format([N, C, 1, ..., 1], ...); then bernoulli.p, div.Scalar, mul;
//  alpha dropout (nn.AlphaDropout; FeatureAlphaDropout with the feature mask):
//    b = bernoulli.p(m, keep); a0 = add.Scalar(b, -1); a1 = mul.Scalar(a0, alpha * a);
//    a2 = add.Scalar(a1, alpha * a * p); s = mul.Scalar(b, a); t = mul.Tensor(x, s);
//    y = add.Tensor(t, a2)   with alpha = 1.7580993408473766, a = 1 / sqrt((alpha^2 p + 1) keep).
//
// Conditions, so that a near miss is left alone (the findings analysis reports it): the nodes
// are consecutive, in this order; every value of the chain but y is read only by later nodes
// of the chain; the literals agree with keep, 0 < keep < 1; the mask's size is a literal of
// x's rank of the form's shape; y has x's dtype and sizes; every node has one output named
// like the node and inputs a record can hold. y may be a graph output only when x is not one
// and no node after the chain reads x (then eval's outputs read x, as torch's eval export's).
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "exmode/program.h"

namespace exmode::passes::drop_path {

enum class Form { kDropPath, kDropout, kFeatureDropout, kAlphaDropout, kFeatureAlphaDropout };

// "drop_path", "dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout".
std::string_view formName(Form form);
std::optional<Form> formNamed(std::string_view name);

struct Chain {
  Form form = Form::kDropPath;
  std::vector<const Node*> nodes;  // graph order, y's node last
  Value* x = nullptr;
  double keep = 0;
  const Node& last() const { return *nodes.back(); }
};

// The targets a chain can start with (full form).
const std::vector<std::string>& startTargets();

// The chain starting at `start`, if it is one.
std::optional<Chain> matchChain(const Graph& graph, const Node& start);

// The chain whose last node is `last`, found again (sites keep only that node).
std::optional<Chain> chainOf(const Graph& graph, const Node& last);

// The nodes of the chain ending at `last`, found from producers alone (no graph at hand):
// the ops of chain forms above it that descend from a chain's start and whose values only
// other such ops read. Appends to `out`, `last` included.
void chainMembers(const Node& last, std::vector<const Node*>& out);

// A node a record can hold (and a restore re-create): one tensor output named like the node,
// inputs of the kinds drop_path_record.h keeps.
bool recordableNode(const Node& node);

// The static text of a chain op's target, for restored nodes (no new text per restore);
// null for other targets.
const std::string* knownTarget(std::string_view target);

// p as a model wrote it: 1 - keep to 12 digits (1 - 0.8 is 0.19999999999999996).
double dropP(double keep);

}  // namespace exmode::passes::drop_path
