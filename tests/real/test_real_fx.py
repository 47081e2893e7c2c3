"""exmode.torch, the FX host, on real architectures (torchvision, timm, Hugging Face
transformers), exported by torch 2.14: the same C++ passes as the CLI, run on the
GraphModule `ep.module()` in memory.

The promise is the CLI's (test_real_models.py): a module exported in mode A and switched to
mode B behaves bit for bit like the eager model in mode B, or exmode says why not (an
ExmodeWarning, one per CLI `warning:` line). And the two hosts agree: the module the FX
host switched runs the same ops with the same literal arguments, in the same order, as
the program the CLI switched, loaded back, and they warn of the same nodes for the same
reasons.

One test per (model, export mode A): the model is exported once and saved (the CLI's
input); `m = ep.module()` is made switchable with allow_exported_model_train_eval and
toggled A -> B -> A -> B with m.train(...). After each switch m runs once against a fresh
copy of the eager model in that mode (both from the same initial state, the same seed:
outputs, then parameters and buffers). A mismatch after a warned switch is recorded, an
unwarned one fails the test: a silently wrong result is the worst bug. The graph the
third switch puts back is the one the first made, whose warnings it carries (exmode warns
once per graph). A fresh `ep.module()` moved to B with strict=True must raise where the
CLI's --strict refuses. For a few models, exmode.torch.eval/train on the ExportedProgram too.

Known exmode bugs (KNOWN_BUGS) make a case an expected failure only for the problems
they explain (xfail with raises=KnownExmodeBug, strict): any other problem still fails it,
and a case whose bug no longer shows fails as XPASS.
"""

import copy
import re
import warnings
from collections import Counter

import pytest
import torch

import real_models
from conftest import (
    MODES,
    OTHER,
    WARNING_KINDS,
    compare_with_eager,
    first_difference,
    import_exmode_torch,
    kinds_in,
    node_list,
    read_program,
    record_row,
    run_exmode,
    set_mode,
    warning_lines,
)
from test_real_models import CASES, EXPORT_FAILS, SEED

# Models whose ExportedProgram is also switched with exmode.torch.eval / train (both modes):
# batch norm with buffers; dropout, drop path and SDPA attention dropout; explicit attention
# dropout; stochastic depth alone (its eval export has no mode-sensitive site).
PROGRAM_MODELS = ("tv_resnet18", "timm_vit_tiny", "hf_bert_eager", "tv_convnext")


class KnownExmodeBug(Exception):
    """Raised by a case whose only problems are those KNOWN_BUGS explains."""


# Known bugs of exmode: id -> what is wrong. A case listed in CASE_BUGS is an expected
# failure (strict) through KnownExmodeBug when every problem it finds matches one of its
# bugs' patterns; other problems fail it as usual, and so does the case once its bugs are
# gone (XPASS). None is open.
KNOWN_BUGS = {}

# (model, export mode) -> [(bug id, regular expression a problem of that bug matches)], e.g.
# ("tv_convnext", "eval"): [("some-bug", r"^tv_convnext: module eval -> train: not exact and no warning: ")]
CASE_BUGS = {}


def _marks(case):
    bugs = CASE_BUGS.get(case)
    if not bugs:
        return ()
    reason = "; ".join(f"{bug}: {KNOWN_BUGS[bug]}" for bug in dict.fromkeys(b for b, _ in bugs))
    return (pytest.mark.xfail(raises=KnownExmodeBug, strict=True, reason=reason),)


PARAMS = [pytest.param(name, src, id=f"{name}-{src}", marks=_marks((name, src))) for name, src in CASES]


# ---------------------------------------------------------------- node lists


def _target_name(target):
    if isinstance(target, torch._ops.OpOverload):
        return "torch.ops." + str(target)
    if isinstance(target, torch._ops.HigherOrderOperator):
        return "torch.ops.higher_order." + target.name()
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', repr(target))}"


