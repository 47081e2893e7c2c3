"""Hostile surroundings rather than hostile bytes.

Inputs that are not regular files (a FIFO, /dev/null, /dev/zero, a directory) are refused
at once with exit 6 and one line naming the file; a FIFO without a writer must not block.

An input truncated by another process while exmode reads it ends with exit 6, one line
naming the file, no output and no temporary file, or, when exmode had already read all it
needed, with the complete output. The race is made deterministic: the test watches for the
moment exmode holds the input (its map in /proc/<pid>/maps, or its temporary output file in
the target's folder), stops exmode there with SIGSTOP, truncates the input and lets exmode
go on, so the truncation always lands inside the phase each case aims at."""

import json
import os
import shutil
import signal
import subprocess
import time
import zipfile

import pytest
import torch

from conftest import archive_records, exmode_path, read_program, repack, run_exmode

IO_ERROR = 6
SOURCE = ("conv_bn2d", "train")
WEIGHT_BYTES = 64 << 20  # a weight record copied by the kernel before the program
PADDING_BYTES = 8 << 20  # text kept verbatim per node, so the program takes a while to read
ATTEMPTS = 3
NOT_REGULAR = "not a regular file"
CHANGED = "changed or truncated while being read"


def _temp_files(directory):
    return sorted(p.name for p in directory.iterdir() if ".exmode-" in p.name)


def _assert_one_line(proc, path, expected):
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("exmode: "), repr(proc.stderr)
    assert str(path) in lines[0] and expected in lines[0], lines[0]


# ---------------------------------------------------------------- not regular files


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "model.pt2"
    os.mkfifo(path)
    return path


def _commands(path, tmp_path):
    out = tmp_path / "out.pt2"
    return [("inspect", path), ("inspect", path, "--json"), ("eval", path, "-o", out),
            ("train", path, "-o", out), ("eval", path, "--in-place"), ("train", path, "--in-place")]


