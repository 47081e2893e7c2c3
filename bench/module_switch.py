"""exmode.torch against torchao on the GraphModule of an exported program, in one run.

    python3 bench/module_switch.py [--models resnet50,transformer24] [--toggles N] [--json]

For each model (bench/models.py, exported in train mode, `ep.module()`):
  first     the first switch to eval of a freshly exported module (a new export each time):
            torchao's move_exported_model_to_eval vs exmode.torch's
  toggle    m.eval() / m.train() alternating after allow_exported_model_train_eval(m),
            median per call over N toggles (torchao's own allow_... for torchao)
  no-op     m.eval() on a module already in eval, median per call (exmode)
  codegen   what exmode defers: the first forward after a switch to a mode not seen before
            (or reading m.code, which is what is timed) generates that mode's code, once
            (torchao does it inside every switch)
Ratios are torchao / exmode, measured in this run.
"""

import argparse
import copy
import json
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402

logging.getLogger("torchao").setLevel(logging.ERROR)
warnings.filterwarnings("ignore")
import torchao.quantization.pt2e as ao  # noqa: E402

import exmode.torch as et  # noqa: E402


def fresh_module(name, eager, inputs):
    return torch.export.export(copy.deepcopy(eager), inputs).module()


def timed(fn):
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def toggles(m, n):
    samples = []
    for i in range(n):
        samples.append(timed(m.eval if i % 2 == 0 else m.train))
    return statistics.median(samples)


def bench_model(name, n_toggles, n_first):
    make, make_inputs = models.MODELS[name]
    torch.manual_seed(0)
    eager = make().train()
    inputs = make_inputs()
    row = {"model": name}
    probe = fresh_module(name, eager, inputs)
    row["nodes"] = len(probe.graph.nodes)

    ao_first = [timed(lambda m=fresh_module(name, eager, inputs): ao.move_exported_model_to_eval(m))
                for _ in range(n_first)]
    ex_first = [timed(lambda m=fresh_module(name, eager, inputs): et.move_exported_model_to_eval(m))
                for _ in range(n_first)]
    row["first_ms"] = {"torchao": statistics.median(ao_first) / 1e6,
                       "exmode": statistics.median(ex_first) / 1e6}

    m = fresh_module(name, eager, inputs)
    ao.allow_exported_model_train_eval(m)
    ao_toggle = toggles(m, max(4, n_toggles // 25))  # each torchao call takes ~0.5 s
    m = fresh_module(name, eager, inputs)
    et.allow_exported_model_train_eval(m)
    # Both modes' graphs exist after one round trip; forward once in each so that both
    # modes have code (the toggles then time the switch alone).
    with torch.no_grad():
        m.eval()
        m(*inputs)
        m.train()
        m(*inputs)
    ex_toggle = toggles(m, n_toggles)
    row["toggle_us"] = {"torchao": ao_toggle / 1e3, "exmode": ex_toggle / 1e3}

    m.eval()
    row["noop_us"] = {"exmode": statistics.median(timed(m.eval) for _ in range(n_toggles)) / 1e3}

    m = fresh_module(name, eager, inputs)
    et.allow_exported_model_train_eval(m)
    m.eval()
    row["codegen_ms"] = {"exmode": timed(lambda: m.code) / 1e6}  # reading the code makes it
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet50,transformer24")
    parser.add_argument("--toggles", type=int, default=200)
    parser.add_argument("--first", type=int, default=3, help="fresh exports per first-switch timing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [bench_model(name, args.toggles, args.first) for name in args.models.split(",")]
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return
    print(f"torch {torch.__version__}, torchao {ao.__name__ and __import__('torchao').__version__}")
    print(f"{'model':<14} {'nodes':>5}  {'what':<22} {'torchao':>12} {'exmode':>12} {'ratio':>8}")
    for r in rows:
        for key, what, unit in (("first_ms", "first switch (ms)", 1), ("toggle_us", "toggle (us, median)", 1)):
            a, e = r[key]["torchao"], r[key]["exmode"]
            print(f"{r['model']:<14} {r['nodes']:>5}  {what:<22} {a:>12.2f} {e:>12.2f} {a / e:>7.0f}x")
        print(f"{r['model']:<14} {r['nodes']:>5}  {'no-op call (us)':<22} {'':>12} "
              f"{r['noop_us']['exmode']:>12.2f}")
        print(f"{r['model']:<14} {r['nodes']:>5}  {'deferred codegen (ms)':<22} {'':>12} "
              f"{r['codegen_ms']['exmode']:>12.2f}")


if __name__ == "__main__":
    main()
