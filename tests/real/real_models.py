"""Real architectures for the real-model tier: torchvision, timm and Hugging Face
transformers classes, built small (few layers, small images, short sequences) through
their own constructor arguments, randomly initialised, never downloaded.

Every model keeps whatever depends on `self.training` in its own code: batch norm,
dropout (with p other than the default where the constructor takes it), stochastic
depth / drop path, attention dropout (nn.MultiheadAttention, F.scaled_dot_product_attention
or an explicit softmax-then-dropout), auxiliary or distillation heads.

MODELS maps a name to a builder returning (module, args): a fresh module with
deterministic initial state (seeded), batch-norm running statistics randomised and
num_batches_tracked non-zero, and the positional inputs of one forward call.
"""

import torch

BATCH = 2
SEQ = 8
VOCAB = 64


def _images(size, channels=3, seed=0):
    return (torch.randn(BATCH, channels, size, size, generator=torch.Generator().manual_seed(seed)),)


def _tokens(seed=0):
    return (torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(seed)),)


def randomise_state(module, seed=1):
    """Gives every batch-norm-like buffer set a non-default value, so that a program using
    the wrong statistics, or counting batches wrongly, cannot match eager by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            mean = getattr(m, "running_mean", None)
            var = getattr(m, "running_var", None)
            if isinstance(mean, torch.Tensor):
                mean.copy_(torch.randn(mean.shape, generator=g) * 0.1)
                # The affine part too: zero-initialised last norms of residual blocks (timm's
                # zero_init_last) would make a residual branch, and its drop path, invisible.
                weight, bias = getattr(m, "weight", None), getattr(m, "bias", None)
                if isinstance(weight, torch.Tensor):
                    weight.copy_(torch.rand(weight.shape, generator=g) + 0.5)
                if isinstance(bias, torch.Tensor):
                    bias.copy_(torch.randn(bias.shape, generator=g) * 0.1)
            if isinstance(var, torch.Tensor):
                var.copy_(torch.rand(var.shape, generator=g) + 0.5)
            count = getattr(m, "num_batches_tracked", None)
            if isinstance(count, torch.Tensor):
                count.fill_(7)
    return module


def _built(factory, args, seed=0):
    torch.manual_seed(seed)
    module = factory()
    randomise_state(module, seed + 1)
    return module, args


# ---------------------------------------------------------------- torchvision


def tv_resnet18():
    import torchvision

    return _built(lambda: torchvision.models.resnet18(weights=None, num_classes=10), _images(32))


def tv_mobilenet_v3_small():
    import torchvision

    return _built(lambda: torchvision.models.mobilenet_v3_small(weights=None, num_classes=10, dropout=0.3),
                  _images(32))


def tv_efficientnet_b0():
    # stochastic_depth_prob=0.2 is the default of efficientnet_b0; classifier dropout 0.3.
    import torchvision

    return _built(lambda: torchvision.models.efficientnet_b0(weights=None, num_classes=10, dropout=0.3),
                  _images(32))


def tv_convnext_small_config():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    setting = [CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 2)]
    # layer_scale 0.5, not 1e-6: with the default, a dropped residual branch changes the output by ~1e-8.
    return _built(lambda: ConvNeXt(setting, stochastic_depth_prob=0.2, layer_scale=0.5, num_classes=10),
                  _images(32))


def tv_swin_small_config():
    from torchvision.models.swin_transformer import SwinTransformer

    return _built(lambda: SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                          window_size=[4, 4], dropout=0.1, attention_dropout=0.15,
                                          stochastic_depth_prob=0.2, num_classes=10), _images(32))


def tv_vit_small_config():
    # nn.MultiheadAttention(dropout=attention_dropout) inside every encoder block.
    # Its head is initialised to zeros (every output 0 whatever the mode): given random weights.
    from torchvision.models.vision_transformer import VisionTransformer

    def make():
        m = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                              dropout=0.1, attention_dropout=0.15, num_classes=10)
        torch.nn.init.normal_(m.heads.head.weight, std=0.2)
        torch.nn.init.normal_(m.heads.head.bias, std=0.2)
        return m

    return _built(make, _images(32))


def _register_namedtuple(cls):
    """torch.export.save needs a serialized name for a namedtuple in a program's outputs."""
    import torch.utils._pytree as pytree

    if cls not in pytree.SUPPORTED_NODES:
        pytree._register_namedtuple(cls, serialized_type_name=f"{cls.__module__}.{cls.__qualname__}")


def tv_googlenet_aux():
    # Two auxiliary heads in training mode (GoogLeNetOutputs), logits only in eval.
    import torchvision

    _register_namedtuple(torchvision.models.GoogLeNetOutputs)

    return _built(lambda: torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False,
                                                       num_classes=10, dropout=0.3, dropout_aux=0.6),
                  _images(64))


def tv_densenet_small_config():
    from torchvision.models.densenet import DenseNet

    return _built(lambda: DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2,
                                   drop_rate=0.2, num_classes=10), _images(32))


def tv_maxvit_small_config():
    # Batch norm (MBConv), stochastic depth and attention in one model.
    from torchvision.models.maxvit import MaxVit

    return _built(lambda: MaxVit(input_size=(32, 32), stem_channels=16, partition_size=2, block_channels=[16, 32],
                                 block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.2, mlp_dropout=0.1,
                                 attention_dropout=0.1, num_classes=10), _images(32))


# ---------------------------------------------------------------- timm


def _timm(name, size, **kwargs):
    import timm

    return _built(lambda: timm.create_model(name, pretrained=False, num_classes=10, **kwargs), _images(size))


