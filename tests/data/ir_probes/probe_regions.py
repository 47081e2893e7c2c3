"""Dropout / BatchNorm2d (running statistics) / RReLU inside nested regions: torch.cond
branches (pred a tensor input), `with torch.no_grad():` and
`with torch.autocast("cpu", dtype=torch.bfloat16):` blocks, in train and eval mode, default
IR; then what run_decompositions() makes of each.
Run: python probe_regions.py [--json] [--decomposed]
"""
import json
import sys
import warnings

import torch
from torch import nn

from _common import model_json

warnings.filterwarnings("ignore")


class Cond(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, pred):
        return torch.cond(pred, lambda t: self.inner(t) + 1, lambda t: self.inner(t) - 1, (x,))


class NoGrad(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, pred):
        x = x * 2
        with torch.no_grad():
            y = self.inner(x)
        return y + pred.float()


class Autocast(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, pred):
        x = x * 2
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.inner(x)
        return y.float() + pred.float()


INNERS = {"Dropout": lambda: nn.Dropout(0.3), "BatchNorm2d": lambda: nn.BatchNorm2d(3),
          "RReLU": lambda: nn.RReLU()}


def show_graph(graph, indent="  "):
    """The serialized graph: inputs, nodes with their arguments, outputs; nested graphs
    (as_graph arguments) the same way, indented."""
    names = [next(iter(a.values()))["name"] for a in graph["inputs"]]
    print(f"{indent}inputs: {names}")
    for n in graph["nodes"]:
        args = []
        for i in n["inputs"]:
            (kind, value), = i["arg"].items()
            if kind == "as_graph":
                args.append(f"{i['name'] or '_'}=<graph {value['name']}>")
            elif kind in ("as_tensor",):
                args.append(f"{i['name'] or '_'}=%{value['name']}")
            elif kind == "as_tensors":
                args.append(f"{i['name'] or '_'}=[{', '.join('%' + v['name'] for v in value)}]")
            else:
                args.append(f"{i['name'] or '_'}={kind}:{json.dumps(value)}")
        outs = [json.dumps(o) for o in n["outputs"]]
        print(f"{indent}{n['name']} = {n['target']}({', '.join(args)}) -> {', '.join(outs)}")
        if "--json" in sys.argv and "nn_module_stack" in n.get("metadata", {}):
            print(f"{indent}    nn_module_stack: {n['metadata']['nn_module_stack']}")
        for i in n["inputs"]:
            if "as_graph" in i["arg"]:
                g = i["arg"]["as_graph"]
                print(f"{indent}  graph {g['name']} (members {sorted(g)}; graph members {list(g['graph'])}):")
                show_graph(g["graph"], indent + "    ")
    outs = [json.dumps(o) for o in graph["outputs"]]
    print(f"{indent}outputs: {', '.join(outs)}")


def main():
    x = torch.randn(2, 3, 4, 4)
    pred = torch.tensor(True)
    for region, wrapper in (("torch.cond", Cond), ("no_grad", NoGrad), ("autocast", Autocast)):
        for inner_name, inner in INNERS.items():
            for train in (True, False):
                title = f"{region} {inner_name} {'train' if train else 'eval'}"
                m = wrapper(inner()).train(train)
                try:
                    ep = torch.export.export(m, (x, pred))
                except Exception as e:  # noqa: BLE001
                    first = str(e).strip().splitlines()
                    reason = next((line.strip() for line in first if "mutation" in line), first[0][:200])
                    print(f"==== {title}: EXPORT FAILED {type(e).__name__}: {reason}")
                    continue
                print(f"==== {title} (torch {torch.__version__})")
                doc = model_json(ep)
                show_graph(doc["graph_module"]["graph"])
                specs = doc["graph_module"]["signature"]
                print(f"  output kinds: {[next(iter(s)) for s in specs['output_specs']]}")
                if "--decomposed" in sys.argv:
                    try:
                        dec = ep.run_decompositions()
                    except Exception as e:  # noqa: BLE001
                        print(f"  run_decompositions FAILED {type(e).__name__}: {str(e)[:200]}")
                        continue
                    ddoc = model_json(dec)
                    print("  -- after run_decompositions():")
                    show_graph(ddoc["graph_module"]["graph"], "    ")
                    dspecs = ddoc["graph_module"]["signature"]["output_specs"]
                    print(f"    output kinds: {[next(iter(s)) for s in dspecs]}")


if __name__ == "__main__":
    main()
