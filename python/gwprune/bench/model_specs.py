"""The whole models of ``gwprune bench --models``: how each is built, fed and kept dense.

Every model is built from its config with random initialization (nothing is
downloaded, so this works on a machine without network): torchvision VGG-16,
ResNet-18, ResNet-50, ConvNeXt-Tiny and ViT-B/16, transformers' ``BertModel(BertConfig())``
(BERT-base), an 8-layer Llama-style decoder (``LlamaModel``, hidden 1024) and GPT-2
(``GPT2Model(GPT2Config())``). Each model names the layers that stay dense by design: the
first conv and the classifier (for BERT, whose ``BertModel`` has neither, the pooler head;
the decoders have neither).

``ModelSize.tiny`` (the CPU preset) builds small variants so the command runs in
seconds on a CPU: VGG-16's layer structure at 1/8 width with a 512-wide classifier,
the real ResNet-18, ResNet-50 with one bottleneck per stage at a quarter of the 3x3
width, ConvNeXt with one block per stage at 1/4 width, ViT-B/16 and BERT-base with 2
encoder layers (BERT with a 512-token vocabulary), and 2-layer decoders of width 64.
Their times say nothing about GPU speed.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

# BERT's attention implementation, the same on the dense and the converted side.
BERT_ATTENTION = "sdpa"
VIT_HEAD_INIT_STD = 0.02  # torchvision zero-initializes ViT's head: its output would be 0
TINY_VOCAB = 512
TINY_ENCODER_LAYERS = 2
TINY_VGG_WIDTH_DIVISOR = 8
TINY_VGG_CLASSIFIER = 512
# The Llama-style decoder of the model benchmark (issue 14): hidden 1024, 8 layers, 16 heads
# of 64, the MLP 2.75x wide (Llama's 8/3 rounded up to a multiple of 256: 2816).
LLAMA_HIDDEN = 1024
LLAMA_LAYERS = 8
LLAMA_HEADS = 16
LLAMA_INTERMEDIATE = 2816
LLAMA_VOCAB = 32000
TINY_DECODER_WIDTH = 64
TINY_DECODER_HEADS = 4

MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass(frozen=True)
class ModelSize:
    batch: int
    image_size: int  # CNNs and ViT
    seq_len: int  # BERT
    tiny: bool  # reduced widths / encoder layers (the CPU preset)


GPU_SIZE = ModelSize(batch=64, image_size=224, seq_len=128, tiny=False)
CPU_SIZE = ModelSize(batch=2, image_size=32, seq_len=16, tiny=True)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "cnn" (timed in both memory layouts) or "transformer"
    build: Callable[[ModelSize], nn.Module]
    dense_by_design: tuple[tuple[str, str], ...]  # (module name, why it stays dense)
    takes_tokens: bool = False

    @property
    def skip(self) -> list[str]:
        return [name for name, _ in self.dense_by_design]

    @property
    def layouts(self) -> tuple[str, ...]:
        return tuple(MEMORY_FORMATS) if self.family == "cnn" else ("contiguous",)

    def label(self, size: ModelSize) -> str:
        return _LABELS[self.name][size.tiny]

    def make_input(self, model: nn.Module, size: ModelSize, seed: int) -> torch.Tensor:
        """The benchmark input on the CPU: images (float32) or token ids, seeded."""
        generator = torch.Generator().manual_seed(seed)
        if self.takes_tokens:
            vocab = model.vocab_size
            return torch.randint(0, vocab, (size.batch, size.seq_len), generator=generator)
        shape = (size.batch, 3, size.image_size, size.image_size)
        return torch.randn(shape, generator=generator)

    def describe_input(self, size: ModelSize) -> str:
        if self.takes_tokens:
            return f"{size.batch}x{size.seq_len} token ids"
        return f"{size.batch}x3x{size.image_size}x{size.image_size}"


def build_model(spec: ModelSpec, size: ModelSize, seed: int) -> nn.Module:
    """The model in eval mode, float32, on the CPU; the same weights for the same seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return spec.build(size).eval()


