"""Section 2: file to file on an archive with about 1 GB of weights.

Timed, alternating, after one untimed warm-up of each: `cp IN OUT`, `exmode eval IN -o OUT`
(neither syncs), `cp IN OUT && sync OUT` and `exmode eval IN -o OUT --sync` (both durable
when they return), and the route a user takes today without exmode (bench/torch_route.py: load, move_exported_model_to_eval,
re-export, save), which runs only --slow-repeat times. The page cache is not dropped; OUT is
removed and dirty pages are written back (os.sync) before each timed command, untimed.
"""

import os

from . import data, measure
from .measure import Series, mib, ratio, ratio_cell, stat_text
from .table import Table, verdict

MODEL = "linear16x4096"
QUICK_MODEL = "linear4x1024"
TARGET_VS_CP = 1.3  # exmode at most this many times cp


def commands(ctx, archive, out):
    return {
        "cp": ["cp", archive, out],
        "cp + fsync": ["sh", "-c", 'cp "$1" "$2" && sync "$2"', "sh", archive, out],
        "exmode eval": [ctx.exmode, "eval", archive, "-o", out],
        "exmode eval --sync": [ctx.exmode, "eval", archive, "-o", out, "--sync"],
        "torch route": [ctx.python, data.BENCH / "torch_route.py", archive, out],
    }


def timed(ctx, cmd, out):
    data.remove(out)
    os.sync()
    r = measure.run(cmd, ctx.timeout)
    if r.status != "ok":
        ctx.log(f"  {' '.join(r.cmd)}: {r.status} {r.stderr}")
    return r


def check_eval(ctx, out):
    """The exmode output must be in eval mode, or the timing measured something else."""
    r = measure.run([ctx.exmode, "inspect", out], ctx.timeout, capture_stdout=True)
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr
    if r.status != "ok" or "mode eval" not in last:
        raise SystemExit(f"bench: exmode eval did not produce an eval archive: {last}")


def run(ctx):
    archive = data.model_archive(ctx.cache, QUICK_MODEL if ctx.quick else MODEL)
    out = data.scratch(ctx.cache) / "file_out.pt2"
    cmds = commands(ctx, archive, out)
    size = archive.stat().st_size
    ctx.log(f"  {archive.name}: {size / 1e9:.2f} GB; warm-up")
    series = {name: Series() for name in cmds}
    for name, cmd in cmds.items():
        r = timed(ctx, cmd, out)
        if r.status != "ok":
            series[name].add(r)  # a command that fails or times out is not run again
        elif name == "exmode eval":
            check_eval(ctx, out)
    names = list(cmds)
    for i in range(ctx.repeat):
        ctx.log(f"  round {i + 1}/{ctx.repeat}")
        # Rotate the order each round so no command always follows the same one.
        for name in names[i % len(names):] + names[:i % len(names)]:
            if series[name].failed or (name == "torch route" and i >= ctx.slow_repeat):
                continue
            series[name].add(timed(ctx, cmds[name], out))
    data.scratch(ctx.cache)  # also what a killed command left

    json_size = data.program_json_size(archive)
    ctx.file_switches.append((f"file: {archive.name}", archive, series["exmode eval"]))
    cp = series["cp"].stat
    table = Table(f"File to file: {archive.name} ({size / 1e9:.2f} GB, "
                  f"program JSON {json_size / 1e3:.0f} kB)",
                  ["command", "runs", "time", "MB/s", "peak RSS", "vs cp"])
    for name, s in series.items():
        st = s.stat
        table.add(name, st.n, stat_text(st), f"{size / 1e6 / st.median:.0f}" if st.ok else "",
                  f"{mib(s.max_rss):.0f} MiB" if st.ok else "",
                  ratio_cell(st, cp) if st.ok else "")
    table.note = ("Medians (min–max) over the runs; MB/s of archive size. The page cache is warm "
                  "(each command ran once before timing). `exmode eval -o` does not fsync, like cp "
                  "and torch.export.save; `--sync` (and `--in-place`, always) fsyncs the file "
                  "before renaming it into place, to be compared with `cp + fsync`.")
    ctx.tables.append(table)

    ours = series["exmode eval"].stat
    ctx.ratios.add("file", f"exmode eval / cp ({archive.name})", ratio_cell(ours, cp),
                   f"<= {TARGET_VS_CP}x", verdict(ratio(ours, cp), lambda r: r <= TARGET_VS_CP))
    ctx.ratios.add("file", "exmode eval --sync / (cp + fsync)",
                   ratio_cell(series["exmode eval --sync"].stat, series["cp + fsync"].stat), "", "")
    ctx.ratios.add("file", "torch route / exmode eval",
                   ratio_cell(series["torch route"].stat, ours), "", "")
