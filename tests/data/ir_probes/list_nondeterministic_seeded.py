"""List the aten ops tagged nondeterministic_seeded, two ways:
(1) from torchgen/packaged/ATen/native/native_functions.yaml of the installed torch,
(2) from the live registry (torch.Tag.nondeterministic_seeded in OpOverload.tags).
Run: python list_nondeterministic_seeded.py [--overloads]
"""
import os
import sys

import torch
import torchgen
import yaml


def from_yaml():
    path = os.path.join(os.path.dirname(torchgen.__file__), "packaged/ATen/native/native_functions.yaml")
    with open(path) as f:
        entries = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    out = []
    for e in entries:
        tags = e.get("tags", [])
        tags = [tags] if isinstance(tags, str) else tags
        if "nondeterministic_seeded" in tags:
            out.append(e["func"].split("(")[0])
            # "autogen:" variants (e.g. uniform from uniform_) are generated with the same tags
            out += [a.strip() + " (autogen)" for a in str(e.get("autogen", "")).split(",") if a.strip()]
    return path, out


def from_registry():
    out = set()
    names = sorted({s.name.split("::", 1)[1] for s in torch._C._jit_get_all_schemas() if s.name.startswith("aten::")})
    for name in names:
        try:
            packet = getattr(torch.ops.aten, name)
        except Exception:  # noqa: BLE001
            continue
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            continue
        for ov in packet.overloads():
            op = getattr(packet, ov)
            if torch.Tag.nondeterministic_seeded in op.tags:
                out.add(f"{name}.{ov}")
    return sorted(out)


def main():
    path, funcs = from_yaml()
    bases = sorted({f.split(".")[0].split(" ")[0] for f in funcs})
    print(f"torch {torch.__version__}; {path}")
    print(f"{len(funcs)} schema entries, {len(bases)} base names:")
    print(" ".join(bases))
    if "--overloads" in sys.argv:
        print("\nschema entries:")
        print("\n".join(funcs))
    reg = from_registry()
    reg_bases = sorted({r.split(".")[0] for r in reg})
    print(f"\nregistry: {len(reg)} overloads, {len(reg_bases)} base names")
    print("in registry but not yaml:", sorted(set(reg_bases) - set(bases)))
    print("in yaml but not registry:", sorted(set(bases) - set(reg_bases)))


if __name__ == "__main__":
    main()