def timm_resnet_drop_path():
    return _timm("resnet10t", 32, drop_path_rate=0.2, drop_rate=0.3, zero_init_last=False)


def timm_convnext_atto():
    return _timm("convnext_atto", 32, drop_path_rate=0.2, drop_rate=0.3, ls_init_value=0.5)


def timm_efficientnet_b0():
    return _timm("efficientnet_b0", 32, drop_path_rate=0.2, drop_rate=0.3)


def timm_vit_tiny():
    # timm Attention: F.scaled_dot_product_attention(dropout_p=attn_drop.p if training else 0).
    return _timm("vit_tiny_patch16_224", 32, img_size=32, patch_size=8, depth=2, drop_path_rate=0.1,
                 attn_drop_rate=0.1, proj_drop_rate=0.1, drop_rate=0.2)


def timm_deit_distilled():
    # With distilled training on, training mode returns (head, dist head); eval their mean.
    module, args = _timm("deit_tiny_distilled_patch16_224", 32, img_size=32, patch_size=8, depth=2,
                         drop_path_rate=0.1, attn_drop_rate=0.1)
    module.set_distilled_training(True)
    return module, args


# ---------------------------------------------------------------- Hugging Face transformers


def _hf(config_cls, model_cls, args, attn, **config):
    import transformers

    config_cls = getattr(transformers, config_cls)
    model_cls = getattr(transformers, model_cls)

    def make():
        cfg = config_cls(**config)
        cfg._attn_implementation = attn
        return model_cls(cfg)

    return _built(make, args)


_TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=VOCAB)


def hf_bert(attn):
    return _hf("BertConfig", "BertModel", _tokens(), attn, **_TEXT, max_position_embeddings=SEQ * 4,
               attention_probs_dropout_prob=0.1, hidden_dropout_prob=0.15)


def hf_gpt2(attn):
    return _hf("GPT2Config", "GPT2Model", _tokens(), attn, n_embd=32, n_layer=2, n_head=2, n_inner=64,
               vocab_size=VOCAB, n_positions=SEQ * 4, use_cache=False, bos_token_id=0, eos_token_id=0, attn_pdrop=0.1, resid_pdrop=0.15, embd_pdrop=0.2)


def hf_llama(attn):
    return _hf("LlamaConfig", "LlamaModel", _tokens(), attn, **_TEXT, num_key_value_heads=1,
               max_position_embeddings=SEQ * 4, attention_dropout=0.1, use_cache=False)


def hf_mistral(attn):
    return _hf("MistralConfig", "MistralModel", _tokens(), attn, **_TEXT, num_key_value_heads=1,
               max_position_embeddings=SEQ * 4, attention_dropout=0.1, sliding_window=4, use_cache=False)


def hf_vit(attn):
    return _hf("ViTConfig", "ViTModel", _images(32), attn, hidden_size=32, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8,
               attention_probs_dropout_prob=0.1, hidden_dropout_prob=0.15)


def hf_swin(attn):
    return _hf("SwinConfig", "SwinModel", _images(32), attn, image_size=32, patch_size=4, embed_dim=16,
               depths=[2, 2], num_heads=[2, 4], window_size=4, drop_path_rate=0.2, hidden_dropout_prob=0.1,
               attention_probs_dropout_prob=0.1)


def hf_convnext():
    return _hf("ConvNextConfig", "ConvNextModel", _images(32), "eager", num_stages=2, hidden_sizes=[16, 32], depths=[2, 2],
               drop_path_rate=0.2, layer_scale_init_value=0.5)


def hf_bart_layerdrop(attn):
    # LayerDrop: in training mode each encoder / decoder layer is skipped when torch.rand([])
    # falls below the layerdrop probability (a Python branch on a random tensor).
    return _hf("BartConfig", "BartModel", _tokens(), attn, d_model=32, encoder_layers=2, decoder_layers=2,
               encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
               vocab_size=VOCAB, max_position_embeddings=SEQ * 4, dropout=0.15, attention_dropout=0.1,
               activation_dropout=0.05, encoder_layerdrop=0.3, decoder_layerdrop=0.3, use_cache=False,
               pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)


MODELS = {
    "tv_resnet18": tv_resnet18,
    "tv_mobilenet_v3_small": tv_mobilenet_v3_small,
    "tv_efficientnet_b0": tv_efficientnet_b0,
    "tv_convnext": tv_convnext_small_config,
    "tv_swin": tv_swin_small_config,
    "tv_vit": tv_vit_small_config,
    "tv_googlenet_aux": tv_googlenet_aux,
    "tv_densenet": tv_densenet_small_config,
    "tv_maxvit": tv_maxvit_small_config,
    "timm_resnet10t": timm_resnet_drop_path,
    "timm_convnext_atto": timm_convnext_atto,
    "timm_efficientnet_b0": timm_efficientnet_b0,
    "timm_vit_tiny": timm_vit_tiny,
    "timm_deit_distilled": timm_deit_distilled,
    "hf_convnext": hf_convnext,
}
for _attn in ("eager", "sdpa"):
    for _name, _fn in (("bert", hf_bert), ("gpt2", hf_gpt2), ("llama", hf_llama), ("mistral", hf_mistral),
                       ("vit", hf_vit), ("swin", hf_swin), ("bart_layerdrop", hf_bart_layerdrop)):
        MODELS[f"hf_{_name}_{_attn}"] = (lambda fn=_fn, attn=_attn: fn(attn))
