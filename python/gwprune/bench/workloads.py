"""What the benchmark runs: layer shapes as plain tuples, grouped into named sets.

A workload is one layer shape at one batch size. Model workloads come from the
layer lists of VGG-16, ResNet-18, ViT-B/16 and BERT-base (no torchvision needed);
identical shapes are merged so each is measured once, and each model remembers
how many times it uses each shape so layer latencies can be summed per model
(the seed's Figs 7-10 compare whole models).
"""

from dataclasses import dataclass, replace

from .._checks import conv_out_size


@dataclass(frozen=True)
class ConvWorkload:
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    padding: int
    height: int
    width: int
    batch: int
    label: str = ""

    kind = "conv"

    @property
    def slug(self) -> str:
        k, s, p = self.kernel_size, self.stride, self.padding
        return (
            f"conv{self.in_channels}-{self.out_channels}_k{k}s{s}p{p}"
            f"_{self.height}x{self.width}_n{self.batch}"
        )

    @property
    def num_groups(self) -> int:
        return self.in_channels * self.kernel_size * self.kernel_size

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def output_hw(self) -> tuple[int, int]:
        return tuple(
            conv_out_size(size, self.kernel_size, self.stride, self.padding, 1)
            for size in (self.height, self.width)
        )

    @property
    def gemm_shape(self) -> str:
        """The dense GEMM behind the layer: [Cout, K] x [K, N*L]."""
        out_h, out_w = self.output_hw
        return f"{self.out_channels}x{self.num_groups}x{self.batch * out_h * out_w}"

    def describe(self) -> str:
        k, s, p = self.kernel_size, self.stride, self.padding
        return (
            f"conv {self.in_channels}->{self.out_channels} {k}x{k} s{s} p{p}, "
            f"{self.height}x{self.width}, batch {self.batch}"
        )


@dataclass(frozen=True)
class LinearWorkload:
    in_features: int
    out_features: int
    tokens: int  # rows per sample (sequence length, patches); 1 for a classifier head
    batch: int
    label: str = ""

    kind = "linear"

    @property
    def rows(self) -> int:
        return self.batch * self.tokens

    @property
    def slug(self) -> str:
        return f"linear{self.in_features}-{self.out_features}_m{self.rows}"

    @property
    def num_groups(self) -> int:
        return self.in_features

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_features, self.in_features)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.rows, self.in_features)

    @property
    def gemm_shape(self) -> str:
        return f"{self.out_features}x{self.in_features}x{self.rows}"

    def describe(self) -> str:
        return f"linear {self.in_features}->{self.out_features}, {self.rows} rows"


Workload = ConvWorkload | LinearWorkload


@dataclass(frozen=True)
class ModelLayers:
    """One model at one input size: (workload, how many times the model uses it)."""

    name: str
    layers: tuple[tuple[Workload, int], ...]


def _conv(cin, cout, size, batch, kernel=3, stride=1, padding=None, label=""):
    padding = kernel // 2 if padding is None else padding
    return ConvWorkload(cin, cout, kernel, stride, padding, size, size, batch, label)


# ---- the seed's layers (Figs 11-14) and the project's extra single layers -----------------

SEED_CONV = _conv(512, 512, 28, 64, label="seed conv (Figs 11, 13, 14)")
SEED_LINEAR = LinearWorkload(4096, 4096, 1, 64, label="seed linear (Figs 12, 14)")
BERT_FFN = LinearWorkload(768, 3072, 128, 64, label="BERT-base FFN, 64 x 128 tokens")
SMALL_BATCH_CONV = _conv(512, 512, 14, 1, label="small-batch conv (N=1)")
CPU_TINY_CONV = _conv(32, 32, 8, 2, label="CPU tiny conv")
CPU_TINY_LINEAR = LinearWorkload(256, 256, 1, 16, label="CPU tiny linear")
# The CPU preset: layers a CPU serving pruned models meets, small enough that the preset
# runs in under a minute on 2 cores (docs/benchmarks.md).
CPU_SEED_CONV = _conv(512, 512, 28, 1, label="seed-shaped conv, batch 1 (CPU)")
CPU_RESNET50_3X3 = _conv(256, 256, 14, 2, label="ResNet-50 conv4_x 3x3, batch 2 (CPU)")
CPU_RESNET50_1X1 = _conv(
    1024, 256, 14, 2, kernel=1, label="ResNet-50 conv4_x 1x1 reduce, batch 2 (CPU)"
)
CPU_BERT_FFN = LinearWorkload(768, 3072, 128, 1, label="BERT-base FFN, 128 tokens (CPU)")


