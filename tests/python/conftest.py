"""Shared helpers for the exmode Python tests: running the CLI, exporting modules,
reading and rewriting PT2 archives, and comparing exported programs with eager PyTorch.

The oracle everywhere is eager PyTorch or the program torch.export itself wrote; nothing
here trusts exmode's own output to judge exmode.
"""

import copy
import hashlib
import json
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

# The program-JSON helpers live in a plain module the real-architecture tier shares;
# re-exported here for `from conftest import ...`.
from program_json import _canon_arg, first_difference, node_list, read_program, top_folder  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
MODES = ("train", "eval")
PROGRAM_RECORD = "models/model.json"

# Ops exmode treats as mode-sensitive sites (the name as exmode reports it).
DROPOUT_OPS = {
    "aten.dropout.default",
    "aten.dropout_.default",
    "aten.feature_dropout.default",
    "aten.feature_dropout_.default",
    "aten.alpha_dropout.default",
    "aten.alpha_dropout_.default",
    "aten.feature_alpha_dropout.default",
    "aten.feature_alpha_dropout_.default",
}
BATCH_NORM_OPS = {"aten.batch_norm.default"}
INSTANCE_NORM_OPS = {"aten.instance_norm.default"}
RRELU_OPS = {"aten.rrelu.default", "aten.rrelu_.default"}


# ---------------------------------------------------------------- the binary


def exmode_path():
    """The exmode binary: $EXMODE_BIN or <repo>/build/exmode. Fails the test if missing."""
    path = Path(os.environ.get("EXMODE_BIN", REPO / "build" / "exmode"))
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"exmode binary not found or not executable at {path}; build it "
            f"(cmake -S . -B build && cmake --build build) or set EXMODE_BIN",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def exmode_bin():
    return exmode_path()


def run_exmode(*args, timeout=60):
    """Runs exmode with `args` (converted to str); returns the CompletedProcess."""
    cmd = [str(exmode_path())] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def run_ok(*args):
    """Runs exmode and asserts exit status 0, showing its output otherwise."""
    proc = run_exmode(*args)
    assert proc.returncode == 0, (
        f"exmode {' '.join(map(str, args))} exited {proc.returncode}\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc


def inspect_json(path):
    proc = run_ok("inspect", path, "--json")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        pytest.fail(f"exmode inspect --json printed invalid JSON ({e}):\n{proc.stdout}")


# ---------------------------------------------------------------- exporting


def set_mode(module, mode):
    assert mode in MODES, mode
    return module.train() if mode == "train" else module.eval()


def export_and_save(module, args, mode, path):
    """Puts `module` in `mode`, exports it with torch.export.export and saves it to `path`."""
    set_mode(module, mode)
    ep = torch.export.export(module, tuple(args))
    torch.export.save(ep, str(path))
    return ep


def load_module(path):
    """The unlifted module of the archive at `path` (in-place buffer updates included)."""
    return torch.export.load(str(path)).module()


def file_sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory):
    """Exports each (model, mode) once per session; returns a function giving the
    read-only archive path. Callers that modify an archive must copy it first."""
    import models

    root = tmp_path_factory.mktemp("exports")
    cache = {}

    def get(name, mode):
        key = (name, mode)
        if key not in cache:
            module, x = models.ALL_MODELS[name]()
            path = root / f"{name}_{mode}.pt2"
            export_and_save(module, (x,), mode, path)
            os.chmod(path, 0o444)
            cache[key] = path
        return cache[key]

    return get


# ---------------------------------------------------------------- comparing with eager


def assert_same_state(eager, loaded, context="", missing_ok=()):
    """Parameters and buffers of `loaded` equal those of `eager`, by FQN, bit for bit.

    missing_ok: buffer name suffixes that `loaded` may lack (strict export drops buffers
    the graph does not use, e.g. num_batches_tracked in eval mode)."""
    e_bufs = dict(eager.named_buffers())
    l_bufs = dict(loaded.named_buffers())
    if missing_ok:
        e_bufs = {k: v for k, v in e_bufs.items() if k in l_bufs or not k.endswith(tuple(missing_ok))}
    assert set(e_bufs) == set(l_bufs), f"{context}buffer names differ: {sorted(e_bufs)} vs {sorted(l_bufs)}"
    for name, value in e_bufs.items():
        assert torch.equal(value, l_bufs[name]), (
            f"{context}buffer {name} differs:\neager  {value.flatten()[:8]}\nloaded {l_bufs[name].flatten()[:8]}"
        )
    e_params = dict(eager.named_parameters())
    l_params = dict(loaded.named_parameters())
    assert set(e_params) == set(l_params), f"{context}parameter names differ"
    for name, value in e_params.items():
        assert torch.equal(value, l_params[name]), f"{context}parameter {name} differs"


