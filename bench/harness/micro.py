"""Section 5: the Google Benchmark micro-benchmarks (exmode_micro_benchmarks).

Inputs: the shipped example, the ResNet-50 archive of the in-memory section and a
synthetic archive (10k nodes; 1k with --quick). Each benchmark runs --micro-repetitions
times for at least --micro-min-time seconds (the apply and switchMode ones run a fixed
iteration count, see bench/micro/pass_benchmarks.cc); the table gives the median, min and
max of the repetitions' time per iteration.
"""

import json
import statistics

from . import data, measure
from .measure import seconds_text
from .table import Table

SYNTHETIC_NODES = 10_000
QUICK_SYNTHETIC_NODES = 1_000
COUNTERS = ("nodes", "matches", "sites", "changes")


def run(ctx):
    if not ctx.micro.exists():
        raise SystemExit(f"bench: {ctx.micro} is missing: install libbenchmark-dev and rebuild")
    inputs = [ctx.root / "examples" / "resnetish_train.pt2",
              data.model_archive(ctx.cache, "resnet50"),
              data.synthetic_archive(ctx.cache,
                                     QUICK_SYNTHETIC_NODES if ctx.quick else SYNTHETIC_NODES)]
    result = data.scratch(ctx.cache) / "micro.json"
    cmd = [ctx.micro, f"--benchmark_min_time={ctx.micro_min_time}",
           f"--benchmark_repetitions={ctx.micro_repetitions}",
           "--benchmark_display_aggregates_only=true",
           f"--benchmark_out={result}", "--benchmark_out_format=json", *inputs]
    ctx.log("  " + " ".join(map(str, cmd)))
    r = measure.run(cmd, ctx.timeout * 20, capture_stdout=True)
    ctx.log(r.stdout)  # Google Benchmark's own console table
    if r.status != "ok":
        raise SystemExit(f"bench: exmode_micro_benchmarks {r.status}: {r.stderr}")
    runs = json.loads(result.read_text())
    result.unlink()

    by_name = {}
    for b in runs["benchmarks"]:
        if b.get("run_type") == "iteration":
            by_name.setdefault(b["run_name"], []).append(b)
    table = Table("Micro-benchmarks (Google Benchmark, time per iteration)",
                  ["benchmark", "time", "min–max", "throughput", "counters"])
    for name, reps in by_name.items():
        scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[reps[0]["time_unit"]]
        times = [b["real_time"] * scale for b in reps]
        rate = [b["bytes_per_second"] for b in reps if "bytes_per_second" in b]
        counters = ", ".join(f"{c}={reps[0][c]:.0f}" for c in COUNTERS if c in reps[0])
        table.add(name, seconds_text(statistics.median(times)),
                  f"{seconds_text(min(times))}–{seconds_text(max(times))}",
                  f"{statistics.median(rate) / 1e6:.0f} MB/s" if rate else "", counters)
    context = runs.get("context", {})
    table.note = (f"{ctx.micro_repetitions} repetition(s), --benchmark_min_time="
                  f"{ctx.micro_min_time}; library_build_type={context.get('library_build_type')} "
                  "(the Debian package reports the library's own build type).")
    ctx.tables.append(table)
