"""exmode benchmarks: runs the sections and prints a table of ratios.

    python3 bench/bench.py [--quick] [--only SECTION ...] [--repeat N] [--markdown FILE]

Usually run through bench/run.sh, which installs what is needed and builds first.
Sections, in the order they run:
  inmemory  exmode's in-memory switch vs torchao's move_exported_model_to_eval/train
  fxmodule  exmode.torch on ep.module() (first switch, toggles, no-op) vs torchao
  file      file to file on ~1 GB of weights: cp, exmode eval, the torch route
  scale     exmode eval on synthetic archives of 10k, 100k, 1M nodes
  memory    peak RSS of the exmode file switches vs 64 MiB + 4 x program JSON
  micro     Google Benchmark micro-benchmarks (parse, emit, match, each mode pass)
Generated data goes to --cache-dir (bench/.data) and is regenerated only when missing.
"""

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import file_to_file, fxmodule, inmemory, memory, micro, scale  # noqa: E402
from harness.context import Context  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {"inmemory": inmemory, "fxmodule": fxmodule, "file": file_to_file, "scale": scale, "memory": memory,
            "micro": micro}
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats: a smoke run")
    parser.add_argument("--only", action="append", metavar="SECTION",
                        help=f"run only this section (repeatable, or comma-separated): "
                             f"{', '.join(SECTIONS)}")
    parser.add_argument("--repeat", type=int,
                        help="timed runs of each command (default 10, --quick 3)")
    parser.add_argument("--slow-repeat", type=int,
                        help="timed runs of the torch route of the file section, and of the "
                             "memory section's own runs (default 3, --quick 1)")
    parser.add_argument("--switch-repeat", type=int,
                        help="timed eval/train pairs of exmode's in-memory switch "
                             "(default 200, --quick 20)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds per timed command before it is killed and recorded as "
                             "'timeout' (default 120)")
    parser.add_argument("--sizes", help="node counts of the scale section "
                                        "(default 10k,100k,1M; --quick 1k,10k)")
    parser.add_argument("--micro-min-time", type=float,
                        help="--benchmark_min_time of the micro-benchmarks "
                             "(default 0.05, --quick 0.01)")
    parser.add_argument("--micro-repetitions", type=int,
                        help="--benchmark_repetitions of the micro-benchmarks "
                             "(default 3, --quick 1)")
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="also write the tables as markdown to FILE; when FILE has the "
                             f"lines {BEGIN} and {END}, only what is between them is replaced")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "bench" / ".data",
                        help="generated archives (default bench/.data)")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build",
                        help="the CMake build with exmode and the bench binaries (default build)")
    args = parser.parse_args(argv)

    only = [s.strip() for group in (args.only or []) for s in group.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {', '.join(unknown)}; sections: {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if not only or s in only]
    quick = args.quick
    defaults = {"repeat": (10, 3), "slow_repeat": (3, 1), "switch_repeat": (200, 20),
                "micro_min_time": (0.05, 0.01), "micro_repetitions": (3, 1)}
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    for name in ("repeat", "slow_repeat", "switch_repeat", "micro_repetitions"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        args.sizes = scale.parse_sizes(args.sizes) if args.sizes else (
            scale.QUICK_SIZES if quick else scale.SIZES)
    except ValueError:
        parser.error(f"bad --sizes {args.sizes!r}: expected e.g. 10k,100k,1M")
    return args


def command_output(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine(cache):
    """Facts about this machine and build, as (name, value) pairs."""
    lscpu = command_output(["lscpu"])
    field = lambda key: next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                              if line.startswith(key + ":")), "?")
    versions = command_output([sys.executable, "-c",
                               "import importlib.metadata as m; "
                               "print(m.version('torch'), m.version('torchao'))"]).split()
    return [
        ("CPU", f"{field('Model name')}, {os.cpu_count()} logical CPUs"),
        ("memory", f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"),
        ("kernel", platform.release()),
        ("data dir filesystem", command_output(["findmnt", "-n", "-o", "FSTYPE", "-T", str(cache)])
         or command_output(["stat", "-f", "-c", "%T", str(cache)]) or "?"),
        ("python", platform.python_version()),
        ("torch / torchao", " / ".join(versions) if len(versions) == 2 else "?"),
        ("exmode commit", command_output(["git", "-C", str(ROOT), "describe", "--always",
                                          "--dirty"])),
    ]


def markdown(args, ctx, facts, started, seconds):
    launcher = os.environ.get("EXMODE_BENCH_COMMAND", "python3 bench/bench.py")
    command = " ".join([launcher] + [a for a in sys.argv[1:] if a != "--build-dir=build"])
    lines = [f"Generated by `{command.strip()}` on {started:%Y-%m-%d %H:%M} UTC "
             f"in {seconds / 60:.1f} min.", ""]
    lines += ["| machine | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts]
    for table in [ctx.ratios] + ctx.tables:
        lines += ["", table.markdown()]
    return "\n".join(lines) + "\n"


def write_markdown(path, text):
    if path.exists():
        old = path.read_text()
        m = re.search(re.escape(BEGIN) + r"\n.*?" + re.escape(END), old, re.S)
        if m:
            path.write_text(old[:m.start()] + f"{BEGIN}\n{text}{END}" + old[m.end():])
            return
    path.write_text(text)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    build = args.build_dir.resolve()
    ctx = Context(root=ROOT, cache=args.cache_dir.resolve(), exmode=build / "exmode",
                  bench_switch=build / "bench" / "exmode_bench_switch",
                  bench_floor=build / "bench" / "exmode_bench_floor",
                  micro=build / "bench" / "exmode_micro_benchmarks", quick=args.quick,
                  repeat=args.repeat, slow_repeat=args.slow_repeat,
                  switch_repeat=args.switch_repeat, timeout=args.timeout, sizes=args.sizes,
                  micro_min_time=args.micro_min_time, micro_repetitions=args.micro_repetitions)
    for binary in (ctx.exmode, ctx.bench_switch, ctx.bench_floor):
        if not binary.exists():
            raise SystemExit(f"bench: {binary} is missing: build first (bench/run.sh does)")
    ctx.cache.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    start = time.perf_counter()
    for name in args.sections:
        ctx.log(f"== {name}")
        section_start = time.perf_counter()
        SECTIONS[name].run(ctx)
        ctx.done.add(name)
        ctx.log(f"   {name} took {time.perf_counter() - section_start:.0f} s")
    seconds = time.perf_counter() - start

    facts = machine(ctx.cache)
    print("\n".join(f"{k}: {v}" for k, v in facts))
    for table in [ctx.ratios] + ctx.tables:
        print()
        print(table.text())
    if args.markdown:
        write_markdown(args.markdown, markdown(args, ctx, facts, started, seconds))
        ctx.log(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