def assert_matches_eager(loaded, eager, x, seed=1234, steps=2, missing_ok=()):
    """Runs both modules `steps` times on `x` with the same seed before each call and
    asserts identical outputs and identical parameters/buffers after every step."""
    for step in range(steps):
        torch.manual_seed(seed + step)
        expected = eager(x.clone())
        torch.manual_seed(seed + step)
        actual = loaded(x.clone())
        assert expected.shape == actual.shape, f"step {step}: shape {actual.shape} != {expected.shape}"
        assert torch.equal(expected, actual), (
            f"step {step}: output differs from eager (max abs diff "
            f"{(expected - actual).abs().max().item():.3g})"
        )
        assert_same_state(eager, loaded, context=f"step {step}: ", missing_ok=missing_ok)


def eager_copy(module, mode):
    return set_mode(copy.deepcopy(module), mode)


# ---------------------------------------------------------------- archives


def archive_records(path):
    """{record name without the top-level folder: bytes}."""
    with zipfile.ZipFile(path) as z:
        top = top_folder(z.namelist())
        return {n[len(top) + 1:]: z.read(n) for n in z.namelist()}


def repack(src, dst, modify=None, drop=(), writer="torch", compression=zipfile.ZIP_STORED, compress_only=None):
    """Rewrites the archive `src` as `dst`, record by record.

    modify: {relative name: bytes} replacing record contents; drop: relative names left
    out. writer="torch" writes with torch's own PyTorchFileWriter (aligned records, fresh
    .data/version and serialization id: a valid archive apart from what was changed);
    writer="zipfile" uses Python's zipfile with `compression` for every record, or only for
    the records in `compress_only` when that is given.
    """
    records = archive_records(src)
    modify = modify or {}
    if writer == "torch":
        w = torch._C.PyTorchFileWriter(str(dst))
        w.set_min_version(6)
        for name, data in records.items():
            if name in drop or name in (".data/version", ".data/serialization_id"):
                continue
            data = modify.get(name, data)
            w.write_record(name, data, len(data))
        w.write_end_of_file()
        return dst
    with zipfile.ZipFile(src) as z:
        top = top_folder(z.namelist())
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in records.items():
            if name in drop:
                continue
            ctype = compression
            if compress_only is not None:
                ctype = zipfile.ZIP_DEFLATED if name in compress_only else zipfile.ZIP_STORED
            z.writestr(zipfile.ZipInfo(f"{top}/{name}", date_time=(1980, 1, 1, 0, 0, 0)), modify.get(name, data),
                       compress_type=ctype)
    return dst


# ---------------------------------------------------------------- programs


def short_target(target):
    return target[len("torch.ops."):] if target.startswith("torch.ops.") else target


def module_path(node):
    """The module path of the innermost module in the node's nn_module_stack ('' for root)."""
    stack = node.get("metadata", {}).get("nn_module_stack", "")
    if not stack:
        return ""
    return stack.split(";")[-1].split(",")[1]


def _arg(node, name):
    for i in node["inputs"]:
        if i["name"] == name:
            (kind, value), = i["arg"].items()
            return kind, value
    return None, None


def program_sites(program):
    """The mode-sensitive sites of a program JSON, read directly from what torch wrote:
    [{node, op, module, mode, p | momentum, eps}] in graph order."""
    sites = []
    for node in program["graph_module"]["graph"]["nodes"]:
        op = short_target(node["target"])
        if op in DROPOUT_OPS:
            _, p = _arg(node, "p")
            _, train = _arg(node, "train")
            sites.append({"node": node["name"], "op": op, "module": module_path(node),
                          "mode": "train" if train else "eval", "p": p})
        elif op in BATCH_NORM_OPS or op in INSTANCE_NORM_OPS:
            # Norms: the mode is `training` (batch norm) or `use_input_stats` (instance norm),
            # and fixed without running statistics.
            kind, _ = _arg(node, "running_mean")
            _, flag = _arg(node, "training" if op in BATCH_NORM_OPS else "use_input_stats")
            _, momentum = _arg(node, "momentum")
            _, eps = _arg(node, "eps")
            mode = "fixed" if kind == "as_none" else ("train" if flag else "eval")
            sites.append({"node": node["name"], "op": op, "module": module_path(node), "mode": mode,
                          "momentum": momentum, "eps": eps})
        elif op in RRELU_OPS:
            _, training = _arg(node, "training")  # omitted when False, its schema default
            sites.append({"node": node["name"], "op": op, "module": module_path(node),
                          "mode": "train" if training else "eval"})
    return sites


def program_mode(sites):
    modes = {s["mode"] for s in sites} - {"fixed"}
    if not modes:
        return "none"
    return modes.pop() if len(modes) == 1 else "mixed"


FLOAT_RE = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def floats_in(text):
    return [float(m) for m in FLOAT_RE.findall(text)]
