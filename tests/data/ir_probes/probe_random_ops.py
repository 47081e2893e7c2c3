"""Random (nondeterministic_seeded) ops that train-mode exports record outside
plain dropout: timm DropBlock2d (inside torch.no_grad), timm PatchDropout,
Hugging Face LayerDrop (BART), nn.RReLU. Lists every seeded op per export,
including ones inside nested graphs of higher-order ops.
Run with an interpreter that has timm and transformers: python probe_random_ops.py 2>/dev/null
(the failing train export of BART dumps its graph on stderr)
"""
import warnings

import torch
from torch import nn

warnings.filterwarnings("ignore")


def seeded(t):
    return isinstance(t, torch._ops.OpOverload) and torch.Tag.nondeterministic_seeded in t.tags


def walk(gm, prefix=""):
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        if seeded(n.target):
            st = n.meta.get("nn_module_stack") or {}
            path = list(st.values())[-1][0] if st else "-"
            args = ", ".join(a.name if isinstance(a, torch.fx.Node) else repr(a) for a in n.args)
            print(f"  {prefix}{n.target}({args}){' kwargs=' + repr(dict(n.kwargs)) if n.kwargs else ''}   @ {path!r}")
        elif not isinstance(n.target, torch._ops.OpOverload):
            print(f"  {prefix}[higher-order / other] {n.target} args={[a.name if isinstance(a, torch.fx.Node) else a for a in n.args][:3]}")
    for name, sub in gm.named_children():
        if isinstance(sub, torch.fx.GraphModule):
            print(f"  {prefix}-- nested graph {name}:")
            walk(sub, prefix + "    ")


def report(name, m, args, kwargs=None):
    for train in (True, False):
        m.train(train)
        try:
            ep = torch.export.export(m, args, kwargs=kwargs or {})
        except Exception as e:  # noqa: BLE001
            print(f"==== {name} {'train' if train else 'eval'}: EXPORT FAILED {type(e).__name__}: {str(e).splitlines()[0][:250]}")
            continue
        print(f"==== {name} {'train' if train else 'eval'} (torch {torch.__version__})")
        walk(ep.graph_module)


def main():
    import timm.layers as L
    import transformers as T

    report("timm DropBlock2d(0.1, 3)", L.DropBlock2d(0.1, 3), (torch.randn(2, 3, 8, 8),))
    report("timm PatchDropout(0.5)", L.PatchDropout(0.5, num_prefix_tokens=1), (torch.randn(2, 9, 8),))
    report("nn.RReLU()", nn.RReLU(), (torch.randn(2, 3),))
    cfg = T.BartConfig(vocab_size=50, d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=16,
                       encoder_layerdrop=0.1, dropout=0.1, attention_dropout=0.1, use_cache=False)
    enc = T.BartModel(cfg).get_encoder()
    report("hf BartEncoder(encoder_layerdrop=0.1)", enc, (), {"input_ids": torch.randint(4, 50, (2, 8))})


if __name__ == "__main__":
    main()