def _assert_refused(path, tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in _commands(path, tmp_path):
        start = time.monotonic()
        proc = run_exmode(*args, timeout=20)
        assert time.monotonic() - start < 10, f"exmode {args} took too long"
        assert proc.returncode == IO_ERROR, (args, proc.returncode, proc.stderr)
        _assert_one_line(proc, path, NOT_REGULAR)
        assert proc.stdout == "", (args, proc.stdout)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, args


def test_a_fifo_without_a_writer_is_refused_at_once(fifo, tmp_path):
    _assert_refused(fifo, tmp_path)
    assert fifo.is_fifo()


def test_a_symlink_to_a_fifo_is_refused_at_once(fifo, tmp_path):
    link = tmp_path / "link.pt2"
    link.symlink_to(fifo)
    _assert_refused(link, tmp_path)


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_a_character_device_is_refused(device, tmp_path):
    # Refused before anything is written: --in-place cannot touch the device.
    _assert_refused(device, tmp_path)


def test_a_directory_is_refused(tmp_path):
    directory = tmp_path / "model.pt2"
    directory.mkdir()
    _assert_refused(directory, tmp_path)


def test_a_symlink_to_a_regular_file_still_works(export_cache, tmp_path):
    target = tmp_path / "real.pt2"
    shutil.copyfile(export_cache(*SOURCE), target)
    link = tmp_path / "link.pt2"
    link.symlink_to(target)
    proc = run_exmode("inspect", link)
    assert proc.returncode == 0, proc.stderr
    assert "mode train" in proc.stdout
    proc = run_exmode("eval", link, "-o", tmp_path / "out.pt2")
    assert proc.returncode == 0, proc.stderr
    assert "mode eval" in run_exmode("inspect", tmp_path / "out.pt2").stdout
    proc = run_exmode("eval", link, "--in-place")
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and "mode eval" in run_exmode("inspect", target).stdout


# ---------------------------------------------------------------- truncated while read


@pytest.fixture(scope="module")
def big(tmp_path_factory, export_cache):
    """A real archive with a large weight record first (as torch writes weights first) and
    a program padded with long stack traces, and what uninterrupted runs write for it."""
    root = tmp_path_factory.mktemp("hostile")
    small = export_cache(*SOURCE)
    program = read_program(small)
    for node in program["graph_module"]["graph"]["nodes"]:
        node.setdefault("metadata", {})["stack_trace"] = "x" * PADDING_BYTES
    padded = repack(small, root / "padded.pt2",
                    modify={"models/model.json": json.dumps(program).encode()})
    src = root / "big.pt2"
    writer = torch._C.PyTorchFileWriter(str(src))
    writer.set_min_version(6)
    payload = bytes(range(256)) * (WEIGHT_BYTES // 256)
    writer.write_record("data/weights/dummy_big", payload, len(payload))
    del payload
    for name, data in archive_records(padded).items():
        if name not in (".data/version", ".data/serialization_id"):
            writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    expected = {}
    for mode in ("eval", "train"):
        expected[mode] = root / f"expected_{mode}.pt2"
        proc = run_exmode(mode, src, "-o", expected[mode], "-q", timeout=120)
        assert proc.returncode == 0, proc.stderr
        with zipfile.ZipFile(expected[mode]) as z:
            assert z.testzip() is None
    inspected = run_exmode("inspect", src, timeout=120)
    assert inspected.returncode == 0, inspected.stderr
    return {"src": src, "expected": expected, "inspect": inspected.stdout}


def _maps_input(pid, real_path):
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return any(line.rstrip("\n").endswith(" " + real_path) for line in maps)
    except (FileNotFoundError, ProcessLookupError):
        return False


def _run_truncating(args, victim, ready):
    """Runs exmode with `args`; once `ready(pid)` holds, stops it, truncates `victim` (through
    a descriptor opened first, so a renamed-over path is never the one truncated) and lets it
    go on. Returns (CompletedProcess-like tuple, whether the truncation happened)."""
    fd = os.open(victim, os.O_RDWR)
    try:
        proc = subprocess.Popen([str(exmode_path())] + [str(a) for a in args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        truncated = False
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if ready(proc.pid):
                proc.send_signal(signal.SIGSTOP)
                os.ftruncate(fd, 1000)
                truncated = True
                proc.send_signal(signal.SIGCONT)
                break
        stdout, stderr = proc.communicate(timeout=120)
        return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr), truncated
    finally:
        os.close(fd)


def _same_bytes(a, b):
    return a.read_bytes() == b.read_bytes()


def _largest_temp_file(directory):
    sizes = []
    for name in _temp_files(directory):
        try:
            sizes.append((directory / name).stat().st_size)
        except FileNotFoundError:
            pass
    return max(sizes, default=-1)


# Where the truncation lands: "map", while the programs are read from the map (a bus error,
# before any output exists); "temp", as the output is created, while the weights are copied
# by the kernel (a short copy); "program", once the weights are out, while the new program
# is written from the map (a bus error with a temporary file to remove).
CASES = {
    "inspect-reading": ("inspect", "map"),
    "eval-reading": ("eval", "map"),
    "eval-copying": ("eval", "temp"),
    "train-copying": ("train", "temp"),
    "eval-writing": ("eval", "program"),
    "eval-in-place-reading": ("eval-in-place", "map"),
    "eval-in-place-copying": ("eval-in-place", "temp"),
    "eval-in-place-writing": ("eval-in-place", "program"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_input_truncated_while_read_is_an_io_error(big, tmp_path, case):
    command, phase = CASES[case]
    hits = 0
    for attempt in range(ATTEMPTS):
        work = tmp_path / f"attempt{attempt}"
        work.mkdir()
        src = work / "in.pt2"
        shutil.copyfile(big["src"], src)
        inode = src.stat().st_ino
        out = work / "out.pt2"
        if command == "inspect":
            args = ["inspect", src]
        elif command == "eval-in-place":
            args = ["eval", src, "--in-place", "-q"]
        else:
            args = [command, src, "-o", out, "-q"]
        real = os.path.realpath(src)
        if phase == "map":
            def ready(pid):
                return _maps_input(pid, real)
        elif phase == "temp":
            def ready(pid):
                return bool(_temp_files(work))
        else:
            def ready(pid):
                return _largest_temp_file(work) >= WEIGHT_BYTES
        proc, truncated = _run_truncating(args, src, ready)
        context = f"{case}, attempt {attempt}: exit {proc.returncode}, stderr {proc.stderr!r}"
        assert truncated, f"{context}: exmode finished before the input was truncated"
        assert _temp_files(work) == [], f"{context}: temporary file left"
        if proc.returncode == 0:
            # exmode had read everything before the truncation: its output is complete.
            if command == "inspect":
                assert proc.stdout == big["inspect"], context
            elif command == "eval-in-place":
                assert src.stat().st_ino != inode and _same_bytes(src, big["expected"]["eval"]), context
            else:
                assert _same_bytes(out, big["expected"][command]), context
            continue
        assert proc.returncode == IO_ERROR, context
        _assert_one_line(proc, src, CHANGED)
        hits += 1
        assert not out.exists(), f"{context}: output written"
        assert src.stat().st_ino == inode, f"{context}: the input was replaced"
        assert sorted(p.name for p in work.iterdir()) == ["in.pt2"], context
    assert hits > 0, f"{case}: no attempt saw the truncation"
