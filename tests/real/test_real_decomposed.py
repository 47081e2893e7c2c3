"""exmode on real architectures in the core ATen IR of `ep.run_decompositions()`, the form
ExecuTorch, AOTInductor and backend lowerings save.

One test per (model, export mode A): the model is exported in A and decomposed, switched to
the other mode B, and compared with torch's own decomposed export in B (outputs, then
parameters and buffers, seeded alike) and with the eager model in B. The promise is the
same as for the default IR: the same as torch's, or a `warning:` line, or a refusal (exit
5, nothing written). A train -> eval -> train round trip with no warning gives back the
exported program op for op.
"""

import copy

import pytest
import torch

import real_models
from conftest import (
    MODES,
    OTHER,
    compare_with_eager,
    first_difference,
    node_list,
    read_program,
    record_row,
    run_exmode,
    set_mode,
    warning_lines,
)
from test_real_models import EXPORT_FAILS, SEED

CASES = [(name, mode) for name in real_models.MODELS for mode in MODES if (name, mode) not in EXPORT_FAILS]

# Exports torch's own run_decompositions() cannot decompose: checked to still fail, then an
# expected failure (and no reference for a switch into that mode).
DECOMPOSE_FAILS = {
    ("hf_gpt2_sdpa", "eval"): "run_decompositions() fails in aten.view of the sdpa math path "
                    "(\"Cannot view a tensor with shape [2, 8, 32] and strides (32, 64, 1)\")",
}


def _decomposed(module, args, path):
    torch.export.save(torch.export.export(module, args).run_decompositions(), str(path))


@pytest.mark.parametrize("name,src", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_switch_decomposed_real_model(name, src, tmp_path, request):
    module, args = real_models.MODELS[name]()
    initial = copy.deepcopy(module)
    dst = OTHER[src]
    in_path, ref_path, out = tmp_path / "in.pt2", tmp_path / "ref.pt2", tmp_path / "out.pt2"
    if (name, src) in DECOMPOSE_FAILS:
        with pytest.raises(Exception):
            _decomposed(set_mode(copy.deepcopy(initial), src), args, in_path)
        pytest.xfail(DECOMPOSE_FAILS[(name, src)])
    _decomposed(set_mode(copy.deepcopy(initial), src), args, in_path)
    # Where torch cannot export the target mode, there is no reference: the switch must warn.
    has_reference = (name, dst) not in EXPORT_FAILS and (name, dst) not in DECOMPOSE_FAILS
    if has_reference:
        _decomposed(set_mode(copy.deepcopy(initial), dst), args, ref_path)
    proc = run_exmode(dst, in_path, "-o", out)
    warns = warning_lines(proc.stdout)
    row = {"model": f"{name} (core ATen)", "export": src, "target": dst, "exact": "-", "warnings": len(warns),
           "kinds": "-", "roundtrip": "-", "verdict": "", "detail": ""}
    try:
        if proc.returncode == 5:
            row.update(verdict="refused", detail=proc.stderr.strip().splitlines()[0] if proc.stderr else "")
            assert not out.exists(), f"{name}: exit 5 but the output was written"
            return
        assert proc.returncode == 0, f"{name}: exmode exited {proc.returncode}\n{proc.stdout}{proc.stderr}"
        if not has_reference:
            row["verdict"] = "warned" if warns else "runs (no reference)"
            # Nothing to compare with: the switched program must at least load and run.
            torch.export.load(str(out)).module()(*[a.clone() for a in args])
            assert warns or dst == "eval", f"{name}: torch cannot export {dst} mode, yet the switch said nothing"
            return
        loaded = torch.export.load(str(out)).module()
        reference = torch.export.load(str(ref_path)).module()
        diff = compare_with_eager(loaded, reference, args, SEED)
        eager_diff = compare_with_eager(torch.export.load(str(out)).module(), set_mode(copy.deepcopy(initial), dst),
                                        args, SEED)
        row.update(exact="no" if diff else "yes", detail=diff or eager_diff or "")
        if diff and not warns:
            row["verdict"] = "SILENTLY WRONG"
            pytest.fail(f"{name}: {src} -> {dst} differs from torch's decomposed {dst} export and nothing was said: {diff}")
        row["verdict"] = ("warned" if diff else "warned, exact") if warns else "ok"
        if not warns and not diff and src == "train":
            back = tmp_path / "back.pt2"
            bproc = run_exmode(src, out, "-o", back)
            assert bproc.returncode == 0, bproc.stderr
            a = node_list(read_program(in_path), canonical_names=True)
            b = node_list(read_program(back), canonical_names=True)
            row["roundtrip"] = "same" if a == b else "differs"
            assert a == b, f"{name}: train -> eval -> train is not the exported program: {first_difference(a, b)}"
    finally:
        record_row(request, row)
