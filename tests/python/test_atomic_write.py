"""Atomic writes: `exmode eval IN -o OUT` and `exmode eval IN --in-place` killed with SIGKILL
at moments spread over the write of a 256 MiB archive leave OUT absent or complete (the
very bytes an uninterrupted run writes), and IN either as it was or as the switch writes
it, never anything in between. Failures other than SIGKILL (the target is a directory, the
file size limit or the file system is full) leave no temporary file behind.

A SIGKILL cannot be cleaned up after: it may leave the temporary file
(`.<name>.exmode-XXXXXX`, beside the target) behind; docs/SECURITY.md says so. These tests
remove them after each kill."""

import os
import random
import resource
import shutil
import signal
import subprocess
import time
import zipfile

import pytest
import torch

from conftest import archive_records, exmode_path, file_sha256, run_exmode

SOURCE = ("conv_bn2d", "train")
BIG = 256 << 20  # bytes of the dummy weight record
KILLS_OUT = 40
KILLS_IN_PLACE = 30
IO_ERROR = 6


def _temp_files(directory):
    return sorted(p.name for p in directory.iterdir() if ".exmode-" in p.name)


def _same_bytes(a, b, chunk=16 << 20):
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True


@pytest.fixture(scope="module")
def big(tmp_path_factory, export_cache):
    """A real archive with a 256 MiB stored dummy weight record first (as torch writes
    weights first), and what an uninterrupted `exmode eval` writes for it."""
    root = tmp_path_factory.mktemp("atomic")
    src = root / "big.pt2"
    records = archive_records(export_cache(*SOURCE))
    writer = torch._C.PyTorchFileWriter(str(src))
    writer.set_min_version(6)
    payload = bytes(range(256)) * (BIG // 256)
    writer.write_record("data/weights/dummy_big", payload, len(payload))
    for name, data in records.items():
        if name not in (".data/version", ".data/serialization_id"):
            writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    del payload

    expected = root / "expected_eval.pt2"
    proc = run_exmode("eval", src, "-o", expected, "-q", timeout=120)
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(expected) as z:
        assert z.testzip() is None
    assert run_exmode("inspect", expected).returncode == 0
    torch.export.load(str(expected))
    # How long an uninterrupted run takes: the kills are spread over it.
    durations = []
    for _ in range(3):
        out = root / "timing.pt2"
        start = time.monotonic()
        assert run_exmode("eval", src, "-o", out, "-q", timeout=120).returncode == 0
        durations.append(time.monotonic() - start)
        out.unlink()
    return {"src": src, "expected": expected, "seconds": sorted(durations)[1]}


def _kill_at(args, delay):
    """Starts exmode with `args`, SIGKILLs it after `delay` seconds; returns its status."""
    proc = subprocess.Popen([str(exmode_path())] + [str(a) for a in args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def _delays(count, seconds, rng):
    """One random moment in each of `count` equal slices of 1.2 times the run's duration."""
    span = 1.2 * seconds
    return [(i + rng.random()) * span / count for i in range(count)]


def test_sigkill_never_leaves_a_partial_output(big, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    src_hash = file_sha256(big["src"])
    out = tmp_path / "out.pt2"
    outcomes = {"absent": 0, "complete": 0, "temp_left": 0}
    for delay in _delays(KILLS_OUT, big["seconds"], rng):
        status, stderr = _kill_at(["eval", big["src"], "-o", out, "-q"], delay)
        context = f"(seed {seed}, kill after {delay:.3f} s of a {big['seconds']:.3f} s run, exit {status})"
        assert status in (0, -signal.SIGKILL), f"{context}: {stderr}"
        if out.exists():
            assert _same_bytes(out, big["expected"]), f"{context}: OUT exists but is not the complete archive"
            outcomes["complete"] += 1
            out.unlink()
        else:
            assert status != 0, f"{context}: exit 0 without OUT"
            outcomes["absent"] += 1
        temps = _temp_files(tmp_path)
        assert all(t.startswith(".out.pt2.exmode-") for t in temps), temps
        if temps:
            assert status != 0, f"{context}: a finished run left {temps}"
            outcomes["temp_left"] += 1
            for t in temps:
                (tmp_path / t).unlink()
    assert file_sha256(big["src"]) == src_hash, "the input changed"
    # The kills must have hit the write itself, not only before or after it.
    assert outcomes["temp_left"] > 0, f"no kill landed during the write (seed {seed}): {outcomes}"


def test_sigkill_in_place_leaves_old_or_new_archive(big, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    target = tmp_path / "model.pt2"
    outcomes = {"old": 0, "new": 0, "temp_left": 0}
    for delay in _delays(KILLS_IN_PLACE, big["seconds"], rng):
        shutil.copyfile(big["src"], target)
        status, stderr = _kill_at(["eval", target, "--in-place", "-q"], delay)
        context = f"(seed {seed}, kill after {delay:.3f} s of a {big['seconds']:.3f} s run, exit {status})"
        assert status in (0, -signal.SIGKILL), f"{context}: {stderr}"
        if _same_bytes(target, big["expected"]):
            outcomes["new"] += 1
        else:
            assert _same_bytes(target, big["src"]), f"{context}: IN is neither the old nor the new archive"
            assert status != 0, f"{context}: exit 0 but IN unchanged"
            outcomes["old"] += 1
        temps = _temp_files(tmp_path)
        assert all(t.startswith(".model.pt2.exmode-") for t in temps), temps
        if temps:
            assert status != 0, f"{context}: a finished run left {temps}"
            outcomes["temp_left"] += 1
            for t in temps:
                (tmp_path / t).unlink()
    assert outcomes["temp_left"] > 0, f"no kill landed during the write (seed {seed}): {outcomes}"


# ---------------------------------------------------------------- failures that are not SIGKILL


def _assert_io_error(proc, *names):
    assert proc.returncode == IO_ERROR, f"exit {proc.returncode}: {proc.stderr}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert any(n in lines[0] for n in names), lines[0]


def test_target_is_a_directory(export_cache, tmp_path):
    """The rename fails after the whole archive was written: the temporary file goes."""
    src = tmp_path / "in.pt2"
    shutil.copyfile(export_cache(*SOURCE), src)
    target = tmp_path / "out.pt2"
    target.mkdir()
    (target / "kept").write_text("x")
    proc = run_exmode("eval", src, "-o", target)
    _assert_io_error(proc, "out.pt2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pt2", "out.pt2"]
    assert [p.name for p in target.iterdir()] == ["kept"]


def _run_with_file_size_limit(args, limit):
    """exmode with RLIMIT_FSIZE set and SIGXFSZ ignored, so writes past `limit` fail with
    EFBIG, as writes to a full disk fail with ENOSPC."""
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([str(exmode_path())] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=120, preexec_fn=limit_file_size)


@pytest.mark.parametrize("mode", ["-o", "--in-place"])
def test_write_fails_midway(mode, big, tmp_path):
    src = tmp_path / "in.pt2"
    shutil.copyfile(big["src"], src)
    before = file_sha256(src)
    out = tmp_path / "out.pt2"
    args = ["eval", src, "-o", out] if mode == "-o" else ["eval", src, "--in-place"]
    proc = _run_with_file_size_limit(args, 1 << 20)
    _assert_io_error(proc, "in.pt2", "out.pt2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pt2"], "temporary file left behind"
    assert file_sha256(src) == before


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs, where mounting one is permitted."""
    mount_point = tmp_path / "full"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_disk_full(big, small_tmpfs):
    out = small_tmpfs / "out.pt2"
    proc = run_exmode("eval", big["src"], "-o", out, timeout=120)
    _assert_io_error(proc, "out.pt2")
    assert list(small_tmpfs.iterdir()) == [], "temporary file left behind"
