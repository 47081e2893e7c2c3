"""Switching the GraphModule of an exported program (`ep.module()`) between modes.

The passes run in the C++ core on the program JSON of the module's graph (_fx_program.py);
their edits are replayed on the FX graph (_fx_edits.py). What makes toggling cheap:

* Each mode's graph is kept once made, with its generated code. A switch to a mode seen
  before puts that graph and its code back: no pass runs, no code is generated.
* A graph new to a mode gets its code when the module next runs (or its code is read),
  not in the switch: the first switch of a fresh module costs the passes and the edits,
  and the code generation happens once per mode.
* The first switch edits the module's own graph; the way back edits a copy, so from then
  on both modes' graphs exist.

The kept graphs are the module's own: a switch notices when the graph or its code was
changed by anyone else (a new graph, recompile(), nodes added or erased) and starts over
from the module as it is, so edits made between switches are kept and switched.
"""

import warnings

import torch
from torch.fx import GraphModule

from .. import _core
from .._errors import UnsupportedError
from ._fx_edits import EditReplay, copy_graph
from ._fx_program import ProgramWriter

_STATE = "_exmode_state"


class ExmodeWarning(UserWarning):
    """A switch that cannot be made exact (the CLI's `warning:` lines)."""


def warn_findings(report, where):
    for w in report["warnings"]:
        node = f" at node '{w['node']}'" if w["node"] else ""
        module = f" (module '{w['module']}')" if w["module"] else ""
        warnings.warn(f"{where}{node}{module}: {w['reason']}", ExmodeWarning, stacklevel=4)


def refuse_if_inexact(program, target, where):
    """strict=True: raises before anything changes when switching `program` (a HostProgram)
    to `target` would warn."""
    findings = program.switch_warnings(target)
    if findings:
        refuse_findings(findings, where, target)


def refuse_findings(findings, where, target):
    lines = "; ".join(
        f"node '{w['node']}': {w['reason']}" if w["node"] else w["reason"] for w in findings)
    error = UnsupportedError(f"{where}: switching to {target} would not be exact ({lines}); "
                             "nothing was changed (strict)")
    error.warnings = findings
    raise error


def _generate_pending(obj):
    """Generates the module's code if its graph is newer than its code."""
    state = obj.__dict__.get(_STATE)
    if state is not None and state.pending:
        state.compile(obj)


class _LazyCode:
    """GraphModule._code of a module whose graph is newer than its code: reading it (as
    `code`, `print_readable` and `str` do) generates the code first."""

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        _generate_pending(obj)
        return obj.__dict__["_exmode_code"]

    def __set__(self, obj, value):
        obj.__dict__["_exmode_code"] = value


class _LazyForward:
    """The `forward` of a module whose graph is newer than its code: looking it up (a call,
    torch.compile, inspect.signature) generates the code first and gives the real forward,
    so nothing ever traces or caches a stand-in."""

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        _generate_pending(obj)
        forward = type(obj).__dict__.get("forward")
        if forward is self:  # no state to compile with any more: FX's own recompile
            GraphModule.recompile(obj)
            forward = type(obj).__dict__["forward"]
        return forward.__get__(obj, cls)


_LAZY_FORWARD = _LazyForward()


_CODE_ATTRS = ("_exmode_code", "_lineno_map", "_prologue_start", "_in_spec", "_out_spec")


