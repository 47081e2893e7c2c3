"""Helpers of the real-architecture tier: running exmode, reading programs, comparing a
switched program with the eager model op for op and bit for bit, and the summary table.

This tier runs only in its own venv (scripts/setup-real.sh, tests/real/requirements.txt:
torch 2.14, torchvision, timm, transformers), never under the main suite's python3. The
oracle is eager PyTorch and the program torch.export wrote; nothing trusts exmode's output.
"""

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

# Reading and comparing program JSON: the plain module the Python tests use too (not
# their conftest.py, which would clash with this one's module name).
_PYTHON_TESTS = str(Path(__file__).resolve().parents[1] / "python")
if _PYTHON_TESTS not in sys.path:
    sys.path.append(_PYTHON_TESTS)

from program_json import first_difference, node_list, read_program  # noqa: E402,F401

# Nothing in this tier may download: every model is built from a config, randomly initialised.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

try:
    import timm  # noqa: F401,E402
    import torch  # noqa: E402
    import torchvision  # noqa: F401,E402
    import transformers  # noqa: F401,E402

    _MISSING = None
except ImportError as e:  # not the tier's venv: collect nothing here
    _MISSING = str(e)


def _pinned(package):
    for line in (Path(__file__).parent / "requirements.txt").read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if name == package:
            return version
    return None


if not _MISSING and torch.__version__.split("+")[0] != _pinned("torch"):
    _MISSING = f"torch {torch.__version__} is not the tier's torch=={_pinned('torch')}"

collect_ignore_glob = ["*.py"] if _MISSING else []


# ---------------------------------------------------------------- the exmode package
# test_real_fx.py imports exmode.torch. The package is built for the system python3 (CPython
# 3.11, as the venv; its C++ core does not link torch), so the venv can import it when the
# package directory alone is on sys.path: a temporary directory holding a symlink `exmode`
# to it goes first on sys.path. Not the site-packages it is in, whose torch 2.13 would shadow
# the venv's 2.14. EXMODE_PACKAGE names the package directory (scripts/test-real.sh sets it);
# unset, the system python3 is asked where its exmode is.
_EXMODE_PACKAGE_QUERY = "import exmode, os; print(os.path.dirname(exmode.__file__))"


def _system_exmode_package():
    """(the exmode package directory of the system python3, None) or (None, why not)."""
    # The venv's own bin may be on PATH (an activated venv): its python3 has no exmode.
    venv_bin = os.path.realpath(os.path.dirname(sys.executable))
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.realpath(p) != venv_bin]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(path)
    python3 = shutil.which("python3", path=env["PATH"])
    if python3 is None:
        return None, "no python3 on PATH outside the venv"
    try:
        proc = subprocess.run([python3, "-c", _EXMODE_PACKAGE_QUERY], capture_output=True, text=True,
                              timeout=60, env=env)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"{python3}: {e}"
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return None, f"{python3} cannot import exmode: {lines[-1] if lines else f'exit {proc.returncode}'}"
    return proc.stdout.strip(), None


def _put_exmode_on_path():
    """(the package directory put on sys.path or None, where it came from, why not or None)."""
    package = os.environ.get("EXMODE_PACKAGE")
    origin = "EXMODE_PACKAGE"
    if not package:
        package, why = _system_exmode_package()
        origin = "the system python3"
        if package is None:
            return None, origin, why
    if not (Path(package) / "__init__.py").is_file():
        return None, origin, f"{package} is not a package directory (no __init__.py)"
    folder = tempfile.mkdtemp(prefix="exmode-real-package-")
    os.symlink(os.path.abspath(package), os.path.join(folder, "exmode"))
    atexit.register(shutil.rmtree, folder, True)
    sys.path.insert(0, folder)
    return package, origin, None


EXMODE_PACKAGE, EXMODE_PACKAGE_ORIGIN, EXMODE_PACKAGE_PROBLEM = (
    _put_exmode_on_path() if not _MISSING and "exmode" not in sys.modules else (None, None, None))


def import_exmode_torch():
    """exmode and exmode.torch, imported from the package put on sys.path above; fails the
    calling test (not skips: this tier is where exmode.torch meets real models) if they do
    not import."""
    if EXMODE_PACKAGE_PROBLEM:
        pytest.fail(f"no exmode package for the venv (from {EXMODE_PACKAGE_ORIGIN}): {EXMODE_PACKAGE_PROBLEM}; "
                    "set EXMODE_PACKAGE to the package directory", pytrace=False)
    try:
        import exmode
        import exmode.torch
    except ImportError as e:
        pytest.fail(f"cannot import exmode.torch from {EXMODE_PACKAGE} (from {EXMODE_PACKAGE_ORIGIN}): {e}; "
                    "an exmode installed before exmode.torch existed? Set EXMODE_PACKAGE to the package "
                    "directory of this checkout's build", pytrace=False)
    return exmode, exmode.torch


REPO = Path(__file__).resolve().parents[2]
MODES = ("train", "eval")
OTHER = {"train": "eval", "eval": "train"}
WARNING_KINDS = ("unused-state", "random-op", "unrecorded", "merged-dropout", "mode-dependent-module", "inexact")
WARNING_WHEN = ("to-train", "to-eval", "both")
WARNING_KEYS = ("kind", "when", "node", "op", "module", "module_type", "reason")
ROW_KEY = "exmode_real_row"


def pytest_report_header(config):
    if _MISSING:
        return f"tests/real: not collected ({_MISSING}); run it with scripts/test-real.sh"
    return f"tests/real: torch {torch.__version__}, exmode {exmode_path()}"


