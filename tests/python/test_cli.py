"""The command line: help, usage errors, inspect (text and JSON) against what torch
wrote in the program, --in-place and --sync."""

import math
import shutil
import zipfile

import pytest

import models
from conftest import (
    MODES,
    assert_matches_eager,
    eager_copy,
    file_sha256,
    floats_in,
    inspect_json,
    load_module,
    program_mode,
    program_sites,
    read_program,
    run_exmode,
    run_ok,
)

USAGE = 2
INSPECT_MODELS = ["resnetish", "nested", "bn_twice", "functional_dropout", "dropout_inplace",
                  "bn_no_running_stats", "bn_no_running_stats_dropout", "dropout1d", "alpha_dropout",
                  "feature_alpha_dropout", "bn1d_ncl", "instance_norm_stats", "instance_norm_no_stats", "rrelu"]


@pytest.mark.parametrize("args", [["--help"], ["eval", "--help"], ["train", "--help"], ["inspect", "--help"]],
                         ids=["top", "eval", "train", "inspect"])
def test_help(args):
    proc = run_exmode(*args)
    assert proc.returncode == 0, proc
    assert proc.stdout.strip(), "help text expected on stdout"


@pytest.mark.parametrize("args", [
    [],
    ["eval"],
    ["train"],
    ["inspect"],
    ["eval", "{src}"],              # neither -o nor --in-place
    ["eval", "{src}", "-o"],        # -o without a value
    ["frobnicate", "{src}"],        # unknown subcommand
    ["eval", "{src}", "-o", "{out}", "--no-such-flag"],
], ids=["none", "eval", "train", "inspect", "no-output", "o-without-value", "unknown-command", "unknown-flag"])
def test_usage_errors(args, tmp_path, export_cache):
    src = tmp_path / "in.pt2"
    shutil.copyfile(export_cache("conv_bn2d", "train"), src)
    before = file_sha256(src)
    out = tmp_path / "out.pt2"
    proc = run_exmode(*[a.format(src=src, out=out) for a in args])
    assert proc.returncode == USAGE, proc
    assert proc.stderr.strip(), "a usage error should explain itself on stderr"
    assert not out.exists()
    assert file_sha256(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pt2"]


@pytest.mark.parametrize("mode", MODES)
def test_output_and_in_place_together(mode, tmp_path, export_cache):
    src = tmp_path / "in.pt2"
    shutil.copyfile(export_cache("conv_bn2d", "train"), src)
    before = file_sha256(src)
    out = tmp_path / "out.pt2"
    for args in ([mode, src, "-o", out, "--in-place"], [mode, src, "--in-place", "-o", out]):
        proc = run_exmode(*args)
        assert proc.returncode == USAGE, proc
        assert not out.exists()
        assert file_sha256(src) == before


def _site_sort_key(site):
    return site["node"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", INSPECT_MODELS)
def test_inspect_json(name, mode, export_cache):
    """inspect --json reports exactly the sites in torch's program JSON: node names, ops,
    module paths, modes and the exact p / momentum / eps literals."""
    path = export_cache(name, mode)
    expected = program_sites(read_program(path))
    report = inspect_json(path)
    assert isinstance(report.get("file"), str) and path.name in report["file"]
    assert [p["name"] for p in report["programs"]] == ["model"]
    program = report["programs"][0]
    assert program["mode"] == program_mode(expected)
    actual = sorted(program["sites"], key=_site_sort_key)
    expected = sorted(expected, key=_site_sort_key)
    assert [s["node"] for s in actual] == [s["node"] for s in expected]
    for a, e in zip(actual, expected):
        for key in ("op", "module", "mode"):
            assert a[key] == e[key], f"site {e['node']}: {key} is {a[key]!r}, expected {e[key]!r}"
        for key in ("p", "momentum", "eps"):
            if key in e:
                assert key in a, f"site {e['node']}: {key} missing"
                assert a[key] == e[key], f"site {e['node']}: {key} is {a[key]!r}, expected {e[key]!r}"
            else:
                assert key not in a, f"site {e['node']}: unexpected {key}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", INSPECT_MODELS)
def test_inspect_text(name, mode, export_cache):
    """One line per site (naming node, op, module path, mode and its p / momentum / eps),
    and then a line with the program's mode."""
    path = export_cache(name, mode)
    expected = program_sites(read_program(path))
    proc = run_ok("inspect", path)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    for site in expected:
        # A node name may be a prefix of another (batch_norm, batch_norm_1): match whole words.
        matching = [ln for ln in lines if site["node"] in ln.replace(",", " ").replace("=", " ").split()]
        assert len(matching) == 1, f"expected one line for node {site['node']}, got {matching}\n{proc.stdout}"
        line = matching[0]
        assert site["op"] in line, line
        if site["module"]:
            assert site["module"] in line, line
        assert site["mode"] in line, line
        numbers = floats_in(line)
        for key in ("p", "momentum", "eps"):
            if key in site:
                assert any(math.isclose(v, site[key], rel_tol=1e-9) for v in numbers), (
                    f"{key}={site[key]} not printed in {line!r}")
    site_lines = {i for i, ln in enumerate(lines)
                  for s in expected if s["node"] in ln.replace(",", " ").replace("=", " ").split()}
    after = [ln for i, ln in enumerate(lines) if i > max(site_lines, default=-1)]
    assert any(program_mode(expected) in ln for ln in after), (
        f"the program's mode ({program_mode(expected)}) should follow the site lines:\n{proc.stdout}")


@pytest.mark.parametrize("src", MODES)
@pytest.mark.parametrize("name", ["resnetish", "bn_twice", "mlp_dropout"])
def test_in_place(name, src, tmp_path, export_cache):
    dst = "eval" if src == "train" else "train"
    path = tmp_path / "model.pt2"
    shutil.copyfile(export_cache(name, src), path)
    before = file_sha256(path)
    run_ok(dst, path, "--in-place")
    assert file_sha256(path) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"], "temporary files left behind"
    assert inspect_json(path)["programs"][0]["mode"] == dst
    module, x = models.MODELS[name]()
    assert_matches_eager(load_module(path), eager_copy(module, dst), x)


def test_in_place_already_in_mode(tmp_path, export_cache):
    path = tmp_path / "model.pt2"
    shutil.copyfile(export_cache("resnetish", "eval"), path)
    before = read_program(path)
    proc = run_ok("eval", path, "--in-place")
    assert "already" in (proc.stdout + proc.stderr).lower()
    assert read_program(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]


def test_output_overwrites_existing_file(tmp_path, export_cache):
    out = tmp_path / "out.pt2"
    out.write_bytes(b"old contents")
    run_ok("eval", export_cache("conv_bn2d", "train"), "-o", out)
    assert inspect_json(out)["programs"][0]["mode"] == "eval"


def test_sync_writes_the_same_archive(tmp_path, export_cache):
    """--sync only flushes: the same bytes, and, as without it, everything torch wrote
    before the program (the weights, their headers and data descriptors) comes out as is."""
    src = export_cache("resnetish", "train")
    plain, synced = tmp_path / "plain.pt2", tmp_path / "synced.pt2"
    run_ok("eval", src, "-o", plain)
    run_ok("eval", src, "-o", synced, "--sync")
    assert plain.read_bytes() == synced.read_bytes()
    with zipfile.ZipFile(src) as z:
        program = next(i for i in z.infolist() if i.filename.endswith("/models/model.json"))
        assert any(i.filename.split("/", 1)[1].startswith("data/weights/")
                   and i.header_offset < program.header_offset for i in z.infolist())
    prefix = program.header_offset
    assert plain.read_bytes()[:prefix] == src.read_bytes()[:prefix]
    path = tmp_path / "model.pt2"
    shutil.copyfile(src, path)
    run_ok("eval", path, "--in-place", "--sync")
    assert path.read_bytes() == plain.read_bytes()


@pytest.mark.parametrize("command", [["eval", "-o", "OUT"], ["train", "--in-place"], ["inspect"]],
                         ids=["eval", "train-in-place", "inspect"])
@pytest.mark.parametrize("limit, message", [
    (["--max-nodes", "3"], "more than 3 nodes"),
    (["--max-program-bytes", "1000"], "more than the limit of 1000"),
], ids=["nodes", "bytes"])
def test_read_limits(command, limit, message, tmp_path, export_cache):
    """A program past a limit is refused like any bad program: exit 4, one line naming the
    file, no output, the input untouched; within the limits nothing changes."""
    src = tmp_path / "model.pt2"
    shutil.copyfile(export_cache("resnetish", "train"), src)
    before = src.read_bytes()
    out = tmp_path / "out.pt2"
    args = [str(out) if a == "OUT" else a for a in command]
    proc = run_exmode(args[0], src, *args[1:], *limit)
    assert proc.returncode == 4, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and str(src) in lines[0] and message in lines[0], proc.stderr
    assert not out.exists() and src.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    run_ok(args[0], src, *args[1:], "--max-nodes", "1000000", "--max-depth", "64")