class BertLastHiddenState(nn.Module):
    """``BertModel`` on token ids with an all-ones attention mask; returns last_hidden_state."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    @property
    def vocab_size(self) -> int:
        return self.bert.config.vocab_size

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(input_ids)
        return self.bert(input_ids=input_ids, attention_mask=mask).last_hidden_state


class DecoderLastHiddenState(nn.Module):
    """A transformers decoder (``LlamaModel``, ``GPT2Model``) on token ids, causal, no cache;
    returns last_hidden_state."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    @property
    def vocab_size(self) -> int:
        return self.decoder.config.vocab_size

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.decoder(input_ids=input_ids, use_cache=False).last_hidden_state


def _vgg16(size: ModelSize) -> nn.Module:
    import torchvision

    if not size.tiny:
        return torchvision.models.vgg16(weights=None)
    from torchvision.models.vgg import VGG, cfgs, make_layers

    config = [c if c == "M" else c // TINY_VGG_WIDTH_DIVISOR for c in cfgs["D"]]
    model = VGG(make_layers(config), num_classes=10)
    last_channels = config[-2]
    width = TINY_VGG_CLASSIFIER
    model.classifier = nn.Sequential(  # VGG's classifier at reduced width, same module names
        nn.Linear(last_channels * 7 * 7, width),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(width, width),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(width, 10),
    )
    for layer in model.classifier:
        if isinstance(layer, nn.Linear):  # as torchvision's VGG initializes its classifier
            nn.init.normal_(layer.weight, 0, 0.01)
            nn.init.zeros_(layer.bias)
    return model


def _resnet18(size: ModelSize) -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(weights=None)


def _resnet50(size: ModelSize) -> nn.Module:
    import torchvision

    if not size.tiny:
        return torchvision.models.resnet50(weights=None)
    from torchvision.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10, width_per_group=16)


def _convnext_tiny(size: ModelSize) -> nn.Module:
    import torchvision

    if not size.tiny:
        return torchvision.models.convnext_tiny(weights=None)
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    widths = (24, 48, 96, 192)  # ConvNeXt-Tiny's 96..768 at 1/4, one block per stage
    setting = [
        CNBlockConfig(width, widths[i + 1] if i + 1 < len(widths) else None, 1)
        for i, width in enumerate(widths)
    ]
    return ConvNeXt(setting, num_classes=10)


def _llama(size: ModelSize) -> nn.Module:
    import transformers

    if size.tiny:
        shape = dict(
            hidden_size=TINY_DECODER_WIDTH,
            intermediate_size=176,
            num_hidden_layers=TINY_ENCODER_LAYERS,
            num_attention_heads=TINY_DECODER_HEADS,
            num_key_value_heads=TINY_DECODER_HEADS,
            vocab_size=TINY_VOCAB,
        )
    else:
        shape = dict(
            hidden_size=LLAMA_HIDDEN,
            intermediate_size=LLAMA_INTERMEDIATE,
            num_hidden_layers=LLAMA_LAYERS,
            num_attention_heads=LLAMA_HEADS,
            num_key_value_heads=LLAMA_HEADS,
            vocab_size=LLAMA_VOCAB,
        )
    config = transformers.LlamaConfig(attn_implementation=BERT_ATTENTION, **shape)
    return DecoderLastHiddenState(transformers.LlamaModel(config))


def _gpt2(size: ModelSize) -> nn.Module:
    import transformers

    options = {"attn_implementation": BERT_ATTENTION}
    if size.tiny:
        options.update(
            n_layer=TINY_ENCODER_LAYERS,
            n_embd=TINY_DECODER_WIDTH,
            n_head=TINY_DECODER_HEADS,
            vocab_size=TINY_VOCAB,
        )
    config = transformers.GPT2Config(**options)
    if size.seq_len > config.n_positions:
        raise ValueError(f"--seq-len {size.seq_len} exceeds GPT-2's {config.n_positions} positions")
    return DecoderLastHiddenState(transformers.GPT2Model(config))


def _vit_b_16(size: ModelSize) -> nn.Module:
    import torchvision

    if size.tiny:
        from torchvision.models.vision_transformer import VisionTransformer

        model = VisionTransformer(
            image_size=size.image_size,
            patch_size=16,
            num_layers=TINY_ENCODER_LAYERS,
            num_heads=12,
            hidden_dim=768,
            mlp_dim=3072,
        )
    else:
        model = torchvision.models.vit_b_16(weights=None, image_size=size.image_size)
    nn.init.normal_(model.heads.head.weight, std=VIT_HEAD_INIT_STD)
    return model


