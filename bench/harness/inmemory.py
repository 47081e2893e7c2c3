"""Section 1: exmode's in-memory switch against torchao's move_exported_model_to_eval/train.

Both sides load the archive once and then switch the loaded program alternately to eval and
to train, timing each call: exmode_bench_switch (Model::open, then eval()/train()) and
bench/torch_switch.py (torch.export.load(...).module(), then the torchao functions).
"""

import json

from . import data, measure
from .measure import Stat, ratio, ratio_cell, stat_text
from .table import Table, verdict

TARGET = 10_000  # exmode at least this many times faster
MODELS = ["resnet50", "transformer24", "wide1000"]
QUICK_MODELS = ["resnet50", "transformer24", "wide100"]
WARMUP = 1  # untimed eval/train pairs before timing, on both sides


def _tool(ctx, cmd, pairs):
    # Every call of the tool runs `pairs` eval/train pairs; allow the per-command timeout for each.
    r = measure.run(cmd, timeout=ctx.timeout * (pairs + 1), capture_stdout=True)
    if r.status != "ok":
        ctx.log(f"  {' '.join(r.cmd)}: {r.status}\n{r.stderr}")
        return None
    return json.loads(r.stdout)


def run(ctx):
    table = Table("In-memory switch: exmode vs torchao (per call)",
                  ["model", "nodes", "sites", "direction", "exmode", "torchao", "torchao/exmode"])
    for name in QUICK_MODELS if ctx.quick else MODELS:
        archive = data.model_archive(ctx.cache, name)
        ctx.log(f"  {name}: exmode ({ctx.switch_repeat} pairs), torchao ({ctx.repeat} pairs)")
        ours = _tool(ctx, [ctx.bench_switch, archive, "--repeat", ctx.switch_repeat,
                           "--warmup", WARMUP], ctx.switch_repeat + WARMUP)
        theirs = _tool(ctx, [ctx.python, data.BENCH / "torch_switch.py", archive,
                             "--repeat", ctx.repeat, "--warmup", WARMUP], ctx.repeat + WARMUP)
        for direction in ("eval", "train"):
            a = Stat.of_ns(ours[direction]) if ours else Stat(status="failed")
            b = Stat.of_ns(theirs[direction]) if theirs else Stat(status="failed")
            if ours and ours[direction]["changes"] == 0:
                a = Stat(status="no change")  # nothing was switched: the time means nothing
            table.add(name, ours["nodes"] if ours else "", ours["sites"] if ours else "",
                      direction, stat_text(a), stat_text(b), ratio_cell(b, a))
            ctx.ratios.add("in-memory", f"{name} {direction}: torchao / exmode", ratio_cell(b, a),
                           f">= {TARGET:,}x", verdict(ratio(b, a), lambda r: r >= TARGET))
    table.note = ("Medians (min–max) of one call each. nodes: graph nodes of the program; "
                  "sites: mode-sensitive nodes, all switched by every exmode call. torchao does "
                  "less: it rewrites dropout and batch norm only (attention dropout_p and the "
                  "num_batches_tracked increments stay), with dropout p reset to 0.5.")
    ctx.tables.append(table)