def pytest_configure(config):
    if not _MISSING:
        # One intra-op thread per worker: -n 2 on two cores, and fewer ways for kernels to differ.
        torch.set_num_threads(1)


# ---------------------------------------------------------------- the binary


def exmode_path():
    return Path(os.environ.get("EXMODE_BIN", REPO / "build" / "exmode"))


def run_exmode(*args, timeout=120):
    path = exmode_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"exmode binary not found or not executable at {path}; set EXMODE_BIN", pytrace=False)
    return subprocess.run([str(path)] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


@lru_cache(maxsize=None)
def warning_lines(stdout):
    return [line.strip() for line in stdout.splitlines() if "warning:" in line]


def kinds_in(lines):
    """The warning kinds named in exmode's warning lines (those it names)."""
    found = []
    for line in lines:
        for kind in WARNING_KINDS:
            if re.search(rf"(?<![\w-]){re.escape(kind)}(?![\w-])", line):
                found.append(kind)
    return found


# ---------------------------------------------------------------- comparing with eager


def set_mode(module, mode):
    assert mode in MODES, mode
    return module.train() if mode == "train" else module.eval()


def compare_outputs(expected, actual):
    """None if the outputs are the same structure (tuples, namedtuples, ModelOutput
    dataclasses, ...) with bit-identical tensors, else what differs."""
    import torch.utils._pytree as pytree

    e_leaves, e_spec = pytree.tree_flatten(expected)
    a_leaves, a_spec = pytree.tree_flatten(actual)
    if type(expected) is not type(actual) or e_spec != a_spec:
        return (f"output structure differs: eager {type(expected).__name__} with {len(e_leaves)} leaves, "
                f"program {type(actual).__name__} with {len(a_leaves)} leaves")
    for i, (e, a) in enumerate(zip(e_leaves, a_leaves)):
        if isinstance(e, torch.Tensor) != isinstance(a, torch.Tensor):
            return f"output leaf {i}: {type(e).__name__} vs {type(a).__name__}"
        if not isinstance(e, torch.Tensor):
            if e != a:
                return f"output leaf {i}: {e!r} vs {a!r}"
            continue
        if e.shape != a.shape or e.dtype != a.dtype:
            return f"output leaf {i}: {tuple(a.shape)} {a.dtype}, eager {tuple(e.shape)} {e.dtype}"
        if not torch.equal(e, a):
            diff = (e.double() - a.double()).abs().max().item() if e.is_floating_point() else float("nan")
            return f"output leaf {i} differs (max abs diff {diff:.3g})"
    return None


def compare_state(eager, loaded):
    """None if every eager parameter and buffer (running_mean, running_var,
    num_batches_tracked, ...) is in the loaded program's module and bit-identical."""
    l_bufs = dict(loaded.named_buffers())
    for name, value in eager.named_buffers():
        if name not in l_bufs:
            return f"buffer {name} missing from the program's module"
        if not torch.equal(value, l_bufs[name]):
            return f"buffer {name} differs: eager {value.flatten()[:4].tolist()}, program {l_bufs[name].flatten()[:4].tolist()}"
    l_params = dict(loaded.named_parameters())
    for name, value in eager.named_parameters():
        if name in l_params and not torch.equal(value, l_params[name]):
            return f"parameter {name} differs"
    return None


def compare_with_eager(loaded, eager, args, seed):
    """One forward of each with the same seed before each call; None if outputs and state
    afterwards are the same, else the first difference."""
    torch.manual_seed(seed)
    expected = eager(*[a.clone() for a in args])
    torch.manual_seed(seed)
    actual = loaded(*[a.clone() for a in args])
    return compare_outputs(expected, actual) or compare_state(eager, loaded)


# ---------------------------------------------------------------- the summary table


def record_row(request, row):
    request.node.user_properties.append((ROW_KEY, json.dumps(row)))


_ROWS = []


def pytest_runtest_logreport(report):
    if report.when == "call":
        for key, value in report.user_properties:
            if key == ROW_KEY:
                _ROWS.append(json.loads(value))


COLUMNS = ("model", "export", "target", "exact", "warnings", "kinds", "roundtrip", "verdict", "detail")


def format_table(rows):
    order = {m: i for i, m in enumerate(MODES)}
    rows = sorted(rows, key=lambda r: (r["model"], order[r["export"]], order[r["target"]]))
    cells = [COLUMNS] + [tuple(str(r.get(c, "")) for c in COLUMNS) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS) - 1)]
    lines = []
    for i, c in enumerate(cells):
        lines.append("  ".join(v.ljust(w) for v, w in zip(c, widths)) + "  " + c[-1])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    silent = [r for r in rows if r["verdict"] == "SILENTLY WRONG"]
    lines.append("")
    lines.append(f"{len(rows)} switches: {sum(r['exact'] == 'yes' for r in rows)} exact, "
                 f"{sum(r['warnings'] > 0 for r in rows)} with warnings, "
                 f"{sum(r['verdict'] == 'refused' for r in rows)} refused, {len(silent)} silently wrong")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workerinput") or not _ROWS:
        return
    table = format_table(_ROWS)
    terminalreporter.write_sep("=", "exmode on real architectures")
    terminalreporter.write_line(table)
    path = os.environ.get("EXMODE_REAL_REPORT")
    if path:
        Path(path).write_text(table + "\n")
        terminalreporter.write_line(f"(written to {path})")
