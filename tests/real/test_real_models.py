"""exmode on real architectures (torchvision, timm, Hugging Face transformers), exported
by torch 2.14.

The promise: a program exported in mode A and switched by exmode to mode B behaves bit for
bit like the eager model in mode B, or exmode says why not (a `warning:` line), and under
--strict a warned switch fails (exit 5, nothing written). Export freezes every Python
branch on self.training (drop path, attention dropout passed as `p if self.training else
0.0`, auxiliary heads), which real architectures are full of.

One test per (model, export mode A): the model is exported once, then switched to each
target mode B and compared with a fresh copy of the eager model in mode B (same initial
state, same seed: outputs, then parameters and buffers after the forward); A -> B -> A
must give back the exported program op for op; `exmode inspect --json` must parse and give
each program a "warnings" list. Every switch is one row of the table printed at the end.
"""

import copy
import json

import pytest
import torch

import real_models
from conftest import (
    MODES,
    OTHER,
    WARNING_KEYS,
    WARNING_KINDS,
    WARNING_WHEN,
    compare_with_eager,
    first_difference,
    kinds_in,
    node_list,
    read_program,
    record_row,
    run_exmode,
    set_mode,
        warning_lines,
)

SEED = 1234

# Models torch.export cannot export in a mode: the test checks that it still cannot (so
# that this list does not outlive the reason) and is then an expected failure.
EXPORT_FAILS = {
    (f"hf_bart_layerdrop_{attn}", "train"): "LayerDrop branches on torch.rand([]) < p in training mode: "
                                            "a data-dependent guard torch.export cannot trace"
    for attn in ("eager", "sdpa")
}

CASES = [(name, mode) for name in real_models.MODELS for mode in MODES]


def _check_inspect(path, label, problems):
    """exmode inspect --json parses, and each program has a well-formed "warnings" list."""
    proc = run_exmode("inspect", path, "--json")
    if proc.returncode != 0:
        problems.append(f"{label}: exmode inspect --json exited {proc.returncode}: {proc.stderr.strip()}")
        return None
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        problems.append(f"{label}: exmode inspect --json printed invalid JSON ({e})")
        return None
    programs = report.get("programs")
    if not isinstance(programs, list) or not programs:
        problems.append(f"{label}: inspect --json has no programs list")
        return None
    for program in programs:
        warnings = program.get("warnings")
        if warnings is None:
            problems.append(f"{label}: program {program.get('name')!r} has no \"warnings\" list")
            continue
        if not isinstance(warnings, list):
            problems.append(f"{label}: program {program.get('name')!r}: \"warnings\" is not a list")
            continue
        for w in warnings:
            missing = [k for k in WARNING_KEYS if k not in w] if isinstance(w, dict) else list(WARNING_KEYS)
            if missing:
                problems.append(f"{label}: warning {w!r} lacks {missing}")
            elif w["kind"] not in WARNING_KINDS or w["when"] not in WARNING_WHEN:
                problems.append(f"{label}: warning with unknown kind or when: {w!r}")
    return report


def _inspect_kinds(report, dst):
    """The kinds inspect lists for a switch to dst."""
    kinds = []
    for program in (report or {}).get("programs", []):
        for w in program.get("warnings") or []:
            if isinstance(w, dict) and w.get("when") in (f"to-{dst}", "both"):
                kinds.append(w.get("kind"))
    return kinds


def _programs_equal(a, b):
    return read_program(a) == read_program(b)


