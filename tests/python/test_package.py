"""The Python package (`pip install .`): importable without torch, the same version as the
command, and the file API (exmode.open / from_bytes, eval / train, inspect, save, to_bytes)
giving what the `exmode` command gives, byte for byte; errors as exception classes with the
command's exit statuses and messages."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import exmode
from models import AuxHead
from conftest import export_and_save, file_sha256, inspect_json, run_exmode, run_ok

SWITCHES = [("conv_bn2d", "train", "eval"), ("mlp_dropout", "eval", "train"), ("resnetish", "train", "eval")]


def _installed_exmode():
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / "exmode", Path(sys.executable).parent / "exmode"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("exmode")
    if found is None:
        pytest.fail("the exmode command the package installs was not found", pytrace=False)
    return Path(found)


@pytest.fixture(scope="module")
def aux_eval(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("aux") / "aux_eval.pt2"
    export_and_save(AuxHead(), (torch.randn(4, 8),), "eval", path)
    return path


def test_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import exmode; print(exmode.__version__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == exmode.__version__


def test_version_is_the_commands():
    proc = subprocess.run([str(_installed_exmode()), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"exmode {exmode.__version__}"
    assert run_ok("--version").stdout.strip() == f"exmode {exmode.__version__}"


@pytest.mark.parametrize("name,source,target", SWITCHES)
def test_switch_and_save_are_the_commands_bytes(export_cache, tmp_path, name, source, target):
    src = export_cache(name, source)
    run_ok(target, src, "-o", tmp_path / "cli.pt2")
    archive = exmode.open(src, module_types=[])
    assert archive.mode == source and archive.training == (source == "train")
    reports = getattr(archive, target)()
    assert [r["program"] for r in reports] == ["model"]
    assert reports[0]["before"] == source and reports[0]["after"] == target
    assert reports[0]["changes"] and reports[0]["warnings"] == []
    assert set(reports[0]["changes"][0]) == {"node", "op", "module", "before", "after"}
    assert archive.mode == target and archive.training == (target == "train") and archive.modified
    archive.save(tmp_path / "py.pt2")
    assert (tmp_path / "py.pt2").read_bytes() == (tmp_path / "cli.pt2").read_bytes()
    assert archive.to_bytes() == (tmp_path / "cli.pt2").read_bytes()
    # And back: the same as the command's switch of the command's output.
    run_ok(source, tmp_path / "cli.pt2", "-o", tmp_path / "cli_back.pt2")
    again = getattr(archive, source)()
    assert again[0]["after"] == source
    assert archive.to_bytes() == (tmp_path / "cli_back.pt2").read_bytes()


def test_switch_to_the_current_mode_changes_nothing(export_cache):
    archive = exmode.open(export_cache("conv_bn2d", "eval"))
    reports = archive.eval()
    assert reports[0]["changes"] == [] and reports[0]["warnings"] == []
    assert not archive.modified


@pytest.mark.parametrize("name,mode", [("conv_bn2d", "train"), ("attention", "eval"), ("rrelu", "train")])
def test_inspect_is_the_commands(export_cache, name, mode):
    src = export_cache(name, mode)
    assert exmode.open(src).inspect() == inspect_json(src)["programs"]


def test_inspect_lists_warnings_as_the_command(aux_eval):
    programs = exmode.open(aux_eval).inspect()
    assert programs == inspect_json(aux_eval)["programs"]
    assert programs[0]["warnings"]
    assert set(programs[0]["warnings"][0]) == {"kind", "when", "node", "op", "module", "module_type", "reason"}


def test_from_bytes_to_bytes_round_trip(export_cache, tmp_path):
    src = export_cache("conv_bn2d", "train")
    data = src.read_bytes()
    archive = exmode.from_bytes(data)
    assert archive.path is None and archive.mode == "train"
    assert archive.to_bytes() == exmode.open(src).to_bytes()
    archive.eval()
    run_ok("eval", src, "-o", tmp_path / "cli.pt2")
    assert archive.to_bytes() == (tmp_path / "cli.pt2").read_bytes()
    assert exmode.from_bytes(bytearray(archive.to_bytes())).mode == "eval"


def test_strict_refuses_a_warned_switch_and_changes_nothing(aux_eval, tmp_path):
    before = file_sha256(aux_eval)
    archive = exmode.open(aux_eval)
    original = archive.to_bytes()
    with pytest.raises(exmode.UnsupportedError) as info:
        archive.train(strict=True)
    assert info.value.exit_status == 5
    assert "strict" in str(info.value) and "\n" not in str(info.value)
    assert info.value.warnings and info.value.warnings[0]["warnings"]
    assert archive.mode == "eval" and not archive.modified
    assert archive.to_bytes() == original
    assert file_sha256(aux_eval) == before
    # The same switch without strict warns, as the command does.
    cli = run_ok("train", aux_eval, "-o", tmp_path / "cli.pt2")
    reports = archive.train()
    warned = [line for line in cli.stdout.splitlines() if "warning:" in line]
    assert len(reports[0]["warnings"]) == len(warned) > 0
    assert archive.to_bytes() == (tmp_path / "cli.pt2").read_bytes()


def test_strict_lets_an_exact_switch_through(export_cache):
    archive = exmode.open(export_cache("conv_bn2d", "train"))
    assert archive.eval(strict=True)[0]["after"] == "eval"


def _truncated(good, dst):
    data = good.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _not_a_zip(good, dst):
    dst.write_bytes(b"this is not a zip archive\n" * 10)
    return dst


def _directory(good, dst):
    dst.mkdir()
    return dst


def _bad_program(good, dst):
    from conftest import repack

    return repack(good, dst, modify={"models/model.json": b"{not json"})


@pytest.mark.parametrize(
    "make,cls,status",
    [
        (_not_a_zip, exmode.BadArchiveError, 3),
        (_truncated, exmode.BadArchiveError, 3),
        (_bad_program, exmode.BadProgramError, 4),
        (_directory, exmode.ExmodeIOError, 6),
    ],
)
def test_errors_have_the_commands_class_status_and_message(export_cache, tmp_path, make, cls, status):
    bad = make(export_cache("conv_bn2d", "train"), tmp_path / "bad.pt2")
    with pytest.raises(cls) as info:
        exmode.open(bad)
    assert isinstance(info.value, exmode.Error) and info.value.exit_status == status
    proc = run_exmode("inspect", bad)
    assert proc.returncode == status
    assert proc.stderr.strip() == f"exmode: {info.value}"
    if bad.is_file():
        with pytest.raises(cls) as from_memory:
            exmode.from_bytes(bad.read_bytes())
        assert str(from_memory.value).startswith("<bytes>")


def test_io_error_is_an_oserror(tmp_path):
    with pytest.raises(OSError):
        exmode.open(tmp_path / "missing.pt2")


def test_bad_module_type_list_is_a_usage_error(export_cache, tmp_path):
    rules = tmp_path / "rules.txt"
    rules.write_text("some.Module  sometimes  lib  reason\n")
    with pytest.raises(exmode.UsageError) as info:
        exmode.open(export_cache("conv_bn2d", "train"), module_types=[rules])
    assert info.value.exit_status == 2


def test_module_types_add_warnings(aux_eval, tmp_path):
    rules = tmp_path / "rules.txt"
    rules.write_text("*AuxHead  both  tests  returns more in training\n")
    plain = exmode.open(aux_eval).inspect()[0]["warnings"]
    more = exmode.open(aux_eval, module_types=[rules]).inspect()[0]["warnings"]
    assert any(w["kind"] == "mode-dependent-module" for w in more)
    assert not any(w["kind"] == "mode-dependent-module" for w in plain)
    cli = json.loads(run_ok("inspect", aux_eval, "--json", "--module-types", rules).stdout)
    assert more == cli["programs"][0]["warnings"]


def test_save_is_atomic(export_cache, tmp_path):
    archive = exmode.open(export_cache("conv_bn2d", "train"))
    archive.eval()
    target = tmp_path / "no_such_dir" / "out.pt2"
    with pytest.raises(exmode.ExmodeIOError) as info:
        archive.save(target)
    assert info.value.exit_status == 6
    assert not target.parent.exists()
    # An existing target is replaced whole, and nothing else is left beside it.
    out = tmp_path / "out.pt2"
    out.write_bytes(b"old")
    archive.save(out, sync=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pt2"]
    assert exmode.open(out).mode == "eval"


def test_unknown_mode_is_a_usage_error(export_cache):
    archive = exmode.open(export_cache("conv_bn2d", "train"))
    with pytest.raises(exmode.UsageError):
        archive._core.switch_mode("test")
