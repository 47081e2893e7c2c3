"""Running child processes with a timeout, their wall time and peak RSS, and statistics."""

import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Run:
    """One child process: wall time (s), peak RSS (bytes), how it ended."""
    cmd: list
    seconds: float
    max_rss: int
    status: str          # "ok", "timeout" or "failed"
    returncode: int
    stderr: str = ""     # the last lines, when it failed
    stdout: str = ""     # when captured


def run(cmd, timeout, capture_stdout=False):
    """Runs `cmd` in its own session; after `timeout` seconds kills its process group.

    Wall time is measured with time.perf_counter around start and reaping; peak RSS comes
    from os.wait4's rusage (ru_maxrss, KiB on Linux) of that child alone.
    """
    cmd = [str(c) for c in cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        timed_out = threading.Event()
        reaped = threading.Event()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                stdout=out if capture_stdout else subprocess.DEVNULL, stderr=err,
                                start_new_session=True)

        def kill():
            if not reaped.is_set():
                timed_out.set()
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            reaped.set()
            if timer:
                timer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        stdout = ""
        if capture_stdout:
            out.seek(0)
            stdout = out.read().decode(errors="replace")
    state = "timeout" if timed_out.is_set() else ("ok" if proc.returncode == 0 else "failed")
    tail = "\n".join(stderr.strip().splitlines()[-5:]) if state != "ok" else ""
    return Run(cmd, seconds, usage.ru_maxrss * 1024, state, proc.returncode, tail, stdout)


@dataclass
class Stat:
    """Median, min and max of repeated measurements (seconds), or why there are none."""
    median: float = 0.0
    min: float = 0.0
    max: float = 0.0
    n: int = 0
    status: str = "ok"  # "ok", "timeout", "failed", "skipped"

    @property
    def ok(self):
        return self.status == "ok" and self.n > 0

    @staticmethod
    def of(samples):
        return Stat(statistics.median(samples), min(samples), max(samples), len(samples))

    @staticmethod
    def of_ns(summary):
        """From a {"median_ns", "min_ns", "max_ns", "samples"} summary printed by a tool."""
        return Stat(summary["median_ns"] * 1e-9, summary["min_ns"] * 1e-9,
                    summary["max_ns"] * 1e-9, summary["samples"])


@dataclass
class Series:
    """Repeated runs of one command; stops counting at the first run that did not succeed."""
    samples: list = field(default_factory=list)
    max_rss: int = 0
    status: str = "ok"
    error: str = ""

    def add(self, r):
        if self.status != "ok":
            return
        if r.status != "ok":
            self.status, self.error = r.status, r.stderr
            return
        self.samples.append(r.seconds)
        self.max_rss = max(self.max_rss, r.max_rss)

    @property
    def failed(self):
        return self.status != "ok"

    @property
    def stat(self):
        if self.status != "ok" or not self.samples:
            return Stat(status=self.status if self.status != "ok" else "skipped")
        return Stat.of(self.samples)


def seconds_text(t):
    """0.000012 -> '12.0 µs', 0.0345 -> '34.5 ms', 12.3 -> '12.3 s'."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if t >= scale:
            return f"{t / scale:.3g} {unit}" if t / scale < 100 else f"{t / scale:.0f} {unit}"
    return f"{t * 1e9:.0f} ns"


def stat_text(s):
    """'median (min–max)', or the status when there is no measurement."""
    if not s.ok:
        return s.status
    return f"{seconds_text(s.median)} ({seconds_text(s.min)}–{seconds_text(s.max)})"


def ratio_text(r):
    if r >= 100:
        return f"{r:,.0f}x"
    return f"{r:.3g}x"


def mib(n):
    return n / (1 << 20)


def ratio(a, b):
    """a.median / b.median, or None when either has no measurement."""
    return a.median / b.median if a.ok and b.ok and b.median > 0 else None


def ratio_cell(a, b):
    """The ratio as text, or the status of the side that has no measurement."""
    r = ratio(a, b)
    if r is not None:
        return ratio_text(r)
    return a.status if not a.ok else b.status