@pytest.mark.parametrize("name,src", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_switch_real_model(name, src, tmp_path, request):
    module, args = real_models.MODELS[name]()
    initial = copy.deepcopy(module)  # the state every eager copy and the export start from
    # The harness's own check: eager train and eval must tell apart on this input (outputs or
    # buffers), or no comparison below could tell a switch from a no-op.
    if compare_with_eager(set_mode(copy.deepcopy(initial), "train"), set_mode(copy.deepcopy(initial), "eval"),
                          args, SEED) is None:
        pytest.fail(f"{name}: eager train and eval modes give the same outputs and buffers; the model tests nothing")
    exported = set_mode(copy.deepcopy(initial), src)
    if (name, src) in EXPORT_FAILS:
        with pytest.raises(Exception):
            torch.export.export(exported, args)
        pytest.xfail(EXPORT_FAILS[(name, src)])
    in_path = tmp_path / f"{src}.pt2"
    torch.export.save(torch.export.export(exported, args), str(in_path))
    del exported

    problems = []
    in_report = _check_inspect(in_path, f"{src} export", problems)
    for dst in MODES:
        label = f"{name}: {src} -> {dst}"
        out = tmp_path / f"{src}_to_{dst}.pt2"
        proc = run_exmode(dst, in_path, "-o", out)
        warns = warning_lines(proc.stdout)
        kinds = (kinds_in(warns) or _inspect_kinds(in_report, dst)) if warns else []
        row = {"model": name, "export": src, "target": dst, "exact": "-", "warnings": len(warns),
               "kinds": ",".join(sorted(set(kinds))) or "-", "roundtrip": "-", "verdict": "", "detail": ""}
        try:
            if proc.returncode == 5:
                # Refusing is saying why not: one line on stderr, nothing written.
                row.update(verdict="refused", detail=proc.stderr.strip().splitlines()[0] if proc.stderr else "")
                if out.exists():
                    problems.append(f"{label}: exit 5 but {out.name} was written")
                continue
            if proc.returncode != 0:
                row.update(verdict="error", detail=f"exit {proc.returncode}: {proc.stderr.strip()[:200]}")
                problems.append(f"{label}: exmode exited {proc.returncode}\n{proc.stdout}{proc.stderr}")
                continue
            if dst == src and not _programs_equal(in_path, out):
                problems.append(f"{label}: switching to the mode the program is in changed the program")

            loaded = torch.export.load(str(out)).module()
            eager = set_mode(copy.deepcopy(initial), dst)
            diff = compare_with_eager(loaded, eager, args, SEED)
            del loaded, eager
            notes = [line for line in proc.stdout.splitlines() if "note:" in line]
            row.update(exact="no" if diff else "yes",
                       detail="; ".join(filter(None, [diff, f"{len(notes)} note: line(s)" if notes else ""])))
            if diff and not warns:
                row["verdict"] = "SILENTLY WRONG"
                problems.append(f"{label}: not exact and no warning: {diff}")
            elif warns:
                row["verdict"] = "warned" if diff else "warned, exact"
            else:
                row["verdict"] = "ok"

            strict_out = tmp_path / f"{src}_to_{dst}_strict.pt2"
            sproc = run_exmode(dst, in_path, "-o", strict_out, "--strict")
            if warns:
                if sproc.returncode != 5 or strict_out.exists():
                    problems.append(f"{label}: warned, but --strict exited {sproc.returncode} "
                                    f"{'and wrote' if strict_out.exists() else 'without writing'} the output")
            elif sproc.returncode != 0 or not _programs_equal(out, strict_out):
                problems.append(f"{label}: no warning, but --strict exited {sproc.returncode} "
                                f"or wrote another program\n{sproc.stderr}")

            _check_inspect(out, label, problems)

            if dst != src:
                back = tmp_path / f"{src}_to_{dst}_to_{src}.pt2"
                bproc = run_exmode(src, out, "-o", back)
                if bproc.returncode != 0:
                    row["roundtrip"] = f"exit {bproc.returncode}"
                    problems.append(f"{label} -> {src}: exmode exited {bproc.returncode}\n{bproc.stderr}")
                else:
                    a = node_list(read_program(in_path), canonical_names=True)
                    b = node_list(read_program(back), canonical_names=True)
                    row["roundtrip"] = "same" if a == b else "differs"
                    if a != b:
                        problems.append(f"{label} -> {src}: not the exported program: {first_difference(a, b)}")
        finally:
            record_row(request, row)
    assert not problems, "\n".join(problems)
