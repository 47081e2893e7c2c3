// Recurrent layers (nn.LSTM, nn.GRU, nn.RNN): the `train` flag that turns on the dropout
// between stacked layers.
//
// Before: aten.lstm.input(input, hx, params, has_biases, num_layers, dropout, train=T, ...)
// After:  aten.lstm.input(input, hx, params, has_biases, num_layers, dropout, train=not T, ...)
// Ops: lstm, gru, rnn_tanh, rnn_relu, each in its `input` and packed `data` overload; the
// eval export keeps `dropout` and writes train=False (docs/EXPORT_IR.md).
// Conditions: `train` is a literal bool (see literalFlag). `dropout` is never touched.
#include "passes/flag_pass.h"

namespace exmode::passes {

namespace {

const rewrite::Pattern& rnnPattern() {
  static const rewrite::Pattern pattern = rewrite::Pattern(
      {"aten.lstm.input", "aten.lstm.data", "aten.gru.input", "aten.gru.data",
       "aten.rnn_tanh.input", "aten.rnn_tanh.data", "aten.rnn_relu.input", "aten.rnn_relu.data"});
  return pattern;
}

}  // namespace

const ModePass& rnnPass() {
  static const FlagPass pass("rnn", rnnPattern(), "train", "dropout");
  return pass;
}

}  // namespace exmode::passes