def fx_node_list(gm):
    """The call_function nodes of a GraphModule, in order, as comparable entries: target,
    literal arguments (repr) and keyword arguments. An argument that is a node is named by
    what it is, not by its name: `%i` for the i-th call_function node, `input i` for the i-th
    placeholder, `attr NAME` for a get_attr of NAME, so that graphs whose nodes are named
    differently compare equal."""
    names, calls, inputs = {}, 0, 0
    for n in gm.graph.nodes:
        if n.op == "call_function":
            names[n] = f"%{calls}"
            calls += 1
        elif n.op == "placeholder":
            names[n] = f"input {inputs}"
            inputs += 1
        else:
            names[n] = f"{'attr' if n.op == 'get_attr' else n.op} {n.target}"

    def literal(a):
        if isinstance(a, torch.fx.Node):
            return names[a]
        if isinstance(a, (list, tuple)):
            return [literal(x) for x in a]
        if isinstance(a, dict):
            return {str(k): literal(v) for k, v in a.items()}
        return repr(a)

    return [{"target": _target_name(n.target), "args": literal(n.args), "kwargs": literal(dict(n.kwargs))}
            for n in gm.graph.nodes if n.op == "call_function"]


def loaded_node_list(path):
    return fx_node_list(torch.export.load(str(path)).module())


def _same_program(a, b):
    """Whether two program JSONs have the same nodes (names aside), graph outputs and signature."""
    ga, gb = a["graph_module"], b["graph_module"]
    return (node_list(a, canonical_names=True) == node_list(b, canonical_names=True)
            and len(ga["graph"]["outputs"]) == len(gb["graph"]["outputs"])
            and ga.get("signature") == gb.get("signature"))


def _baseline_note(in_path, exported):
    """Said of a disagreement of the hosts: whether the saved program, loaded back, already
    differed from ep.module() before any switch (then the comparison says nothing of exmode)."""
    saved = loaded_node_list(in_path)
    if saved == exported:
        return ""
    return f"\n  (but ep.module() and the saved program's module() differ before any switch: " \
           f"{first_difference(saved, exported)})"


# ---------------------------------------------------------------- warnings

_FX_WARNING = re.compile(r"(?:module|program)(?: at node '(?P<node>[^']*)')?(?: \(module '(?P<module>[^']*)'\))?"
                         r": (?P<reason>.*)", re.S)
_KIND = re.compile(r"  (?:" + "|".join(re.escape(k) for k in WARNING_KINDS) + r"): ")


# A program's graph reads its parameters, buffers and constants as placeholders named
# p_NAME, b_NAME and c_NAME; its module() as get_attr nodes named NAME. A warning about state
# no node reads names the one or the other.
_STATE_INPUT = re.compile(r"^[pbc]_")


def fx_findings(messages):
    """(node, reason) of each ExmodeWarning message, sorted."""
    found = []
    for text in messages:
        match = _FX_WARNING.fullmatch(text)
        found.append((_STATE_INPUT.sub("", match["node"] or ""), match["reason"]) if match else ("?", text))
    return sorted(found)


def cli_findings(lines):
    """(node, reason) of each CLI `warning:` line ("warning: NODE  OP  MODULE  KIND: REASON"), sorted."""
    found = []
    for line in lines:
        rest = line.split("warning: ", 1)[1] if "warning: " in line else line
        node = "" if rest.startswith(" ") else _STATE_INPUT.sub("", rest.split("  ", 1)[0])
        match = _KIND.search(rest)
        found.append((node, rest[match.end():] if match else rest))
    return sorted(found)


def compare_findings(label, fx_messages, cli_lines, problems):
    """The FX host warned of what the CLI warned of: as many warnings, the same nodes and reasons."""
    fx, cli = Counter(fx_findings(fx_messages)), Counter(cli_findings(cli_lines))
    if fx != cli:
        count = "" if sum(fx.values()) == sum(cli.values()) else \
            f"the FX host gave {sum(fx.values())} warning(s), the CLI {sum(cli.values())}; "
        problems.append(f"{label}: the FX host and the CLI do not warn alike: {count}"
                        f"(node, reason) only the FX host gave: {sorted((fx - cli).elements())}; "
                        f"only the CLI: {sorted((cli - fx).elements())}")


class _Caught:
    """The ExmodeWarning messages raised inside a `with` block."""

    def __init__(self, category):
        self.category = category
        self.messages = []

    def __enter__(self):
        self._cm = warnings.catch_warnings(record=True)
        self._records = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        self.messages = [str(w.message) for w in self._records if issubclass(w.category, self.category)]
        return False


# ---------------------------------------------------------------- comparing with eager


def reset_state(module, initial):
    """Gives the module's parameters and buffers the eager model's initial values (a forward
    in train mode moves batch-norm statistics and counters)."""
    with torch.no_grad():
        for named, mine in ((initial.named_parameters(), dict(module.named_parameters())),
                            (initial.named_buffers(), dict(module.named_buffers()))):
            for name, value in named:
                if name in mine:
                    mine[name].copy_(value)


