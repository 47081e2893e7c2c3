"""Many files at once: `exmode eval|train A B ... (-o DIR | --in-place) [-j N]`.

A directory of good and broken archives: the good ones are switched (and behave like eager
PyTorch in the target mode), the broken ones are reported one line each, the exit status is
non-zero, and nothing else is touched: no output for a broken file, inputs byte-identical,
nothing else in DIR, no temporary file anywhere. Usage errors write nothing at all.
"""

import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import termios

import pytest
import torch

import models
from conftest import (assert_matches_eager, eager_copy, exmode_path, export_and_save, file_sha256,
                      load_module, run_exmode)
from test_hostile_files import _maps_input, big  # noqa: F401 (big: a fixture, an archive slow to read)

USAGE, BAD_ARCHIVE, UNSUPPORTED, IO_ERROR = 2, 3, 5, 6
# (model, export mode): switched to eval, the first two change, the third is already eval.
GOOD = [("conv_bn2d", "train"), ("mlp_dropout", "train"), ("resnetish", "eval")]
# Broken inputs and the status each gets alone.
BROKEN = {"truncated.pt2": BAD_ARCHIVE, "not_a_zip.pt2": BAD_ARCHIVE, "empty.pt2": BAD_ARCHIVE,
          "a_directory.pt2": IO_ERROR, "a_fifo.pt2": IO_ERROR}


def _listing(directory):
    return sorted(p.name for p in directory.iterdir())


def _snapshot(directory):
    """{name: sha256 or kind} of everything in `directory`."""
    out = {}
    for p in directory.iterdir():
        if p.is_fifo():
            out[p.name] = "fifo"
        elif p.is_dir():
            out[p.name] = ("dir", tuple(_listing(p)))
        else:
            out[p.name] = file_sha256(p)
    return out


def _good_name(name, mode):
    return f"{name}_{mode}.pt2"


