"""Section: exmode.torch against torchao on the GraphModule of an exported program.

Runs bench/module_switch.py (both sides in one process, one run) and tabulates its medians:
the first switch of a fresh export, m.eval()/m.train() toggles after
allow_exported_model_train_eval(m), a call that changes nothing, and the code generation
exmode defers to the first forward in a new mode.
"""

import json

from . import data, measure
from .measure import ratio_text, seconds_text
from .table import Table, verdict

FIRST_TARGET = 50  # the first switch at least this many times faster than torchao's
TOGGLE_TARGET = 1_000  # each toggle
NOOP_TARGET_US = 5.0  # a call that changes nothing, at most


def run(ctx):
    toggles, first = (40, 1) if ctx.quick else (400, 3)
    cmd = [ctx.python, data.BENCH / "module_switch.py", "--json", "--toggles", toggles,
           "--first", first]
    r = measure.run(cmd, timeout=ctx.timeout * 20, capture_stdout=True)
    table = Table("GraphModule switch (exmode.torch) vs torchao, per call",
                  ["model", "nodes", "measure", "exmode", "torchao", "torchao/exmode"])
    if r.status != "ok":
        ctx.log(f"  {' '.join(r.cmd)}: {r.status}\n{r.stderr}")
        table.add("all", "", "failed", r.status, "", "")
        ctx.tables.append(table)
        return
    for row in json.loads(r.stdout):
        name, nodes = row["model"], row["nodes"]
        for key, what, scale, target in (("first_ms", "first switch", 1e-3, FIRST_TARGET),
                                         ("toggle_us", "toggle (median)", 1e-6, TOGGLE_TARGET)):
            ours, theirs = row[key]["exmode"] * scale, row[key]["torchao"] * scale
            ratio = theirs / ours
            table.add(name, nodes, what, seconds_text(ours), seconds_text(theirs), ratio_text(ratio))
            ctx.ratios.add("fx module", f"{name} {what}: torchao / exmode", ratio_text(ratio),
                           f">= {target:,}x", verdict(ratio, lambda v, t=target: v >= t))
        noop = row["noop_us"]["exmode"]
        table.add(name, nodes, "no-op call", seconds_text(noop * 1e-6), "", "")
        ctx.ratios.add("fx module", f"{name} no-op call", seconds_text(noop * 1e-6),
                       f"<= {NOOP_TARGET_US:g} µs", verdict(noop, lambda v: v <= NOOP_TARGET_US))
        table.add(name, nodes, "deferred codegen", seconds_text(row["codegen_ms"]["exmode"] * 1e-3),
                  "(in every call)", "")
    table.note = ("One process runs both sides on the same exports. first switch: a fresh "
                  "`ep.module()` each time. toggle: after both modes' graphs and code exist. "
                  "deferred codegen: exmode generates a new mode's Python code once, on the first "
                  "forward after the switch (torchao regenerates it inside every call).")
    ctx.tables.append(table)