class ModuleState:
    """What exmode keeps on one GraphModule (as `gm._exmode_state`)."""

    def __init__(self, gm, module_types, rules=None):
        cls = type(gm)
        if not isinstance(cls.__dict__.get("_code"), _LazyCode):
            cls._code = _LazyCode()
            cls.__deepcopy__ = _deepcopy_module
        if "_code" in gm.__dict__:
            gm.__dict__["_exmode_code"] = gm.__dict__.pop("_code")
        self.module_types = list(module_types)
        self.rules = rules  # the core's user rules (exmode._core.Rules), or None
        self.rules_key = rules.text() if rules is not None else ""
        self.graphs = {}  # mode -> (graph, {program name: node})
        self.codes = {}  # mode -> (forward, {code attribute: value}), once generated
        self.reports = {}  # mode -> the report of the switch that made its graph
        self.pending = False  # the module's graph has no code yet
        self.switches = 0
        self.modules = None  # set_training's (registration count, list of submodules)
        writer = ProgramWriter(gm)
        json_text = writer.write(gm.graph)
        self.stack_traces = writer.stack_traces
        self.stacks = writer.stacks
        self.program = _core.HostProgram(json_text, "GraphModule", self.module_types, rules)
        self.mode = self.program.mode()
        self.graphs[self.mode] = (gm.graph, {n.name: n for n in gm.graph.nodes})
        self.codes[self.mode] = self._code_of(gm)
        self._watch(gm)

    # Copies of a module start over: the core's program is not copied with it.
    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return (type(None), ())

    def _code_of(self, gm):
        d = gm.__dict__
        return type(gm).__dict__.get("forward"), {a: d[a] for a in _CODE_ATTRS if a in d}

    def _watch(self, gm):
        self.seen = (gm.__dict__.get("_graph"), type(gm).__dict__.get("forward"),
                     len(gm.graph.nodes))

    def current(self, gm):
        """Whether the module is as the last switch left it."""
        graph, forward, count = self.seen
        return (gm.__dict__.get("_graph") is graph and type(gm).__dict__.get("forward") is forward
                and len(graph.nodes) == count)

    def compile(self, gm):
        """Generates the code of the module's graph (once per graph: kept for its mode)."""
        edited = not self.current(gm)  # nodes added or erased since the switch
        self.pending = False
        GraphModule.recompile(gm)
        if edited:
            # The edit is in this mode's graph only: the next switch starts over from it.
            gm.__dict__.pop(_STATE, None)
            return
        self.codes[self.mode] = self._code_of(gm)
        self._watch(gm)

    def _install(self, gm, mode):
        graph, _ = self.graphs[mode]
        gm.__dict__["_graph"] = graph
        graph.owning_module = gm
        cls = type(gm)
        code = self.codes.get(mode)
        if code is None:
            cls.forward = _LAZY_FORWARD
            self.pending = True
        else:
            forward, attrs = code
            cls.forward = forward
            gm.__dict__.update(attrs)
            self.pending = False
        self.mode = mode
        self._watch(gm)

    def switch(self, gm, target, strict):
        """Moves the module to `target`; returns the report of the switch that made the
        graph of that mode (None when the module already was in it)."""
        if self.mode == target:
            return None
        if self.mode == "none":
            # No site to switch, but what the module holds may still say the switch is not
            # exact (a module known to branch on training, state no node reads).
            report = self.reports.get(target)
            if report is None:
                if strict:
                    refuse_if_inexact(self.program, target, "module")
                report, _ = self.program.switch_mode(target)
                self.reports[target] = report
            elif strict and report["warnings"]:
                refuse_findings(report["warnings"], "module", target)
            return report
        if target in self.graphs:
            report = self.reports.get(target)
            if strict and report and report["warnings"]:
                refuse_findings(report["warnings"], "module", target)
            self._install(gm, target)
            return report
        if strict:
            refuse_if_inexact(self.program, target, "module")
        # The passes first: a program they refuse leaves the module and this state as they were.
        report, edits = self.program.switch_mode(target)
        graph, nodes = self.graphs[self.mode]
        if self.switches > 0 or self.codes.get(self.mode) is None:
            # Kept for the way back: the edits go to a copy.
            graph, copies = copy_graph(graph)
            nodes = {name: copies[n] for name, n in nodes.items()}
        else:
            # The first switch of a module edits its own graph: the mode it leaves has no
            # graph kept (its code stays valid only for the graph it was made from).
            del self.graphs[self.mode]
            del self.codes[self.mode]
            nodes = dict(nodes)
        try:
            EditReplay(graph, nodes, gm, self.stack_traces, self.stacks).run(edits)
        except BaseException:
            # Half replayed: the core's program and the graph no longer agree. Nothing of
            # this state is kept; the next switch starts over from the module as it is.
            gm.__dict__.pop(_STATE, None)
            raise
        self.graphs[target] = (graph, nodes)
        self.codes.pop(target, None)
        self.reports[target] = report
        self.switches += 1
        self._install(gm, target)
        return report


def _deepcopy_module(self, memo):
    # GraphModule.__deepcopy__ copies the graph in its current mode but not the instance's
    # train/eval methods, and leaves `training` True: the copy gets both as the module has.
    copied = GraphModule.__deepcopy__(self, memo)
    allowed = self.__dict__.get(ALLOWED)
    if allowed is not None:
        allowed(copied)
    set_training(copied, self.training)
    return copied


# The function allow_exported_model_train_eval left on a module, to do the same to a copy.
ALLOWED = "_exmode_allowed"


def module_state(gm, module_types=(), fresh=False, rules=None):
    """The module's state, made anew when the module changed since the last switch. rules
    (the core's user rules) None keeps those the state was made with."""
    if not isinstance(gm, GraphModule):
        raise TypeError(f"expected a torch.fx.GraphModule (from ExportedProgram.module()), "
                        f"got {type(gm).__name__}")
    state = gm.__dict__.get(_STATE)
    other_rules = state is not None and module_types and list(module_types) != state.module_types
    if state is not None and rules is not None and rules.text() != state.rules_key:
        other_rules = True
    if rules is None and state is not None:
        rules = state.rules  # a switch without rules keeps switching the rules' sites
    if fresh or state is None or other_rules or not state.current(gm):
        if state is not None and state.pending:
            state.compile(gm)  # the module's graph as it is now, with its code
        state = ModuleState(gm, module_types, rules)
        gm.__dict__[_STATE] = state
    return state


# How many submodules have been registered anywhere since exmode started counting: the list
# of a module's submodules that set_training keeps is current while this has not moved.
_registrations = [0]
_registration_hook = []


def _watch_registrations():
    if not _registration_hook:
        def counted(module, name, submodule):
            _registrations[0] += 1

        _registration_hook.append(
            torch.nn.modules.module.register_module_module_registration_hook(counted))


def set_training(gm, training):
    """Sets `training` on the module and its submodules, as nn.Module.train does: directly
    where a module's train() is nn.Module's (a large model has hundreds of submodules, and
    this runs on every toggle), through its train() where the module has its own."""
    state = gm.__dict__.get(_STATE)
    modules = None
    if state is not None and state.modules is not None and state.modules[0] == _registrations[0]:
        modules = state.modules[1]
    if modules is None:
        _watch_registrations()
        modules = [(m, type(m).train is torch.nn.Module.train and "train" not in m.__dict__)
                   for m in gm.modules() if m is not gm]
        if state is not None:
            state.modules = (_registrations[0], modules)
    gm.__dict__["training"] = training
    for m, plain in modules:
        if plain:
            m.__dict__["training"] = training
        else:
            m.train(training)
