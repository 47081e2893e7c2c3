"""PyTorch's in-memory mode switch, timed: the counterpart of exmode_bench_switch.

    python3 bench/torch_switch.py ARCHIVE --repeat N [--warmup N]

Loads ARCHIVE once (torch.export.load, then ep.module()), then applies
torchao.quantization.pt2e.move_exported_model_to_eval and move_exported_model_to_train to
that module alternately, timing each call with time.perf_counter. Both functions are
idempotent (they keep a flag on the module), so alternating makes every call a real switch.
Prints JSON: {"archive", "nodes", "repeat", "eval": {"median_ns", "min_ns", "max_ns"},
"train": {...}}.
"""

import argparse
import json
import logging
import statistics
import sys
import time

import torch

# torchao logs a warning for each optional CUDA kernel library it cannot load on this machine.
logging.getLogger("torchao").setLevel(logging.ERROR)
from torchao.quantization.pt2e import (  # noqa: E402
    move_exported_model_to_eval,
    move_exported_model_to_train,
)


def summary(samples_ns):
    return {"median_ns": statistics.median(samples_ns), "min_ns": min(samples_ns),
            "max_ns": max(samples_ns), "samples": len(samples_ns)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive")
    parser.add_argument("--repeat", type=int, default=5, help="timed eval/train pairs")
    parser.add_argument("--warmup", type=int, default=1, help="untimed eval/train pairs first")
    args = parser.parse_args()

    module = torch.export.load(args.archive).module()
    eval_ns, train_ns = [], []
    for i in range(args.warmup + args.repeat):
        t0 = time.perf_counter_ns()
        move_exported_model_to_eval(module)
        t1 = time.perf_counter_ns()
        move_exported_model_to_train(module)
        t2 = time.perf_counter_ns()
        if i >= args.warmup:
            eval_ns.append(t1 - t0)
            train_ns.append(t2 - t1)
    json.dump({"archive": args.archive, "nodes": len(module.graph.nodes), "repeat": args.repeat,
               "eval": summary(eval_ns), "train": summary(train_ns)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
