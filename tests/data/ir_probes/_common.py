"""Shared helpers for the IR probes: export a module, print its graph and the
serialized arguments of selected nodes. Nothing is downloaded."""
import io
import json
import sys
import zipfile

import torch


def export(mod, args, train, dynamic_shapes=None, kwargs=None):
    mod.train(train)
    return torch.export.export(mod, args, kwargs=kwargs, dynamic_shapes=dynamic_shapes)


def stack_str(node):
    st = node.meta.get("nn_module_stack")
    if not st:
        return ""
    return " | ".join(f"{k}={v[0]!r}:{getattr(v[1], '__qualname__', v[1])}" for k, v in st.items())


def print_graph(ep, title, filt=None, show_stack=True):
    print(f"==== {title} (torch {torch.__version__})")
    for n in ep.graph.nodes:
        if n.op != "call_function":
            continue
        t = str(n.target)
        if filt and not any(h in t for h in filt):
            continue
        line = f"  {n.name} = {t}{tuple(n.args)!r}"
        if n.kwargs:
            line += f" kwargs={dict(n.kwargs)!r}"
        print(line)
        if show_stack:
            print(f"      stack: {stack_str(n)}")


def model_json(ep):
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    with zipfile.ZipFile(buf) as z:
        name = next(n for n in z.namelist() if n.endswith("models/model.json"))
        return json.loads(z.read(name))


def print_json_nodes(ep, want, title=""):
    """Print serialized inputs of nodes whose target contains one of `want`."""
    doc = model_json(ep)
    nodes = doc["graph_module"]["graph"]["nodes"]
    print(f"---- serialized {title}")
    for n in nodes:
        if any(w in n["target"] for w in want):
            ins = []
            for i in n["inputs"]:
                a = i["arg"]
                (k, v), = a.items()
                ins.append(f"{i['name']}={k}:{json.dumps(v)}(kind {i.get('kind')})")
            outs = [json.dumps(o) for o in n["outputs"]]
            print(f"  {n['target']}: " + ", ".join(ins) + "  -> " + ", ".join(outs))
            md = n.get("metadata", {})
            if "nn_module_stack" in md:
                print(f"      nn_module_stack: {md['nn_module_stack']}")
