"""Attention (and other mode-sensitive / random) nodes of small randomly
initialised timm, Hugging Face and torchvision models, train and eval.
No weights are downloaded: everything is built from configs.
Run with an interpreter that has timm, torchvision, transformers:
    python probe_attention.py [--json] [name ...]
"""
import sys
import warnings

import torch

from _common import print_json_nodes

warnings.filterwarnings("ignore")
JSON = "--json" in sys.argv
torch.manual_seed(0)


def is_random(target):
    return isinstance(target, torch._ops.OpOverload) and torch.Tag.nondeterministic_seeded in target.tags


def interesting(n):
    t = str(n.target)
    return ("attention" in t or "dropout" in t or "lstm" in t or "gru" in t or "rnn" in t
            or "batch_norm" in t or is_random(n.target))


def innermost(n):
    st = n.meta.get("nn_module_stack") or {}
    if not st:
        return "-", "-"
    path, typ = list(st.values())[-1]
    return path, getattr(typ, "__qualname__", str(typ)).split(".")[-1] if not isinstance(typ, str) else typ


def fmt(a):
    if isinstance(a, torch.fx.Node):
        return a.name
    if isinstance(a, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in a) + "]"
    return repr(a)


def report(name, mod, args=(), kwargs=None):
    for train in (True, False):
        mod.train(train)
        try:
            ep = torch.export.export(mod, args, kwargs=kwargs or {})
        except Exception as e:  # noqa: BLE001
            print(f"==== {name} {'train' if train else 'eval'}: EXPORT FAILED {type(e).__name__}: {str(e)[:300]}")
            continue
        targets = sorted({str(n.target) for n in ep.graph.nodes if n.op == "call_function"})
        print(f"==== {name} {'train' if train else 'eval'} (torch {torch.__version__})")
        for n in ep.graph.nodes:
            if n.op == "call_function" and interesting(n):
                path, typ = innermost(n)
                kw = ", ".join(f"{k}={fmt(v)}" for k, v in n.kwargs.items())
                a = ", ".join(fmt(x) for x in n.args) + (", " + kw if kw else "")
                print(f"  {n.target}({a})    @ {path} [{typ}]")
        if JSON:
            print_json_nodes(ep, ["attention", "dropout"], name)
        print("  attention-like targets:", [t for t in targets if "attention" in t or "flash" in t or "efficient" in t])


def timm_vit():
    import timm
    from timm.layers import use_fused_attn
    print("timm use_fused_attn():", use_fused_attn())
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=1,
                          num_classes=4, attn_drop_rate=0.1, proj_drop_rate=0.1, drop_path_rate=0.1, drop_rate=0.1)
    report("timm vit (Attention, fused)", m, (torch.randn(2, 3, 32, 32),))


def timm_vit_unfused():
    import timm
    from timm.layers import set_fused_attn
    set_fused_attn(False)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=1,
                          num_classes=4, attn_drop_rate=0.1)
    set_fused_attn(True)
    report("timm vit (Attention, fused_attn off)", m, (torch.randn(2, 3, 32, 32),))


def hf(kind, impl):
    import transformers as T
    ids = torch.randint(0, 50, (2, 8))
    if kind == "bert":
        cfg = T.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=16, attention_probs_dropout_prob=0.1,
                           hidden_dropout_prob=0.1, attn_implementation=impl)
        m = T.BertModel(cfg, add_pooling_layer=False)
        return report(f"hf BertModel attn={impl}", m, (), {"input_ids": ids})
    if kind == "gpt2":
        cfg = T.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=16, attn_pdrop=0.1,
                           resid_pdrop=0.1, embd_pdrop=0.1, use_cache=False, attn_implementation=impl)
        m = T.GPT2Model(cfg)
        return report(f"hf GPT2Model attn={impl}", m, (), {"input_ids": ids})
    if kind == "vit":
        cfg = T.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, attention_probs_dropout_prob=0.1, hidden_dropout_prob=0.1,
                          attn_implementation=impl)
        m = T.ViTModel(cfg, add_pooling_layer=False)
        return report(f"hf ViTModel attn={impl}", m, (torch.randn(2, 3, 32, 32),))
    if kind == "llama":
        cfg = T.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
                            attention_dropout=0.1, use_cache=False, attn_implementation=impl)
        m = T.LlamaModel(cfg)
        return report(f"hf LlamaModel (GQA 4/2) attn={impl}", m, (), {"input_ids": ids})
    if kind == "mistral":
        cfg = T.MistralConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                              num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
                              attention_dropout=0.1, use_cache=False, sliding_window=None, attn_implementation=impl)
        m = T.MistralModel(cfg)
        return report(f"hf MistralModel attn={impl}", m, (), {"input_ids": ids})


def tv_vit():
    from torchvision.models import VisionTransformer
    m = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                          dropout=0.1, attention_dropout=0.1, num_classes=4)
    report("torchvision VisionTransformer", m, (torch.randn(2, 3, 32, 32),))


def tv_swin():
    from torchvision.models.swin_transformer import SwinTransformer
    m = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=[2, 2],
                        dropout=0.1, attention_dropout=0.1, stochastic_depth_prob=0.1, num_classes=4)
    report("torchvision SwinTransformer (v1)", m, (torch.randn(2, 3, 32, 32),))


CASES = {
    "timm_vit": timm_vit,
    "timm_vit_unfused": timm_vit_unfused,
    **{f"hf_{k}_{i}": (lambda k=k, i=i: hf(k, i)) for k in ("bert", "gpt2", "vit", "llama", "mistral")
       for i in ("sdpa", "eager")},
    "tv_vit": tv_vit,
    "tv_swin": tv_swin,
}

if __name__ == "__main__":
    for name in [a for a in sys.argv[1:] if not a.startswith("--")] or CASES:
        CASES[name]()
