"""Every invalid argument raises a clear exception naming the argument, before any
kernel runs; a valid call still works afterwards."""

import pytest
import torch

import gwprune

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def conv_args(device, **overrides):
    args = {
        "x": torch.randn(2, 4, 8, 8, device=device),
        "weight": torch.randn(6, 4, 3, 3, device=device),
        "keep_idx": torch.tensor([0, 5, 11, 35], device=device),
        "bias": torch.randn(6, device=device),
        "stride": 1,
        "padding": 1,
        "dilation": 1,
    }
    args.update(overrides)
    return args


def linear_args(device, **overrides):
    args = {
        "x": torch.randn(3, 10, device=device),
        "weight": torch.randn(5, 10, device=device),
        "keep_idx": torch.tensor([1, 4, 9], device=device),
        "bias": torch.randn(5, device=device),
    }
    args.update(overrides)
    return args


def other_device(device):
    # "meta" is a real, different device on every machine: no GPU needed to test mismatches.
    return "meta"


CONV_ERRORS = [
    # (case, overrides(device) -> dict, exception, words the message must contain)
    ("x-rank", lambda d: {"x": torch.randn(4, 8, 8, device=d)}, ValueError, ["x", "4-D"]),
    (
        "weight-rank",
        lambda d: {"weight": torch.randn(6, 36, device=d)},
        ValueError,
        ["weight", "4-D"],
    ),
    ("x-not-tensor", lambda d: {"x": [[1.0]]}, TypeError, ["x", "torch.Tensor"]),
    (
        "x-int",
        lambda d: {"x": torch.ones(2, 4, 8, 8, dtype=torch.int32, device=d)},
        TypeError,
        ["x", "float"],
    ),
    (
        "channels",
        lambda d: {"x": torch.randn(2, 3, 8, 8, device=d)},
        ValueError,
        ["x", "3 channels", "4"],
    ),
    (
        "grouped-channels",
        lambda d: {"x": torch.randn(2, 8, 8, 8, device=d)},
        ValueError,
        ["groups"],
    ),
    (
        "dtype",
        lambda d: {"weight": torch.randn(6, 4, 3, 3, dtype=torch.float64, device=d)},
        TypeError,
        ["weight", "dtype"],
    ),
    (
        "weight-device",
        lambda d: {"weight": torch.randn(6, 4, 3, 3, device="meta")},
        ValueError,
        ["weight", "meta"],
    ),
    (
        "keep-negative",
        lambda d: {"keep_idx": torch.tensor([-1, 3], device=d)},
        ValueError,
        ["keep_idx", "-1"],
    ),
    (
        "keep-too-large",
        lambda d: {"keep_idx": torch.tensor([3, 36], device=d)},
        ValueError,
        ["keep_idx", "36", "out of range"],
    ),
    (
        "keep-duplicate",
        lambda d: {"keep_idx": torch.tensor([3, 7, 3], device=d)},
        ValueError,
        ["keep_idx", "duplicated"],
    ),
    (
        "keep-2d",
        lambda d: {"keep_idx": torch.tensor([[1, 2]], device=d)},
        ValueError,
        ["keep_idx", "1-D"],
    ),
    (
        "keep-float",
        lambda d: {"keep_idx": torch.tensor([1.0, 2.0], device=d)},
        TypeError,
        ["keep_idx", "int"],
    ),
    (
        "keep-bool",
        lambda d: {"keep_idx": torch.ones(36, dtype=torch.bool, device=d)},
        TypeError,
        ["keep_idx", "mask"],
    ),
    ("keep-list", lambda d: {"keep_idx": [1, 2]}, TypeError, ["keep_idx", "torch.Tensor"]),
    (
        "keep-device",
        lambda d: {"keep_idx": torch.tensor([1, 2], device="meta")},
        ValueError,
        ["keep_idx", "meta"],
    ),
    (
        "keep-too-many",
        lambda d: {"keep_idx": torch.arange(37, device=d)},
        ValueError,
        ["keep_idx", "37"],
    ),
    ("stride-zero", lambda d: {"stride": 0}, ValueError, ["stride", "positive"]),
    ("stride-negative", lambda d: {"stride": (1, -2)}, ValueError, ["stride", "positive"]),
    ("stride-triple", lambda d: {"stride": (1, 1, 1)}, TypeError, ["stride", "pair"]),
    ("stride-float", lambda d: {"stride": 1.5}, TypeError, ["stride"]),
    ("dilation-zero", lambda d: {"dilation": 0}, ValueError, ["dilation", "positive"]),
    ("padding-negative", lambda d: {"padding": -1}, ValueError, ["padding", "non-negative"]),
    ("output-empty", lambda d: {"padding": 0, "dilation": 4}, ValueError, ["output size"]),
    ("bias-shape", lambda d: {"bias": torch.randn(5, device=d)}, ValueError, ["bias", "(6,)"]),
    (
        "bias-dtype",
        lambda d: {"bias": torch.randn(6, dtype=torch.float16, device=d)},
        TypeError,
        ["bias", "dtype"],
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,overrides,error,words", CONV_ERRORS, ids=[c[0] for c in CONV_ERRORS])
def test_conv2d_rejects_bad_input(device, case, overrides, error, words):
    for fn in (gwprune.ops.conv2d, gwprune.reference.conv2d):
        with pytest.raises(error) as info:
            fn(**conv_args(device, **overrides(device)))
        for word in words:
            assert word in str(info.value), f"{case}: {word!r} not in {info.value}"
    # The process and (on CUDA) the context are fine: a valid call still works.
    out = gwprune.ops.conv2d(**conv_args(device))
    assert out.shape == (2, 6, 8, 8) and bool(torch.isfinite(out).all())


def test_conv2d_groups_out_of_scope():
    with pytest.raises(ValueError, match="groups must be 1.*out of scope"):
        gwprune.ops.conv2d(**conv_args("cpu"), groups=2)


LINEAR_ERRORS = [
    ("x-scalar", lambda d: {"x": torch.tensor(1.0, device=d)}, ValueError, ["x", "dimension"]),
    (
        "weight-rank",
        lambda d: {"weight": torch.randn(5, 10, 1, device=d)},
        ValueError,
        ["weight", "2-D"],
    ),
    (
        "features",
        lambda d: {"x": torch.randn(3, 9, device=d)},
        ValueError,
        ["x", "9 features", "10"],
    ),
    (
        "dtype",
        lambda d: {"x": torch.randn(3, 10, dtype=torch.float64, device=d)},
        TypeError,
        ["weight", "dtype"],
    ),
    (
        "keep-range",
        lambda d: {"keep_idx": torch.tensor([10], device=d)},
        ValueError,
        ["keep_idx", "10"],
    ),
    (
        "keep-duplicate",
        lambda d: {"keep_idx": torch.tensor([2, 2], device=d)},
        ValueError,
        ["keep_idx", "duplicated"],
    ),
    (
        "keep-int8",
        lambda d: {"keep_idx": torch.tensor([2], dtype=torch.int8, device=d)},
        TypeError,
        ["keep_idx", "int32"],
    ),
    (
        "keep-device",
        lambda d: {"keep_idx": torch.tensor([2], device="meta")},
        ValueError,
        ["keep_idx", "meta"],
    ),
    ("bias-shape", lambda d: {"bias": torch.randn(4, device=d)}, ValueError, ["bias", "(5,)"]),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "case,overrides,error,words", LINEAR_ERRORS, ids=[c[0] for c in LINEAR_ERRORS]
)
def test_linear_rejects_bad_input(device, case, overrides, error, words):
    for fn in (gwprune.ops.linear, gwprune.reference.linear):
        with pytest.raises(error) as info:
            fn(**linear_args(device, **overrides(device)))
        for word in words:
            assert word in str(info.value), f"{case}: {word!r} not in {info.value}"
    assert gwprune.ops.linear(**linear_args(device)).shape == (3, 5)


def test_packed_ops_check_their_packed_argument():
    x = torch.randn(2, 4, 8, 8)
    packed = gwprune.pack_conv2d_weight(torch.randn(6, 4, 3, 3), torch.tensor([0, 3]))
    with pytest.raises(TypeError, match="packed must be a PackedConv2dWeight"):
        gwprune.ops.conv2d_packed(x, torch.randn(6, 2))
    with pytest.raises(ValueError, match="x has 3 channels"):
        gwprune.ops.conv2d_packed(torch.randn(2, 3, 8, 8), packed)
    with pytest.raises(TypeError, match="packed.weight has dtype"):
        gwprune.ops.conv2d_packed(x.double(), packed)
    with pytest.raises(ValueError, match="memory_format"):
        gwprune.pack_conv2d_weight(
            torch.randn(6, 4, 3, 3), torch.tensor([0]), torch.preserve_format
        )
    linear = gwprune.pack_linear_weight(torch.randn(5, 10), torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="packed must be a PackedLinearWeight"):
        gwprune.ops.linear_packed(torch.randn(3, 10), packed)
    with pytest.raises(ValueError, match="x has 9 features"):
        gwprune.ops.linear_packed(torch.randn(3, 9), linear)


@pytest.mark.skipif(
    tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 14),
    reason="known issue: an exception thrown by gwprune._C crashes the process under the "
    "GPU image's torch 2.11 (seen 2026-11-26); the public ops validate in Python first",
)
def test_compiled_entry_points_validate_too():
    _C = pytest.importorskip("gwprune._C")
    weight = torch.randn(6, 8)
    index = torch.zeros(8, dtype=torch.int32)
    args = ([1, 1], [1, 1], [0, 0], [1, 1], 1 << 20)
    with pytest.raises(ValueError, match="x must be a 4-D tensor"):
        _C.conv2d_packed(torch.randn(4, 8, 8), weight, index, None, *args)
    with pytest.raises(TypeError, match="group_idx must be int32"):
        _C.conv2d_packed(torch.randn(1, 4, 8, 8), weight, index.long(), None, *args)
    with pytest.raises(ValueError, match="group_idx has 7 entries"):
        _C.conv2d_packed(torch.randn(1, 4, 8, 8), weight, index[:7], None, *args)
    with pytest.raises(ValueError, match="stride must be positive"):
        _C.conv2d_packed(
            torch.randn(1, 4, 8, 8), weight, index, None, [1, 1], [0, 1], [0, 0], [1, 1], 1
        )
    with pytest.raises(ValueError, match="CUDA tensors only"):
        _C.conv2d_packed(torch.randn(1, 4, 8, 8), weight, index, None, *args)
    with pytest.raises(TypeError, match="feature_idx must be int32"):
        _C.linear_packed(torch.randn(2, 8), weight, index.long(), None, 1 << 20)


def test_workspace_limit_is_validated():
    saved = gwprune.get_workspace_limit()
    with pytest.raises(ValueError, match="positive"):
        gwprune.set_workspace_limit(0)
    with pytest.raises(TypeError, match="int"):
        gwprune.set_workspace_limit(1.5)
    gwprune.set_workspace_limit(1 << 20)
    assert gwprune.get_workspace_limit() == 1 << 20
    gwprune.set_workspace_limit(saved)