# ---- model layer lists ----------------------------------------------------------------------

_VGG16_CHANNELS = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
)


def vgg16(name: str, image_size: int, num_classes: int, batch: int) -> ModelLayers:
    layers, cin, size = [], 3, image_size
    for item in _VGG16_CHANNELS:
        if item == "M":
            size //= 2
            continue
        layers.append(_conv(cin, item, size, batch))
        cin = item
    flat = 512 * (size // 2) ** 2  # after the last pool
    layers += [
        LinearWorkload(flat, 4096, 1, batch),
        LinearWorkload(4096, 4096, 1, batch),
        LinearWorkload(4096, num_classes, 1, batch),
    ]
    return ModelLayers(name, _counted(layers))


def resnet18(name: str, image_size: int, num_classes: int, batch: int, imagenet_stem: bool):
    # The CIFAR variant (3x3 stem, no max-pool) is the usual one at 32 and 64 pixels.
    if imagenet_stem:
        layers = [_conv(3, 64, image_size, batch, kernel=7, stride=2, padding=3)]
        size = image_size // 4  # stride-2 stem and stride-2 max-pool
    else:
        layers = [_conv(3, 64, image_size, batch)]
        size = image_size
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        stride = 1 if stage == 0 else 2
        layers.append(_conv(cin, cout, size, batch, stride=stride))
        if stride != 1:
            layers.append(_conv(cin, cout, size, batch, kernel=1, stride=2, padding=0))
            size //= 2
        layers += [_conv(cout, cout, size, batch)] * 3
        cin = cout
    layers.append(LinearWorkload(512, num_classes, 1, batch))
    return ModelLayers(name, _counted(layers))


def vit_b16(name: str, batch: int, num_classes: int = 1000) -> ModelLayers:
    tokens, depth = 197, 12  # 14 x 14 patches of a 224 image, plus the class token
    patch_embed = _conv(3, 768, 224, batch, kernel=16, stride=16, padding=0)
    per_block = [
        LinearWorkload(768, 2304, tokens, batch),  # fused q, k, v
        LinearWorkload(768, 768, tokens, batch),  # attention projection
        LinearWorkload(768, 3072, tokens, batch),  # MLP fc1
        LinearWorkload(3072, 768, tokens, batch),  # MLP fc2
    ]
    head = LinearWorkload(768, num_classes, 1, batch)
    return ModelLayers(name, _counted([patch_embed, *per_block * depth, head]))


def bert_base(name: str, batch: int, seq_len: int = 128, num_classes: int = 2) -> ModelLayers:
    depth = 12
    per_layer = [LinearWorkload(768, 768, seq_len, batch)] * 4  # q, k, v, attention output
    per_layer += [
        LinearWorkload(768, 3072, seq_len, batch),  # intermediate
        LinearWorkload(3072, 768, seq_len, batch),  # output
    ]
    head = [LinearWorkload(768, 768, 1, batch), LinearWorkload(768, num_classes, 1, batch)]
    return ModelLayers(name, _counted([*per_layer * depth, *head]))


def _counted(layers: list[Workload]) -> tuple[tuple[Workload, int], ...]:
    counts: dict[Workload, int] = {}
    for layer in layers:
        counts[layer] = counts.get(layer, 0) + 1
    return tuple(counts.items())


# Batch sizes: the seed fixes 64 for its layer experiments and does not state the batch of
# its model latencies; 64 is used for 32/64-pixel inputs and 16 at 224 pixels, where the
# im2col operand of VGG's conv1_2 at batch 64 alone would take 7.4 GB in fp32.
MODELS: dict[str, ModelLayers] = {
    model.name: model
    for model in (
        vgg16("vgg16-cifar10", 32, 10, 64),
        vgg16("vgg16-tinyimagenet", 64, 200, 64),
        vgg16("vgg16-imagenet", 224, 1000, 16),
        resnet18("resnet18-cifar10", 32, 10, 64, imagenet_stem=False),
        resnet18("resnet18-tinyimagenet", 64, 200, 64, imagenet_stem=False),
        resnet18("resnet18-imagenet", 224, 1000, 16, imagenet_stem=True),
        vit_b16("vit-b16-imagenet", 64),
        bert_base("bert-base-seq128", 64),
    )
}

SINGLE_LAYERS: dict[str, Workload] = {
    "seed-conv": SEED_CONV,
    "seed-linear": SEED_LINEAR,
    "bert-ffn": BERT_FFN,
    "small-batch-conv": SMALL_BATCH_CONV,
    "cpu-tiny-conv": CPU_TINY_CONV,
    "cpu-tiny-linear": CPU_TINY_LINEAR,
    "cpu-seed-conv": CPU_SEED_CONV,
    "cpu-resnet50-3x3": CPU_RESNET50_3X3,
    "cpu-resnet50-1x1": CPU_RESNET50_1X1,
    "cpu-bert-ffn": CPU_BERT_FFN,
}

PRESETS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu-seed-conv", "cpu-resnet50-3x3", "cpu-resnet50-1x1", "cpu-bert-ffn"),
    "quick": ("seed-conv", "seed-linear", "bert-ffn", "small-batch-conv"),
    "paper": ("seed-conv", "seed-linear", *MODELS),
}