def _verdict(diff, warned):
    if diff and not warned:
        return "SILENTLY WRONG"
    if warned:
        return "warned" if diff else "warned, exact"
    return "ok"


# ---------------------------------------------------------------- the test


def _switch_program(exmode, exmode_torch, name, src, dst, ep, initial, args, cli, request, problems):
    """exmode.torch.<dst>(ep): a new program (ep left as it was) that runs as the eager model
    in dst unless it warned, and agrees with the CLI's switch."""
    label = f"{name}: program {src} -> {dst}"
    before = fx_node_list(ep.module())
    row = {"model": f"{name} [fx ep]", "export": src, "target": dst, "exact": "-", "warnings": 0,
           "kinds": "-", "roundtrip": "-", "verdict": "", "detail": ""}
    try:
        with _Caught(exmode_torch.ExmodeWarning) as caught:
            try:
                switched = getattr(exmode_torch, dst)(ep)
            except exmode.UnsupportedError as e:
                switched = None
                row.update(verdict="error", detail=str(e)[:200])
                if cli["rc"] == 0:
                    problems.append(f"{label}: exmode.torch.{dst} raised where the CLI switched: {e}")
        if switched is None:
            return
        row.update(warnings=len(caught.messages), kinds=",".join(sorted(set(kinds_in(cli["warns"])))) or "-")
        compare_findings(label, caught.messages, cli["warns"], problems)
        if fx_node_list(ep.module()) != before:
            problems.append(f"{label}: changed the program it was given")
        module = switched.module()
        if cli["nodes"] is not None and fx_node_list(module) != cli["nodes"]:
            problems.append(f"{label}: not the CLI's program: {first_difference(cli['nodes'], fx_node_list(module))}")
        diff = compare_with_eager(module, set_mode(copy.deepcopy(initial), dst), args, SEED)
        row.update(exact="no" if diff else "yes", verdict=_verdict(diff, caught.messages), detail=diff or "")
        if diff and not caught.messages:
            problems.append(f"{label}: not exact and no warning: {diff}")
    finally:
        record_row(request, row)


