"""exmode for PyTorch: switch exported programs and their modules between train and eval.

A drop-in for torchao.quantization.pt2e's functions of the same names:

    from exmode.torch import allow_exported_model_train_eval
    m = torch.export.export(model, example_inputs).module()
    allow_exported_model_train_eval(m)
    m.eval()   # every mode-sensitive op to eval: dropout p, batch-norm momentum and eps kept
    m.train()  # and back, exactly

and for an ExportedProgram, `exmode.torch.eval(ep)` / `exmode.torch.train(ep)`.

The passes are the C++ core's, the same that switch saved archives; this module only
writes the FX graph for them and replays their edits (see docs/DESIGN.md, "Hosts").
Switches that cannot be made exact warn (ExmodeWarning) or, with strict=True, raise
UnsupportedError before anything changes.
"""

import copy
import types

import torch

from .. import _core
from .._rules import core_rules
from ._fx_edits import EditReplay, copy_graph
from ._fx_program import ProgramWriter
from ._module_switch import (
    ALLOWED,
    ExmodeWarning,
    module_state,
    refuse_if_inexact,
    set_training,
    warn_findings,
)

__all__ = [
    "ExmodeWarning",
    "allow_exported_model_train_eval",
    "eval",
    "inspect",
    "move_exported_model_to_eval",
    "move_exported_model_to_train",
    "train",
]


def _switch_module(model, target, strict, module_types, rules=None):
    # The call that changes nothing, first and cheap: a training loop makes it every step.
    # `rules` are the core's (core_rules): None keeps those of the module's state.
    state = model.__dict__.get("_exmode_state")
    if (state is not None and state.mode == target and not module_types and rules is None
            and model.__dict__.get("training") is (target == "train") and state.current(model)):
        return model
    state = module_state(model, module_types, rules=rules)
    report = state.switch(model, target, strict)
    if report is not None and state.reports.get(target) is report and not report.get("_warned"):
        report["_warned"] = True
        warn_findings(report, "module")
    set_training(model, target == "train")
    return model


def move_exported_model_to_eval(model, *, strict=False, module_types=(), rules=None):
    """Moves the GraphModule of an exported program (`ep.module()`, also after
    prepare_qat_pt2e / convert_pt2e) to eval mode, in place; returns it. Idempotent.
    rules: user rules (docs/RULES.md; a path, an exmode.Rules or a list of them); once
    given, later switches of the module use them until others are given."""
    return _switch_module(model, "eval", strict, module_types, core_rules(rules))


def move_exported_model_to_train(model, *, strict=False, module_types=(), rules=None):
    """Moves the module to train mode, in place; returns it. Idempotent."""
    return _switch_module(model, "train", strict, module_types, core_rules(rules))


def allow_exported_model_train_eval(model, *, strict=False, module_types=(), rules=None):
    """Makes `model.train()`, `model.train(False)` and `model.eval()` switch the module's
    graph (each returns the model, as nn.Module's do), and sets `model.training` to the
    mode the graph is in. Returns the model."""
    core = core_rules(rules)
    state = module_state(model, module_types, rules=core)
    if state.mode in ("train", "eval"):
        set_training(model, state.mode == "train")

    def _train(self, mode=True):
        return _switch_module(self, "train" if mode else "eval", strict, module_types)

    def _eval(self):
        return _switch_module(self, "eval", strict, module_types)

    model.train = types.MethodType(_train, model)
    model.eval = types.MethodType(_eval, model)
    model.__dict__[ALLOWED] = lambda copy: allow_exported_model_train_eval(
        copy, strict=strict, module_types=module_types, rules=rules)
    return model


_INPUT_KINDS = {
    "PARAMETER": "parameter",
    "BUFFER": "buffer",
}
_OUTPUT_KINDS = {
    "BUFFER_MUTATION": "buffer_mutation",
    "USER_INPUT_MUTATION": "user_input_mutation",
    "LOSS_OUTPUT": "loss_output",
}