def _bert_base(size: ModelSize) -> nn.Module:
    import transformers

    options = {"attn_implementation": BERT_ATTENTION}
    if size.tiny:
        options.update(num_hidden_layers=TINY_ENCODER_LAYERS, vocab_size=TINY_VOCAB)
    config = transformers.BertConfig(**options)
    if size.seq_len > config.max_position_embeddings:
        raise ValueError(
            f"--seq-len {size.seq_len} exceeds BERT's {config.max_position_embeddings} positions"
        )
    return BertLastHiddenState(transformers.BertModel(config))


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "vgg16", "cnn", _vgg16, (("features.0", "first conv"), ("classifier.6", "classifier"))
        ),
        ModelSpec("resnet18", "cnn", _resnet18, (("conv1", "first conv"), ("fc", "classifier"))),
        ModelSpec("resnet50", "cnn", _resnet50, (("conv1", "first conv"), ("fc", "classifier"))),
        ModelSpec(
            "convnext_tiny",
            "cnn",
            _convnext_tiny,
            (("features.0.0", "first conv (patchify stem)"), ("classifier.2", "classifier")),
        ),
        ModelSpec(
            "vit_b_16",
            "transformer",
            _vit_b_16,
            (("conv_proj", "first conv (patch embedding)"), ("heads.head", "classifier")),
        ),
        ModelSpec(
            "bert-base",
            "transformer",
            _bert_base,
            (("bert.pooler.dense", "pooler head (BertModel has no classifier)"),),
            takes_tokens=True,
        ),
        ModelSpec("llama", "transformer", _llama, (), takes_tokens=True),
        ModelSpec("gpt2", "transformer", _gpt2, (), takes_tokens=True),
    )
}

_LABELS = {
    "vgg16": {
        False: "torchvision vgg16, random init",
        True: "VGG-16 layers at 1/8 width, 512-wide classifier (CPU tiny)",
    },
    "resnet18": {False: "torchvision resnet18, random init", True: "torchvision resnet18 (CPU)"},
    "resnet50": {
        False: "torchvision resnet50, random init",
        True: "ResNet-50 bottlenecks, one per stage, 3x3 width / 4 (CPU tiny)",
    },
    "convnext_tiny": {
        False: "torchvision convnext_tiny, random init",
        True: "ConvNeXt, one block per stage, widths 24-192 (CPU tiny)",
    },
    "llama": {
        False: f"transformers LlamaModel, hidden {LLAMA_HIDDEN}, {LLAMA_LAYERS} layers, "
        f"MLP {LLAMA_INTERMEDIATE}, {BERT_ATTENTION} attention, random init",
        True: f"Llama-style decoder, {TINY_ENCODER_LAYERS} layers of width "
        f"{TINY_DECODER_WIDTH} (CPU tiny)",
    },
    "gpt2": {
        False: f"transformers GPT2Model(GPT2Config()), {BERT_ATTENTION} attention, random init",
        True: f"GPT-2, {TINY_ENCODER_LAYERS} layers of width {TINY_DECODER_WIDTH} (CPU tiny)",
    },
    "vit_b_16": {
        False: "torchvision vit_b_16, random init",
        True: f"ViT-B/16 with {TINY_ENCODER_LAYERS} encoder layers (CPU tiny)",
    },
    "bert-base": {
        False: f"transformers BertModel(BertConfig()), {BERT_ATTENTION} attention",
        True: f"BERT-base with {TINY_ENCODER_LAYERS} layers, {TINY_VOCAB}-token vocab (CPU tiny)",
    },
}

DEFAULT_MODELS = tuple(MODEL_SPECS)


def parse_model_names(text: str | None) -> list[str]:
    """'vgg16,bert-base' -> names; None, '' or 'all' -> every model. ValueError if unknown."""
    if text is None or text.strip() in ("", "all", "default"):
        return list(DEFAULT_MODELS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODEL_SPECS]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; choose from {', '.join(MODEL_SPECS)}")
    return list(dict.fromkeys(names))