def selection_names() -> list[str]:
    """Every name --layers accepts (besides workload slugs)."""
    return [*SINGLE_LAYERS, *MODELS, *(f"preset:{name}" for name in PRESETS), "all"]


def select(names: list[str], batch: int | None = None) -> tuple[list[Workload], list[ModelLayers]]:
    """Workloads (deduplicated, in order) and the models they came from, for --layers names.

    A name is a single layer, a model, ``preset:<name>``, ``all``, or a workload slug.
    ``batch`` replaces every workload's batch size. Raises ValueError naming an unknown name.
    """
    expanded: list[str] = []
    for name in names:
        if name == "all":
            expanded += [*SINGLE_LAYERS, *MODELS]
        elif name.startswith("preset:") and name[len("preset:") :] in PRESETS:
            expanded += PRESETS[name[len("preset:") :]]
        else:
            expanded.append(name)
    by_slug = _all_workloads_by_slug()
    workloads: dict[str, Workload] = {}
    models: list[ModelLayers] = []
    for name in expanded:
        if name in SINGLE_LAYERS:
            chosen = [SINGLE_LAYERS[name]]
        elif name in MODELS:
            model = _rebatched_model(MODELS[name], batch)
            models.append(model)
            chosen = [workload for workload, _ in model.layers]
        elif name in by_slug:
            chosen = [by_slug[name]]
        else:
            raise ValueError(
                f"unknown layer or model {name!r}; choose from {', '.join(selection_names())} "
                "or a workload slug (gwprune bench --list shows them)"
            )
        for workload in chosen:
            workload = _rebatched(workload, batch)
            workloads.setdefault(workload.slug, workload)
    return list(workloads.values()), models


def _rebatched(workload: Workload, batch: int | None) -> Workload:
    return workload if batch is None else replace(workload, batch=batch)


def _rebatched_model(model: ModelLayers, batch: int | None) -> ModelLayers:
    if batch is None:
        return model
    return ModelLayers(model.name, tuple((_rebatched(w, batch), n) for w, n in model.layers))


def _all_workloads_by_slug() -> dict[str, Workload]:
    found = {workload.slug: workload for workload in SINGLE_LAYERS.values()}
    for model in MODELS.values():
        for workload, _ in model.layers:
            found.setdefault(workload.slug, workload)
    return found


def catalog_lines() -> list[str]:
    """Human-readable listing for --list."""
    lines = ["single layers:"]
    lines += [f"  {name:<22} {w.describe()}  [{w.slug}]" for name, w in SINGLE_LAYERS.items()]
    lines.append("models (layer shapes x uses):")
    for name, model in MODELS.items():
        lines.append(f"  {name}: {len(model.layers)} distinct layer shapes")
        lines += [f"      {count:>2} x {w.describe()}  [{w.slug}]" for w, count in model.layers]
    lines.append("presets:")
    lines += [f"  preset:{name:<15} {', '.join(names)}" for name, names in PRESETS.items()]
    return lines