@pytest.mark.parametrize("name,src", PARAMS)
def test_fx_switch_real_model(name, src, tmp_path, request):
    exmode, exmode_torch = import_exmode_torch()
    module, args = real_models.MODELS[name]()
    initial = copy.deepcopy(module)  # the state every eager copy and the export start from
    del module
    if (name, src) in EXPORT_FAILS:
        with pytest.raises(Exception):
            torch.export.export(set_mode(copy.deepcopy(initial), src), args)
        pytest.xfail(EXPORT_FAILS[(name, src)])
    # A copy: torch.export shares the module's tensors with the program and its module().
    ep = torch.export.export(set_mode(copy.deepcopy(initial), src), args)
    in_path = tmp_path / f"{src}.pt2"
    torch.export.save(ep, str(in_path))

    problems = []
    m = ep.module()
    exported = fx_node_list(m)
    detected = exmode_torch.inspect(m)["mode"]
    exmode_torch.allow_exported_model_train_eval(m)
    # A graph with no mode-sensitive site ("none": e.g. an eval export whose only train-mode
    # behaviour was not recorded) is in no mode: `training` is then left as ep.module() set it.
    if detected != "none" and m.training is not (src == "train"):
        problems.append(f"{name}: allow_exported_model_train_eval left training={m.training} on a {src} export "
                        f"(detected mode {detected!r})")

    # The CLI's switches of the saved program: src -> dst, and that back to src. Loading a
    # program takes longer than all the rest but the export: the way back is loaded only if
    # its program JSON is not the exported one.
    dst = OTHER[src]
    cli = {}
    given = in_path
    for step, target in enumerate((dst, src)):
        out = tmp_path / f"{given.stem}_to_{target}.pt2"
        proc = run_exmode(target, given, "-o", out)
        nodes = None
        if proc.returncode == 0:
            if step == 1 and _same_program(read_program(in_path), read_program(out)):
                nodes = exported
            else:
                nodes = loaded_node_list(out)
        elif proc.returncode != 5:
            problems.append(f"{name}: exmode {target} {given.name} exited {proc.returncode}: "
                            f"{proc.stderr.strip()[:300]}")
        cli[step] = {"rc": proc.returncode, "warns": warning_lines(proc.stdout), "nodes": nodes}
        if proc.returncode != 0:
            break
        given = out

    graph_warnings = {src: []}  # mode -> the warnings of the switch that made the module's graph of it
    for step, target in enumerate((dst, src, dst)):
        label = f"{name}: module {' -> '.join((src, dst, src, dst)[:step + 2])}"
        row = {"model": f"{name} [fx]", "export": src, "target": target, "exact": "-", "warnings": 0,
               "kinds": "-", "roundtrip": "-", "verdict": "", "detail": f"switch {step + 1}"}
        try:
            with _Caught(exmode_torch.ExmodeWarning) as caught:
                try:
                    returned = m.train(target == "train")
                except exmode.UnsupportedError as e:
                    row.update(verdict="error", detail=f"switch {step + 1}: {str(e)[:200]}")
                    problems.append(f"{label}: raised {type(e).__name__}: {e}"
                                    + (" where the CLI switched" if cli.get(step, {}).get("rc") == 0 else ""))
                    break
            if returned is not m:
                problems.append(f"{label}: m.train() returned {type(returned).__name__}, not the module")
            if m.training is not (target == "train"):
                problems.append(f"{label}: training is {m.training}")
            if step < 2:
                graph_warnings[target] = caught.messages
                if step in cli:
                    compare_findings(label, caught.messages, cli[step]["warns"], problems)
                kinds = kinds_in(cli[step]["warns"]) if step in cli else []
            else:
                # The graph of the first switch, put back: exmode warned of it then (and
                # warns once per graph, so not again here).
                if caught.messages:
                    row["detail"] += f" ({len(caught.messages)} warning(s) again)"
                kinds = kinds_in(cli[0]["warns"])
            warned = graph_warnings.get(target, [])
            row.update(warnings=len(warned), kinds=",".join(sorted(set(kinds))) or "-")

            nodes = fx_node_list(m)
            expected = cli.get(step % 2, {}).get("nodes")
            if expected is not None and nodes != expected:
                problems.append(f"{label}: not the CLI's program: {first_difference(expected, nodes)}"
                                + _baseline_note(in_path, exported))
            if step == 1:
                row["roundtrip"] = "same" if nodes == exported else "differs"
                if nodes != exported:
                    problems.append(f"{label}: not the exported graph: {first_difference(exported, nodes)}")

            reset_state(m, initial)
            diff = compare_with_eager(m, set_mode(copy.deepcopy(initial), target), args, SEED)
            row.update(exact="no" if diff else "yes", verdict=_verdict(diff, warned),
                       detail="; ".join(filter(None, [row["detail"], diff])))
            if diff and not warned:
                problems.append(f"{label}: not exact and no warning: {diff}")
        finally:
            record_row(request, row)
    reset_state(m, initial)  # and so the program's state, which m may share
    del m

    # strict=True on a fresh module: refuses, changing nothing, what the CLI's --strict refuses
    # (a switch the CLI warned of), and switches the rest.
    fresh = ep.module()
    if fx_node_list(fresh) != exported:
        problems.append(f"{name}: switching ep.module() changed the program ep")
    label = f"{name}: module {src} -> {dst} with strict=True"
    try:
        getattr(exmode_torch, f"move_exported_model_to_{dst}")(fresh, strict=True)
        refused = None
    except exmode.UnsupportedError as e:
        refused = e
    if 0 in cli and cli[0]["warns"] and refused is None:
        problems.append(f"{label}: switched where `exmode {dst} --strict` refuses "
                        f"({len(cli[0]['warns'])} warning(s))")
    elif 0 in cli and not cli[0]["warns"] and refused is not None:
        problems.append(f"{label}: raised where the CLI does not warn: {refused}")
    elif refused is not None and fx_node_list(fresh) != exported:
        problems.append(f"{label}: refused, but changed the module")
    del fresh

    if name in PROGRAM_MODELS and cli[0]["rc"] == 0:
        _switch_program(exmode, exmode_torch, name, src, dst, ep, initial, args, cli[0], request, problems)

    bugs = CASE_BUGS.get((name, src), [])
    unexplained = [p for p in problems if not any(re.search(pattern, p) for _, pattern in bugs)]
    assert not unexplained, "\n".join(unexplained)
    if problems:
        seen = dict.fromkeys(bug for bug, pattern in bugs if any(re.search(pattern, p) for p in problems))
        raise KnownExmodeBug("; ".join(seen) + ":\n" + "\n".join(problems))
