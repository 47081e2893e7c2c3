"""Section 4: peak RSS of each exmode file switch (os.wait4's ru_maxrss of the child),
against the limit 64 MiB + 4 x (size of models/model.json in the archive).

Uses the runs of the file and scale sections when they ran in the same run; for those that
did not, runs `exmode eval IN -o OUT -q` on their archives --slow-repeat times itself.
"""

from . import data, file_to_file, measure, scale
from .measure import Series, mib
from .table import Table, verdict

BASE = 64 << 20
PER_JSON_BYTE = 4


def limit(json_size):
    return BASE + PER_JSON_BYTE * json_size


def measure_alone(ctx):
    """Runs the switches of the file and scale sections that did not run in this run."""
    archives = []
    if "file" not in ctx.done:
        a = data.model_archive(ctx.cache, file_to_file.QUICK_MODEL if ctx.quick
                               else file_to_file.MODEL)
        archives.append((f"file: {a.name}", a))
    if "scale" not in ctx.done:
        archives += [(f"scale: {scale.size_text(n)} nodes", data.synthetic_archive(ctx.cache, n))
                     for n in ctx.sizes]
    out = data.scratch(ctx.cache) / "memory_out.pt2"
    timed_out = False  # scale archives come in growing sizes: skip those after a timeout
    for label, archive in archives:
        s = Series()
        if timed_out and label.startswith("scale"):
            s.status = "skipped"
        for _ in range(ctx.slow_repeat):
            if s.failed:
                break
            data.remove(out)
            ctx.log(f"  {label}")
            s.add(measure.run([ctx.exmode, "eval", archive, "-o", out, "-q"], ctx.timeout))
        timed_out = timed_out or (s.status == "timeout" and label.startswith("scale"))
        ctx.file_switches.append((label, archive, s))
    data.scratch(ctx.cache)


def run(ctx):
    measure_alone(ctx)
    table = Table("Memory: peak RSS of exmode file switches",
                  ["switch", "program JSON", "peak RSS", "limit", "RSS / limit"])
    for label, archive, s in ctx.file_switches:
        json_size = data.program_json_size(archive)
        cap = limit(json_size)
        ok = not s.failed and s.samples
        table.add(label, data.size_text(json_size), f"{mib(s.max_rss):.0f} MiB" if ok else s.status,
                  f"{mib(cap):.0f} MiB", f"{s.max_rss / cap:.2f}" if ok else "")
        ctx.ratios.add("memory", f"peak RSS / limit ({label})",
                       f"{s.max_rss / cap:.2f}" if ok else s.stat.status, "<= 1",
                       verdict(s.max_rss / cap if ok else None, lambda r: r <= 1))
    table.note = ("Peak RSS: the largest ru_maxrss over the runs (it counts the pages of the "
                  "mapped input that were touched). Limit: 64 MiB + 4 x program JSON size.")
    ctx.tables.append(table)
