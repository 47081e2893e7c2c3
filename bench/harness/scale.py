"""Section 3: scale. `exmode eval IN -o OUT -q` (load, switch, save) on bench/make_synthetic.py
archives of growing node counts, as a subprocess, after one untimed warm-up of each size.

Beside it, in the same rounds, `exmode_bench_floor IN OUT`: what any file switch built the
way exmode's is must do (map, CRC, simdjson's index, a walk over the nodes, writing the
archive's bytes back), with no IR; its time is a floor under exmode's at each size.

A command that times out (--timeout) is recorded as "timeout" and not run again, and larger
sizes are then skipped: they would time out as well.
"""

from . import data, measure
from .measure import Series, mib, ratio, ratio_cell, ratio_text, seconds_text, stat_text
from .table import Table, verdict

SIZES = [10_000, 100_000, 1_000_000]
QUICK_SIZES = [1_000, 10_000]
LINEAR_SLACK = 1.1     # T(10n) / T(n) at most 1.1 x 10
LARGEST_SECONDS = 2.0  # 1M nodes in less than this


def size_text(n):
    for suffix, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{suffix}"
    return str(n)


def parse_sizes(text):
    """'10k,100k,1M' -> [10000, 100000, 1000000]."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1:], 1)
        out.append(int(float(part[:-1] if scale > 1 else part) * scale))
    return sorted(set(out))


def run(ctx):
    archives = {n: data.synthetic_archive(ctx.cache, n) for n in ctx.sizes}
    out = data.scratch(ctx.cache) / "scale_out.pt2"
    series = {n: Series() for n in ctx.sizes}
    floors = {n: Series() for n in ctx.sizes}

    def floor(n):
        data.remove(out)
        floors[n].add(measure.run([ctx.bench_floor, archives[n], out], ctx.timeout))

    def once(n):
        data.remove(out)
        r = measure.run([ctx.exmode, "eval", archives[n], "-o", out, "-q"], ctx.timeout)
        series[n].add(r)
        if r.status != "ok":
            ctx.log(f"  {size_text(n)}: {r.status} after {r.seconds:.1f} s {r.stderr}")
            for larger in ctx.sizes[ctx.sizes.index(n) + 1:]:
                if not series[larger].failed:
                    series[larger].status = "skipped"
        return r

    ctx.log("  warm-up")
    for n in ctx.sizes:
        if not series[n].failed:
            r = once(n)
            if r.status == "ok":
                series[n].samples.clear()  # the warm-up is not a sample
            floor(n)
            floors[n].samples.clear()
    for i in range(ctx.repeat):
        ctx.log(f"  round {i + 1}/{ctx.repeat}")
        for n in ctx.sizes:
            if not series[n].failed:
                once(n)
                floor(n)
    data.scratch(ctx.cache)

    table = Table("Scale: exmode eval IN -o OUT -q on synthetic archives",
                  ["nodes", "program JSON", "time", "MB/s of JSON", "peak RSS", "floor",
                   "time / floor"])
    json_sizes = {n: data.program_json_size(a) for n, a in archives.items()}
    for n in ctx.sizes:
        st, fl = series[n].stat, floors[n].stat
        table.add(size_text(n), data.size_text(json_sizes[n]), stat_text(st),
                  f"{json_sizes[n] / 1e6 / st.median:.1f}" if st.ok else "",
                  f"{mib(series[n].max_rss):.0f} MiB" if st.ok else "", stat_text(fl),
                  ratio_cell(st, fl))
        ctx.file_switches.append((f"scale: {size_text(n)} nodes", archives[n], series[n]))
    table.note = ("Medians (min–max) over the runs of one process each: map, parse, switch, "
                  "write, rename (no fsync, as for any `-o`). Page cache warm. floor: "
                  "`exmode_bench_floor` in the same rounds, the least any switch built like "
                  "exmode's must do: map, CRC-32 of the program, simdjson's index of it, a walk "
                  "reading every node's target, and copying the archive's bytes by the kernel "
                  "(copy_file_range, as exmode copies weights and a program's long unchanged "
                  "stretches); no IR, no switch.")
    ctx.tables.append(table)

    for small, large in zip(ctx.sizes, ctx.sizes[1:]):
        bound = LINEAR_SLACK * large / small
        a, b = series[large].stat, series[small].stat
        value, met = ratio_cell(a, b), verdict(ratio(a, b), lambda r: r <= bound)
        if a.status == "timeout" and b.ok:
            # The larger size ran for at least the timeout: a lower bound of the ratio.
            floor = ctx.timeout / b.median
            value, met = f"> {ratio_text(floor)} (timeout)", "no" if floor > bound else ""
        ctx.ratios.add("scale", f"time {size_text(large)} / {size_text(small)}", value,
                       f"<= {bound:.3g}x", met)
    if 1_000_000 in ctx.sizes:
        fl = floors[1_000_000].stat
        if fl.ok:
            ctx.ratios.add("scale", "1M nodes: floor (map, CRC, index, walk, write; no IR)",
                           seconds_text(fl.median), "", "")
        st = series[1_000_000].stat
        value, met = seconds_text(st.median) if st.ok else st.status, ""
        if st.ok:
            met = verdict(st.median, lambda t: t < LARGEST_SECONDS)
        elif st.status in ("timeout", "skipped") and ctx.timeout >= LARGEST_SECONDS:
            value, met = f"> {ctx.timeout:g} s ({st.status})", "no"
        ctx.ratios.add("scale", "1M nodes: load, switch, save", value,
                       f"< {LARGEST_SECONDS:g} s", met)