def _program_writer(ep):
    specs = {}
    for spec in ep.graph_signature.input_specs:
        name = getattr(spec.arg, "name", None)
        kind = _INPUT_KINDS.get(spec.kind.name)
        if name is not None and kind is not None:
            specs[name] = (kind, spec.target)
    outputs = {i: (_OUTPUT_KINDS[s.kind.name], s.target)
               for i, s in enumerate(ep.graph_signature.output_specs) if s.kind.name in _OUTPUT_KINDS}
    return ProgramWriter(ep.graph_module, specs, outputs)


def _host_program(ep, module_types=(), rules=None):
    writer = _program_writer(ep)
    json_text = writer.write(ep.graph)
    return _core.HostProgram(json_text, "ExportedProgram", list(module_types), rules), writer


def _signature_for(graph, signature):
    """A copy of `signature` naming the graph's placeholders as the graph does. They are the
    same names, except after copy.deepcopy of a program, which renames a placeholder called
    like a builtin ("input" -> "input_1") and not its spec; specs and placeholders go in the
    same order."""
    signature = copy.deepcopy(signature)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for spec, node in zip(signature.input_specs, placeholders):
        if hasattr(spec.arg, "name") and spec.arg.name != node.name:
            spec.arg.name = node.name
    return signature


def _switch_program(ep, target, strict, module_types, rules):
    if not isinstance(ep, torch.export.ExportedProgram):
        raise TypeError(f"expected a torch.export.ExportedProgram, got {type(ep).__name__}")
    program, writer = _host_program(ep, module_types, core_rules(rules))
    mode = program.mode()
    if mode in (target, "none"):
        if mode == "none":
            # No site to switch; what the program holds may still make the switch inexact.
            if strict:
                refuse_if_inexact(program, target, "program")
            report, _ = program.switch_mode(target)
            warn_findings(report, "program")
        return ep
    if strict:
        refuse_if_inexact(program, target, "program")
    graph, copies = copy_graph(ep.graph)
    nodes = {n.name: copies[n] for n in ep.graph.nodes}
    report, edits = program.switch_mode(target)
    EditReplay(graph, nodes, ep.graph_module, writer.stack_traces, writer.stacks).run(edits)
    gm = torch.fx.GraphModule(ep.graph_module, graph)
    switched = ep._update(gm, _signature_for(graph, ep.graph_signature))
    warn_findings(report, "program")
    return switched


def eval(ep, *, strict=False, module_types=(), rules=None):  # noqa: A001 - the mode's name
    """The ExportedProgram `ep` in eval mode: a new program sharing ep's weights and
    constants (the same tensor objects), or `ep` itself when it already is in eval mode.
    rules: user rules (docs/RULES.md), as for move_exported_model_to_eval."""
    return _switch_program(ep, "eval", strict, module_types, rules)


def train(ep, *, strict=False, module_types=(), rules=None):
    """The ExportedProgram `ep` in train mode (see eval)."""
    return _switch_program(ep, "train", strict, module_types, rules)


def inspect(model, *, module_types=(), rules=None):
    """The row of `exmode inspect --json` for an ExportedProgram or an exported module:
    its mode, its mode-sensitive sites and what a switch would warn of."""
    if isinstance(model, torch.export.ExportedProgram):
        return _host_program(model, module_types, core_rules(rules))[0].inspect()
    if not isinstance(model, torch.fx.GraphModule):
        raise TypeError(f"expected an ExportedProgram or a torch.fx.GraphModule, got {type(model).__name__}")
    # The graph as it is now: the program a module's state keeps may be in the other mode
    # (a switch to a mode seen before swaps graphs without running the passes).
    json_text = ProgramWriter(model).write(model.graph)
    core = core_rules(rules)
    state = model.__dict__.get("_exmode_state")
    if core is None and state is not None:
        core = state.rules  # the rules the module is switched with
    return _core.HostProgram(json_text, "GraphModule", list(module_types), core).inspect()