@pytest.fixture
def inputs(tmp_path, export_cache):
    """tmp_path/in: the good archives interleaved with the broken ones; returns (dir, paths in
    the order given on the command line)."""
    src = tmp_path / "in"
    src.mkdir()
    good = []
    for name, mode in GOOD:
        path = src / _good_name(name, mode)
        shutil.copyfile(export_cache(name, mode), path)
        good.append(path)
    data = good[0].read_bytes()
    (src / "truncated.pt2").write_bytes(data[: len(data) // 2])
    (src / "not_a_zip.pt2").write_bytes(b"this is not a zip archive\n" * 10)
    (src / "empty.pt2").write_bytes(b"")
    (src / "a_directory.pt2").mkdir()
    os.mkfifo(src / "a_fifo.pt2")
    broken = [src / n for n in BROKEN]
    order = [good[0], broken[0], broken[1], good[1], broken[2], broken[3], good[2], broken[4]]
    return src, order


def _assert_matches_eager_eval(path, name):
    module, x = models.ALL_MODELS[name]()
    assert_matches_eager(load_module(path), eager_copy(module, "eval"), x)


def _summary_lines(stdout):
    return [line for line in stdout.splitlines() if not line.startswith(" ")]


def _check_report(proc, order, switched, unchanged):
    """One summary line per good file on stdout, in the order given, one error line per broken
    file on stderr naming it, and the final count."""
    good = [p for p in order if p.name not in BROKEN]
    broken = [p for p in order if p.name in BROKEN]
    lines = _summary_lines(proc.stdout)
    assert lines[-1] == f"{len(order)} files: {switched} switched, {unchanged} unchanged, {len(broken)} failed", proc.stdout
    assert [line.split(": ", 1)[0] for line in lines[:-1]] == [str(p) for p in good], proc.stdout
    errors = proc.stderr.splitlines()
    assert len(errors) == len(broken), proc.stderr
    for path, line in zip(broken, errors):
        assert line.startswith(f"exmode: {path}: "), (path, line)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_output_directory_with_good_and_broken_archives(inputs, tmp_path, jobs):
    src, order = inputs
    before = _snapshot(src)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_exmode("eval", *order, "-o", out, "-j", jobs)

    # The worst status: an I/O error (the directory, the FIFO) outranks a bad archive.
    assert proc.returncode == IO_ERROR, proc
    _check_report(proc, order, switched=2, unchanged=1)
    assert "conv_bn2d_train.pt2: train -> eval (" in proc.stdout
    assert "resnetish_eval.pt2: already in eval mode; nothing changed" in proc.stdout
    assert _listing(out) == sorted(_good_name(n, m) for n, m in GOOD), "only the good files, nothing else"
    for name, mode in GOOD:
        _assert_matches_eager_eval(out / _good_name(name, mode), name)
    assert _snapshot(src) == before, "inputs must stay byte-identical"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_in_place_with_good_and_broken_archives(inputs, tmp_path):
    src, order = inputs
    before = _snapshot(src)
    proc = run_exmode("eval", *order, "--in-place", "-j", "2")
    assert proc.returncode == IO_ERROR, proc
    _check_report(proc, order, switched=2, unchanged=1)
    after = _snapshot(src)
    assert sorted(after) == sorted(before), "no file added or removed (no temporary file left)"
    for name, mode in GOOD:
        path = src / _good_name(name, mode)
        changed = mode != "eval"
        assert (after[path.name] != before[path.name]) == changed, path.name
        _assert_matches_eager_eval(path, name)
    for name in BROKEN:
        assert after[name] == before[name], f"{name} was touched"


def test_all_good_exits_zero(tmp_path, export_cache):
    paths = []
    for name, mode in GOOD:
        paths.append(tmp_path / _good_name(name, mode))
        shutil.copyfile(export_cache(name, mode), paths[-1])
    out = tmp_path / "out"
    out.mkdir()
    proc = run_exmode("eval", *paths, "-o", f"{out}/")
    assert proc.returncode == 0, proc
    assert proc.stderr == ""
    assert _summary_lines(proc.stdout)[-1] == "3 files: 2 switched, 1 unchanged, 0 failed"


def test_parallel_jobs_write_the_same_bytes(tmp_path, export_cache):
    names = ["conv_bn2d", "mlp_dropout", "resnetish", "bn_twice", "nested", "dropout2d", "rrelu"]
    src = tmp_path / "in"
    src.mkdir()
    paths = []
    for name in names:
        paths.append(src / f"{name}.pt2")
        shutil.copyfile(export_cache(name, "train"), paths[-1])
    (src / "broken.pt2").write_bytes(b"PK\x03\x04 not really")
    paths.insert(3, src / "broken.pt2")
    runs = {}
    for jobs in ("1", "4", "0"):
        out = tmp_path / f"out{jobs}"
        out.mkdir()
        proc = run_exmode("eval", *paths, "-o", out, "-j", jobs)
        assert proc.returncode == BAD_ARCHIVE, proc
        runs[jobs] = (proc.stdout, proc.stderr, _snapshot(out))
    assert runs["1"] == runs["4"] == runs["0"], "-j must change neither the outputs nor the report"
    assert sorted(runs["1"][2]) == sorted(f"{n}.pt2" for n in names)
    # And each output is what the single-file command writes.
    single = tmp_path / "single.pt2"
    for name in names:
        proc = run_exmode("eval", src / f"{name}.pt2", "-o", single)
        assert proc.returncode == 0, proc
        assert file_sha256(single) == runs["1"][2][f"{name}.pt2"], name


def test_quiet_keeps_errors_and_the_count(inputs, tmp_path):
    src, order = inputs
    out = tmp_path / "out"
    out.mkdir()
    proc = run_exmode("eval", *order, "-o", out, "-q")
    assert proc.returncode == IO_ERROR
    assert proc.stdout == f"{len(order)} files: 2 switched, 1 unchanged, 5 failed\n"
    assert len(proc.stderr.splitlines()) == len(BROKEN)
    assert len(_listing(out)) == len(GOOD)


@pytest.fixture
def aux_and_good(tmp_path):
    """An eval export whose switch to train warns (a training-only head), between two that do not."""
    torch.manual_seed(0)
    aux = models.AuxHead()
    aux_path = tmp_path / "aux_eval.pt2"
    export_and_save(aux, (torch.randn(4, 8),), "eval", aux_path)
    paths = [tmp_path / "conv_eval.pt2", aux_path, tmp_path / "mlp_eval.pt2"]
    for factory, path in ((models.conv_bn2d, paths[0]), (models.mlp_dropout, paths[2])):
        module, x = factory()
        export_and_save(module, (x,), "eval", path)
    return paths


def test_warnings_are_printed_under_their_file(aux_and_good, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = run_exmode("train", *aux_and_good, "-o", out, "-j", "3")
    assert proc.returncode == 0, proc
    lines = proc.stdout.splitlines()
    at = lines.index(f"{aux_and_good[1]}: eval -> train (1 change, 1 warning)")
    assert lines[at + 1].startswith("  warning: ") and "unused-state" in lines[at + 1], lines
    assert lines[at + 2].startswith(str(aux_and_good[2])), lines
    assert sum(line.startswith("  warning: ") for line in lines) == 1
    assert lines[-1] == "3 files: 3 switched, 0 unchanged, 0 failed"


def test_strict_applies_per_file(aux_and_good, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = run_exmode("train", *aux_and_good, "-o", out, "--strict", "-j", "2")
    assert proc.returncode == UNSUPPORTED, proc
    errors = proc.stderr.splitlines()
    assert errors[0].startswith(f"exmode: {aux_and_good[1]}: --strict: ") and "nothing written" in errors[0]
    assert len(errors) == 2 and errors[1].startswith("  warning: ") and "unused-state" in errors[1]
    assert _listing(out) == sorted([aux_and_good[0].name, aux_and_good[2].name])
    assert proc.stdout.splitlines()[-1] == "3 files: 2 switched, 0 unchanged, 1 failed"


# ---------------------------------------------------------------- usage errors write nothing


def _two_good(tmp_path, export_cache):
    a = tmp_path / "a.pt2"
    b = tmp_path / "b.pt2"
    shutil.copyfile(export_cache("conv_bn2d", "train"), a)
    shutil.copyfile(export_cache("mlp_dropout", "train"), b)
    return a, b


def _usage_cases(tmp_path, a, b):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(a, other / "a.pt2")  # the same name as a, another file
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.pt2").symlink_to(a)  # DIR/a.pt2 would replace... the input a itself
    return {
        "same-basename": ["eval", a, other / "a.pt2", "-o", tmp_path / "empty_dir"],
        "o-names-a-file": ["eval", a, b, "-o", tmp_path / "file.pt2"],
        "o-missing-dir": ["eval", a, b, "-o", tmp_path / "no_such_dir"],
        "o-missing-dir-one-input": ["eval", a, "-o", f"{tmp_path / 'no_such_dir'}/"],
        "output-is-input": ["eval", a, b, "-o", tmp_path],
        "output-links-to-input": ["eval", a, b, "-o", out],
        "same-input-twice-in-place": ["eval", a, b, tmp_path / "." / "a.pt2", "--in-place"],
        "same-input-twice-o": ["eval", a, a, "-o", tmp_path / "empty_dir"],
        "jobs-not-a-number": ["eval", a, b, "-o", tmp_path / "empty_dir", "-j", "many"],
    }


@pytest.mark.parametrize("case", ["same-basename", "o-names-a-file", "o-missing-dir", "o-missing-dir-one-input",
                                  "output-is-input", "output-links-to-input", "same-input-twice-in-place",
                                  "same-input-twice-o", "jobs-not-a-number"])
def test_usage_errors_write_nothing(case, tmp_path, export_cache):
    a, b = _two_good(tmp_path, export_cache)
    (tmp_path / "file.pt2").write_bytes(b"an existing file")
    (tmp_path / "empty_dir").mkdir()
    args = _usage_cases(tmp_path, a, b)[case]
    before = {p: (file_sha256(p) if p.is_file() else None) for p in tmp_path.rglob("*")}
    proc = run_exmode(*args)
    assert proc.returncode == USAGE, proc
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("exmode: "), proc.stderr
    assert proc.stdout == ""
    after = {p: (file_sha256(p) if p.is_file() else None) for p in tmp_path.rglob("*")}
    assert after == before, "a usage error must write nothing"


# ---------------------------------------------------------------- one input, -o DIR


def test_one_input_into_a_directory(tmp_path, export_cache):
    """With one input, -o DIR/ (a trailing slash) writes DIR/<name>; -o DIR, without it, still
    names the file to write, and an existing directory there is an I/O error, as it always was."""
    src = tmp_path / "model.pt2"
    shutil.copyfile(export_cache("conv_bn2d", "train"), src)
    out = tmp_path / "out"
    out.mkdir()
    refused = run_exmode("eval", src, "-o", out)
    assert refused.returncode == IO_ERROR and _listing(out) == [], refused
    proc = run_exmode("eval", src, "-o", f"{out}/")
    assert proc.returncode == 0, proc
    # The single-file report, unchanged: change lines and the program's summary.
    assert proc.stdout.splitlines()[-1].startswith("model: train -> eval (")
    assert _listing(out) == ["model.pt2"]
    plain = tmp_path / "plain.pt2"
    assert run_exmode("eval", src, "-o", plain).stdout == proc.stdout
    assert file_sha256(plain) == file_sha256(out / "model.pt2")
    _assert_matches_eager_eval(out / "model.pt2", "conv_bn2d")


def test_one_input_into_its_own_directory_is_refused(tmp_path, export_cache):
    src = tmp_path / "model.pt2"
    shutil.copyfile(export_cache("conv_bn2d", "train"), src)
    before = file_sha256(src)
    proc = run_exmode("eval", src, "-o", f"{tmp_path}/")
    assert proc.returncode == USAGE and "--in-place" in proc.stderr, proc
    assert file_sha256(src) == before and _listing(tmp_path) == ["model.pt2"]


# ---------------------------------------------------------------- the progress line


def test_no_progress_line_in_a_pipe(inputs, tmp_path):
    src, order = inputs
    out = tmp_path / "out"
    out.mkdir()
    proc = run_exmode("eval", *order, "-o", out)
    assert "\r" not in proc.stderr and "\033" not in proc.stderr and "[1/" not in proc.stderr


def _run_with_terminal_stderr(args, columns=1000, timeout=60):
    """Runs exmode with stderr on a pseudo-terminal `columns` wide; returns (status, stdout,
    terminal bytes)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen([str(exmode_path())] + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        assert ready, "exmode hung"
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every writer is gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    stdout = proc.stdout.read().decode()
    return proc.wait(timeout=timeout), stdout, seen


def test_progress_line_on_a_terminal(inputs, tmp_path):
    src, order = inputs
    out = tmp_path / "out"
    out.mkdir()
    status, stdout, seen = _run_with_terminal_stderr(["eval", *order, "-o", out, "-j", "2"])
    assert status == IO_ERROR
    text = seen.decode()
    assert f"\r\033[K[0/{len(order)}] {order[0]}" in text, repr(text)
    # Every line drawn is [k/N] and the k-th file (from 0): the one whose output is awaited
    # after k files were reported, k never going back.
    drawn = re.findall(r"\r\033\[K\[(\d+)/(\d+)\] ([^\r]*)", text)
    ks = [int(k) for k, _, _ in drawn]
    assert ks == sorted(ks) and all(int(n) == len(order) for _, n, _ in drawn), drawn
    assert all(name == str(order[int(k)]) for k, _, name in drawn), drawn
    # Whatever comes after the last one starts by clearing it.
    assert "\r\033[K" in text[text.rindex("\r\033[K[") + 4:], "the last line drawn is left on screen"
    # Each error line starts at the left margin (after the line was cleared, or after the
    # line before it), never after a progress line's text.
    for path in (p for p in order if p.name in BROKEN):
        at = text.index(f"exmode: {path}: ")
        assert text[:at].endswith(("\r\033[K", "\n")), (path, repr(text))
    assert "\r" not in stdout and _summary_lines(stdout)[-1].endswith("5 failed")
    # A narrow terminal: the line is cut so that it never wraps.
    status, _, seen = _run_with_terminal_stderr(["eval", *order, "-o", out], columns=30)
    drawn = re.findall(r"\r\033\[K(\[[^\r]*)", seen.decode())
    assert drawn and all(len(line) <= 29 for line in drawn), drawn
    # Quiet: no progress line even on a terminal.
    status, stdout, seen = _run_with_terminal_stderr(["eval", *order, "-o", out, "-q"])
    assert b"[0/" not in seen and b"\r\033[K" not in seen, seen


# ---------------------------------------------------------------- one file's crash stays its own


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def test_an_input_truncated_while_read_fails_alone(big, tmp_path, export_cache):
    """The SIGBUS guard ends the process that read a shrinking map: with many files that is
    the child of that one file. The files switched beside it, before and after it, come out
    complete and exact, and nothing of the failed one is left in DIR."""
    goods = [("conv_bn2d", "train"), ("mlp_dropout", "train"), ("bn_twice", "train")]
    for attempt in range(3):
        work = tmp_path / f"attempt{attempt}"
        work.mkdir()
        victim = work / "big.pt2"
        shutil.copyfile(big["src"], victim)
        paths = []
        for name, mode in goods:
            paths.append(work / _good_name(name, mode))
            shutil.copyfile(export_cache(name, mode), paths[-1])
        paths.insert(1, victim)
        out = work / "out"
        out.mkdir()
        real = os.path.realpath(victim)
        fd = os.open(victim, os.O_RDWR)
        try:
            proc = subprocess.Popen([str(exmode_path()), "eval", *map(str, paths), "-o", str(out), "-j", "2"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            truncated = False
            while proc.poll() is None and not truncated:
                for child in _children(proc.pid):
                    if _maps_input(child, real):
                        os.kill(child, signal.SIGSTOP)
                        os.ftruncate(fd, 1000)
                        truncated = True
                        os.kill(child, signal.SIGCONT)
                        break
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            os.close(fd)
        for name, mode in goods:
            _assert_matches_eager_eval(out / _good_name(name, mode), name)
        if not truncated or proc.returncode == 0:
            continue  # the child had read all it needed: try again
        assert proc.returncode == IO_ERROR, (proc.returncode, stderr)
        # A bus error in the map, or a short copy of the weights: one line naming the file.
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"exmode: {victim}: "), stderr
        assert _listing(out) == sorted(_good_name(n, m) for n, m in goods), "nothing of big.pt2 in DIR"
        assert stdout.splitlines()[-1] == "4 files: 3 switched, 0 unchanged, 1 failed", stdout
        return
    pytest.fail("the input was never truncated while exmode read it")


# ---------------------------------------------------------------- inspect


def test_inspect_many_files(inputs, tmp_path):
    src, order = inputs
    good = [p for p in order if p.name not in BROKEN]
    proc = run_exmode("inspect", *order)
    assert proc.returncode == IO_ERROR, proc
    sections = proc.stdout.split("==> ")[1:]
    assert [s.split(" <==\n", 1)[0] for s in sections] == [str(p) for p in good]
    for path, section in zip(good, sections):
        assert section.split(" <==\n", 1)[1] == run_exmode("inspect", path).stdout
    assert [line.split(": ")[1] for line in proc.stderr.splitlines()] == [
        str(p) for p in order if p.name in BROKEN]
    proc = run_exmode("inspect", *order, "--json")
    assert proc.returncode == IO_ERROR
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert docs == [json.loads(run_exmode("inspect", p, "--json").stdout) for p in good]
