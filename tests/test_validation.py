"""Every invalid argument raises a clear exception naming the argument, before any
kernel runs; a valid call still works afterwards (on CUDA: the context is not broken).

Bad input goes through the public API only (gwprune.ops, gwprune.nn, gwprune.packing):
under the GPU image's torch 2.11 a C++ exception leaving gwprune._C crashed the process,
so the public functions must catch everything in Python first (docs/reliability.md).
"""

import copy
import types

import pytest
import torch
import torch.nn as nn
from conftest import DEVICES, assert_device_still_works

import gwprune
from gwprune import _checks
from gwprune.nn import GroupwiseConv2d, GroupwiseLinear
from gwprune.packing import PackedConv2dWeight, PackedLinearWeight


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
    # On CUDA the CPU is the other device; on the CPU "meta" is a real, different device on
    # every machine, so mismatches are tested without a GPU.
    return "cpu" if device.startswith("cuda") else "meta"


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
    # -- wrong kinds and ranks
    ("x-5d", lambda d: {"x": torch.randn(1, 2, 4, 8, 8, device=d)}, ValueError, ["x", "4-D"]),
    (
        "x-complex",
        lambda d: {"x": torch.randn(2, 4, 8, 8, dtype=torch.complex64, device=d)},
        TypeError,
        ["x", "float"],
    ),
    ("x-bool", lambda d: {"x": torch.ones(2, 4, 8, 8, 1, device=d)[..., 0] > 0}, TypeError, ["x"]),
    ("weight-not-tensor", lambda d: {"weight": [[1.0]]}, TypeError, ["weight", "torch.Tensor"]),
    (
        "weight-int",
        lambda d: {"weight": torch.ones(6, 4, 3, 3, dtype=torch.int64, device=d)},
        TypeError,
        ["weight", "dtype"],
    ),
    (
        "x-double-weight-float",
        lambda d: {"x": torch.randn(2, 4, 8, 8, dtype=torch.float64, device=d)},
        TypeError,
        ["weight", "dtype"],
    ),
    (
        "weight-other-device",
        lambda d: {"weight": torch.randn(6, 4, 3, 3, device=other_device(d))},
        ValueError,
        ["weight", "but x is on"],
    ),
    # -- zero-size and oversized kernels
    (
        "weight-no-out-channels",
        lambda d: {"weight": torch.randn(0, 4, 3, 3, device=d), "bias": None},
        ValueError,
        ["weight", "0 output channels"],
    ),
    (
        "weight-zero-kernel",
        lambda d: {
            "weight": torch.randn(6, 4, 0, 3, device=d),
            "keep_idx": torch.empty(0, dtype=torch.long, device=d),
        },
        ValueError,
        ["weight", "kernel size"],
    ),
    (
        "kernel-larger-than-input",
        lambda d: {"weight": torch.randn(6, 4, 9, 9, device=d), "padding": 0},
        ValueError,
        ["output size", "too small"],
    ),
    (
        "kernel-wider-than-padded-input",
        lambda d: {"weight": torch.randn(6, 4, 1, 11, device=d), "padding": (0, 1)},
        ValueError,
        ["output size", "too small"],
    ),
    (
        "dilated-kernel-larger-than-input",
        lambda d: {"padding": 1, "dilation": (1, 5)},
        ValueError,
        ["output size", "dilation"],
    ),
    # -- keep_idx
    (
        "keep-negative-int32",
        lambda d: {"keep_idx": torch.tensor([0, -5], dtype=torch.int32, device=d)},
        ValueError,
        ["keep_idx", "-5", ">= 0"],
    ),
    (
        "keep-huge",
        lambda d: {"keep_idx": torch.tensor([2**40], device=d)},
        ValueError,
        ["keep_idx", str(2**40), "out of range"],
    ),
    (
        "keep-int16",
        lambda d: {"keep_idx": torch.tensor([1, 2], dtype=torch.int16, device=d)},
        TypeError,
        ["keep_idx", "int32 or int64"],
    ),
    (
        "keep-uint8",
        lambda d: {"keep_idx": torch.tensor([1, 2], dtype=torch.uint8, device=d)},
        TypeError,
        ["keep_idx", "int32 or int64"],
    ),
    ("keep-0d", lambda d: {"keep_idx": torch.tensor(3, device=d)}, ValueError, ["keep_idx", "1-D"]),
    (
        "keep-empty-2d",
        lambda d: {"keep_idx": torch.empty(0, 1, dtype=torch.long, device=d)},
        ValueError,
        ["keep_idx", "1-D"],
    ),
    (
        "keep-other-device",
        lambda d: {"keep_idx": torch.tensor([1, 2], device=other_device(d))},
        ValueError,
        ["keep_idx", " is on ", " but "],
    ),
    # -- bias
    ("bias-not-tensor", lambda d: {"bias": [0.0] * 6}, TypeError, ["bias", "torch.Tensor"]),
    ("bias-2d", lambda d: {"bias": torch.randn(6, 1, device=d)}, ValueError, ["bias", "(6,)"]),
    (
        "bias-int",
        lambda d: {"bias": torch.ones(6, dtype=torch.int64, device=d)},
        TypeError,
        ["bias", "dtype"],
    ),
    (
        "bias-other-device",
        lambda d: {"bias": torch.randn(6, device=other_device(d))},
        ValueError,
        ["bias", "but x is on"],
    ),
    # -- stride / padding / dilation
    ("stride-bool", lambda d: {"stride": True}, TypeError, ["stride"]),
    ("stride-none", lambda d: {"stride": None}, TypeError, ["stride"]),
    ("stride-empty", lambda d: {"stride": ()}, TypeError, ["stride", "pair"]),
    ("stride-tensor", lambda d: {"stride": torch.tensor(1)}, TypeError, ["stride"]),
    ("stride-pair-zero", lambda d: {"stride": (2, 0)}, ValueError, ["stride", "positive"]),
    ("padding-full", lambda d: {"padding": "full"}, ValueError, ["padding", "'same', 'valid'"]),
    ("padding-one-value", lambda d: {"padding": [1]}, TypeError, ["padding", "pair"]),
    ("padding-float", lambda d: {"padding": 1.0}, TypeError, ["padding"]),
    ("padding-pair-negative", lambda d: {"padding": (0, -1)}, ValueError, ["padding"]),
    ("dilation-negative", lambda d: {"dilation": -1}, ValueError, ["dilation", "positive"]),
    ("dilation-pair-zero", lambda d: {"dilation": (1, 0)}, ValueError, ["dilation", "positive"]),
    ("dilation-triple", lambda d: {"dilation": (1, 1, 1)}, TypeError, ["dilation", "pair"]),
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
    assert_device_still_works(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "groups,error,message",
    [
        (2, ValueError, "x has 4 channels but weight expects 8"),
        (0, ValueError, "groups must be positive"),
        (-1, ValueError, "groups must be positive"),
        (4, ValueError, "groups=4 does not divide the 6 output channels"),
    ]
    + [(g, TypeError, "groups must be a positive int") for g in (1.0, True, "1", None)],
)
def test_conv2d_bad_groups(device, groups, error, message):
    for fn in (gwprune.ops.conv2d, gwprune.reference.conv2d):
        with pytest.raises(error, match=message):
            fn(**conv_args(device), groups=groups)
    assert_device_still_works(device)


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
    ("x-not-tensor", lambda d: {"x": [[1.0] * 10]}, TypeError, ["x", "torch.Tensor"]),
    (
        "x-int",
        lambda d: {"x": torch.ones(3, 10, dtype=torch.int32, device=d)},
        TypeError,
        ["x", "float"],
    ),
    (
        "x-complex",
        lambda d: {"x": torch.randn(3, 10, dtype=torch.complex64, device=d)},
        TypeError,
        ["x", "float"],
    ),
    ("weight-not-tensor", lambda d: {"weight": 1.0}, TypeError, ["weight", "torch.Tensor"]),
    ("weight-1d", lambda d: {"weight": torch.randn(10, device=d)}, ValueError, ["weight", "2-D"]),
    (
        "weight-dtype",
        lambda d: {"weight": torch.randn(5, 10, dtype=torch.bfloat16, device=d)},
        TypeError,
        ["weight", "dtype"],
    ),
    (
        "weight-other-device",
        lambda d: {"weight": torch.randn(5, 10, device=other_device(d))},
        ValueError,
        ["weight", "but x is on"],
    ),
    (
        "keep-negative",
        lambda d: {"keep_idx": torch.tensor([-1], device=d)},
        ValueError,
        ["keep_idx", "-1"],
    ),
    (
        "keep-2d",
        lambda d: {"keep_idx": torch.tensor([[1], [2]], device=d)},
        ValueError,
        ["keep_idx", "1-D"],
    ),
    (
        "keep-float",
        lambda d: {"keep_idx": torch.tensor([1.0], device=d)},
        TypeError,
        ["keep_idx", "int"],
    ),
    (
        "keep-bool",
        lambda d: {"keep_idx": torch.ones(10, dtype=torch.bool, device=d)},
        TypeError,
        ["keep_idx", "mask"],
    ),
    ("keep-list", lambda d: {"keep_idx": [1, 2]}, TypeError, ["keep_idx", "torch.Tensor"]),
    (
        "keep-too-many",
        lambda d: {"keep_idx": torch.arange(11, device=d)},
        ValueError,
        ["keep_idx", "11"],
    ),
    (
        "keep-other-device",
        lambda d: {"keep_idx": torch.tensor([1], device=other_device(d))},
        ValueError,
        ["keep_idx", " is on ", " but "],
    ),
    ("bias-not-tensor", lambda d: {"bias": (0.0,) * 5}, TypeError, ["bias", "torch.Tensor"]),
    ("bias-2d", lambda d: {"bias": torch.randn(1, 5, device=d)}, ValueError, ["bias", "(5,)"]),
    (
        "bias-dtype",
        lambda d: {"bias": torch.randn(5, dtype=torch.float64, device=d)},
        TypeError,
        ["bias", "dtype"],
    ),
    (
        "bias-other-device",
        lambda d: {"bias": torch.randn(5, device=other_device(d))},
        ValueError,
        ["bias", "but x is on"],
    ),
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
    assert_device_still_works(device)


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


def test_compiled_entry_points_validate_too():
    # Messages with numbers in them once segfaulted the GPU image's torch 2.11 build
    # (csrc/error_message.h says why); these must raise cleanly on every torch.
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
    if gwprune.cpu_kernels_compiled():  # valid CPU operands now run (csrc/cpu)
        assert _C.conv2d_packed(torch.randn(1, 4, 8, 8), weight, index, None, *args).shape == (
            1,
            6,
            8,
            8,
        )
    meta = [t.to("meta") for t in (torch.randn(1, 4, 8, 8), weight, index)]
    with pytest.raises(ValueError, match="CPU and CUDA tensors only, got x on meta"):
        _C.conv2d_packed(*meta, None, *args)
    with pytest.raises(ValueError, match="CPU and CUDA tensors only, got x on meta"):
        _C.linear_packed(torch.randn(2, 8, device="meta"), meta[1], meta[2], None, 1 << 20)
    with pytest.raises(TypeError, match="feature_idx must be int32"):
        _C.linear_packed(torch.randn(2, 8), weight, index.long(), None, 1 << 20)


@pytest.mark.parametrize(
    "value,error",
    [(0, ValueError), (-1, ValueError), (-(2**40), ValueError)]
    + [(1.5, TypeError), (True, TypeError), (None, TypeError), ("1", TypeError)]
    + [(torch.tensor(1 << 20), TypeError), (float("inf"), TypeError)],
    ids=str,
)
def test_workspace_limit_is_validated(value, error):
    saved = gwprune.get_workspace_limit()
    try:
        with pytest.raises(error, match="nbytes"):
            gwprune.set_workspace_limit(value)
        assert gwprune.get_workspace_limit() == saved  # a rejected value changes nothing
        gwprune.set_workspace_limit(1 << 20)
        assert gwprune.get_workspace_limit() == 1 << 20
    finally:
        gwprune.set_workspace_limit(saved)


def test_workspace_limit_rejects_values_the_kernels_cannot_take():
    saved = gwprune.get_workspace_limit()
    try:
        with pytest.raises(ValueError, match="nbytes"):
            gwprune.set_workspace_limit(2**63)
    finally:
        gwprune.set_workspace_limit(saved)


@pytest.mark.parametrize("value", ["abc", "", "0", "-3", "1,5"])
def test_workspace_env_var_is_validated(monkeypatch, value):
    from gwprune import _config

    monkeypatch.setenv("GWPRUNE_WORKSPACE_MB", value)
    with pytest.raises(ValueError, match="GWPRUNE_WORKSPACE_MB"):
        _config._initial_workspace_bytes()


def test_workspace_env_var_sets_the_limit(monkeypatch):
    from gwprune import _config

    monkeypatch.setenv("GWPRUNE_WORKSPACE_MB", "1.5")
    assert _config._initial_workspace_bytes() == 3 * 2**19
    monkeypatch.delenv("GWPRUNE_WORKSPACE_MB")
    assert _config._initial_workspace_bytes() == _config._DEFAULT_WORKSPACE_BYTES


@pytest.mark.parametrize("value", ["nan", "inf", "1e-9"])
def test_workspace_env_var_rejects_non_finite_and_tiny(monkeypatch, value):
    from gwprune import _config

    monkeypatch.setenv("GWPRUNE_WORKSPACE_MB", value)
    with pytest.raises(ValueError, match="GWPRUNE_WORKSPACE_MB"):
        _config._initial_workspace_bytes()


# ---- packing ---------------------------------------------------------------------------------

PACK_ERRORS = [
    # (case, call(device) -> None, exception, words)
    (
        "conv-weight-3d",
        lambda d: gwprune.pack_conv2d_weight(torch.randn(6, 4, 3, device=d), torch.tensor([1])),
        ValueError,
        ["weight", "4-D"],
    ),
    (
        "conv-weight-int",
        lambda d: gwprune.pack_conv2d_weight(
            torch.ones(6, 4, 3, 3, dtype=torch.int32, device=d), torch.tensor([1], device=d)
        ),
        TypeError,
        ["weight", "float"],
    ),
    (
        "conv-weight-list",
        lambda d: gwprune.pack_conv2d_weight([[1.0]], torch.tensor([1])),
        TypeError,
        ["weight", "torch.Tensor"],
    ),
    (
        "conv-keep-out-of-range",
        lambda d: gwprune.pack_conv2d_weight(
            torch.randn(6, 4, 3, 3, device=d), torch.tensor([35, 36], device=d)
        ),
        ValueError,
        ["keep_idx", "36", "out of range"],
    ),
    (
        "conv-keep-negative",
        lambda d: gwprune.pack_conv2d_weight(
            torch.randn(6, 4, 3, 3, device=d), torch.tensor([-3], dtype=torch.int32, device=d)
        ),
        ValueError,
        ["keep_idx", "-3"],
    ),
    (
        "conv-keep-duplicate",
        lambda d: gwprune.pack_conv2d_weight(
            torch.randn(6, 4, 3, 3, device=d), torch.tensor([4, 9, 4], device=d)
        ),
        ValueError,
        ["keep_idx", "duplicated"],
    ),
    (
        "conv-keep-2d",
        lambda d: gwprune.pack_conv2d_weight(
            torch.randn(6, 4, 3, 3, device=d), torch.tensor([[4]], device=d)
        ),
        ValueError,
        ["keep_idx", "1-D"],
    ),
    (
        "conv-keep-float",
        lambda d: gwprune.pack_conv2d_weight(
            torch.randn(6, 4, 3, 3, device=d), torch.tensor([4.0], device=d)
        ),
        TypeError,
        ["keep_idx", "int32 or int64"],
    ),
    (
        "conv-keep-other-device",
        lambda d: gwprune.pack_conv2d_weight(
            torch.randn(6, 4, 3, 3, device=d), torch.tensor([4], device=other_device(d))
        ),
        ValueError,
        ["keep_idx", "but weight is on"],
    ),
    (
        "conv-memory-format",
        lambda d: gwprune.pack_conv2d_weight(
            torch.randn(6, 4, 3, 3, device=d), torch.tensor([4], device=d), "channels_last"
        ),
        ValueError,
        ["memory_format"],
    ),
    (
        "linear-weight-3d",
        lambda d: gwprune.pack_linear_weight(
            torch.randn(5, 10, 1, device=d), torch.tensor([1], device=d)
        ),
        ValueError,
        ["weight", "2-D"],
    ),
    (
        "linear-keep-out-of-range",
        lambda d: gwprune.pack_linear_weight(
            torch.randn(5, 10, device=d), torch.tensor([10], device=d)
        ),
        ValueError,
        ["keep_idx", "10", "out of range"],
    ),
    (
        "linear-keep-duplicate",
        lambda d: gwprune.pack_linear_weight(
            torch.randn(5, 10, device=d), torch.tensor([3, 3], dtype=torch.int32, device=d)
        ),
        ValueError,
        ["keep_idx", "duplicated"],
    ),
    (
        "linear-keep-bool",
        lambda d: gwprune.pack_linear_weight(
            torch.randn(5, 10, device=d), torch.ones(10, dtype=torch.bool, device=d)
        ),
        TypeError,
        ["keep_idx", "mask"],
    ),
    (
        "linear-keep-list",
        lambda d: gwprune.pack_linear_weight(torch.randn(5, 10, device=d), [1]),
        TypeError,
        ["keep_idx", "torch.Tensor"],
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,call,error,words", PACK_ERRORS, ids=[c[0] for c in PACK_ERRORS])
def test_packing_rejects_bad_input(device, case, call, error, words):
    with pytest.raises(error) as info:
        call(device)
    for word in words:
        assert word in str(info.value), f"{case}: {word!r} not in {info.value}"
    assert_device_still_works(device)


def packed_conv(device):
    weight = torch.randn(6, 4, 3, 3, device=device)
    return gwprune.pack_conv2d_weight(weight, torch.tensor([0, 5, 11, 35], device=device))


def packed_linear(device):
    return gwprune.pack_linear_weight(
        torch.randn(5, 10, device=device), torch.tensor([1, 4, 9], device=device)
    )


# Well-formed packed weights that do not fit the call.
PACKED_CALL_ERRORS = [
    (
        "conv-not-packed",
        lambda d: gwprune.ops.conv2d_packed(torch.randn(2, 4, 8, 8, device=d), packed_linear(d)),
        TypeError,
        ["packed", "PackedConv2dWeight"],
    ),
    (
        "conv-channels",
        lambda d: gwprune.ops.conv2d_packed(torch.randn(2, 5, 8, 8, device=d), packed_conv(d)),
        ValueError,
        ["x has 5 channels", "4"],
    ),
    (
        "conv-dtype",
        lambda d: gwprune.ops.conv2d_packed(
            torch.randn(2, 4, 8, 8, dtype=torch.float16, device=d), packed_conv(d)
        ),
        TypeError,
        ["packed.weight", "dtype"],
    ),
    (
        "conv-device",
        lambda d: gwprune.ops.conv2d_packed(
            torch.randn(2, 4, 8, 8, device=d), packed_conv("cpu").to(other_device(d))
        ),
        ValueError,
        ["packed.weight", "but x is on"],
    ),
    (
        "conv-x-3d",
        lambda d: gwprune.ops.conv2d_packed(torch.randn(4, 8, 8, device=d), packed_conv(d)),
        ValueError,
        ["x", "4-D"],
    ),
    (
        "conv-input-too-small",
        lambda d: gwprune.ops.conv2d_packed(torch.randn(2, 4, 2, 8, device=d), packed_conv(d)),
        ValueError,
        ["output size", "too small"],
    ),
    (
        "conv-bias",
        lambda d: gwprune.ops.conv2d_packed(
            torch.randn(2, 4, 8, 8, device=d), packed_conv(d), torch.randn(7, device=d)
        ),
        ValueError,
        ["bias", "(6,)"],
    ),
    (
        "conv-stride",
        lambda d: gwprune.ops.conv2d_packed(
            torch.randn(2, 4, 8, 8, device=d), packed_conv(d), stride=(0, 1)
        ),
        ValueError,
        ["stride", "positive"],
    ),
    (
        "linear-not-packed",
        lambda d: gwprune.ops.linear_packed(torch.randn(3, 10, device=d), packed_conv(d)),
        TypeError,
        ["packed", "PackedLinearWeight"],
    ),
    (
        "linear-features",
        lambda d: gwprune.ops.linear_packed(torch.randn(3, 11, device=d), packed_linear(d)),
        ValueError,
        ["x has 11 features", "10"],
    ),
    (
        "linear-dtype",
        lambda d: gwprune.ops.linear_packed(
            torch.randn(3, 10, dtype=torch.float64, device=d), packed_linear(d)
        ),
        TypeError,
        ["packed.weight", "dtype"],
    ),
    (
        "linear-device",
        lambda d: gwprune.ops.linear_packed(
            torch.randn(3, 10, device=d), packed_linear("cpu").to(other_device(d))
        ),
        ValueError,
        ["packed.weight", "but x is on"],
    ),
    (
        "linear-bias",
        lambda d: gwprune.ops.linear_packed(
            torch.randn(3, 10, device=d), packed_linear(d), torch.randn(5, 2, device=d)
        ),
        ValueError,
        ["bias", "(5,)"],
    ),
    (
        "linear-x-int",
        lambda d: gwprune.ops.linear_packed(
            torch.ones(3, 10, dtype=torch.int64, device=d), packed_linear(d)
        ),
        TypeError,
        ["x", "float"],
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "case,call,error,words", PACKED_CALL_ERRORS, ids=[c[0] for c in PACKED_CALL_ERRORS]
)
def test_packed_ops_reject_bad_input(device, case, call, error, words):
    with pytest.raises(error) as info:
        call(device)
    for word in words:
        assert word in str(info.value), f"{case}: {word!r} not in {info.value}"
    assert_device_still_works(device)


def _conv_parts(device):
    packed = packed_conv(device)
    return packed.weight, packed.group_idx


def _linear_parts(device):
    packed = packed_linear(device)
    return packed.weight, packed.feature_idx


# Packed weights built by hand (not by pack_*_weight) that are inconsistent in kind, shape,
# dtype or layout: caught without reading index values (no host sync).
HAND_PACKED = [
    # (case, kind, build(device) -> packed, exception, words)
    (
        "conv-columns-mismatch",
        "conv",
        lambda d: PackedConv2dWeight(
            _conv_parts(d)[0][:, :4].contiguous(), _conv_parts(d)[1], 4, (3, 3)
        ),
        ValueError,
        ["packed.group_idx", "8 entries", "4 columns"],
    ),
    (
        "conv-index-int64",
        "conv",
        lambda d: PackedConv2dWeight(_conv_parts(d)[0], _conv_parts(d)[1].long(), 4, (3, 3)),
        TypeError,
        ["packed.group_idx", "int32"],
    ),
    (
        "conv-index-float",
        "conv",
        lambda d: PackedConv2dWeight(_conv_parts(d)[0], _conv_parts(d)[1].float(), 4, (3, 3)),
        TypeError,
        ["packed.group_idx", "int32"],
    ),
    (
        "conv-index-2d",
        "conv",
        lambda d: PackedConv2dWeight(_conv_parts(d)[0], _conv_parts(d)[1].view(2, 4), 4, (3, 3)),
        ValueError,
        ["packed.group_idx", "1-D"],
    ),
    (
        "conv-weight-3d",
        "conv",
        lambda d: PackedConv2dWeight(_conv_parts(d)[0].view(6, 8, 1), _conv_parts(d)[1], 4, (3, 3)),
        ValueError,
        ["packed.weight", "2-D"],
    ),
    (
        "conv-weight-not-contiguous",
        "conv",
        lambda d: PackedConv2dWeight(torch.randn(8, 6, device=d).t(), _conv_parts(d)[1], 4, (3, 3)),
        ValueError,
        ["packed.weight", "contiguous"],
    ),
    (
        "conv-weight-not-tensor",
        "conv",
        lambda d: PackedConv2dWeight([[0.0] * 8] * 6, _conv_parts(d)[1], 4, (3, 3)),
        TypeError,
        ["packed.weight", "torch.Tensor"],
    ),
    (
        "conv-kernel-size",
        "conv",
        lambda d: PackedConv2dWeight(*_conv_parts(d), 4, (3, 3, 3)),
        TypeError,
        ["packed.kernel_size", "pair"],
    ),
    (
        "linear-columns-mismatch",
        "linear",
        lambda d: PackedLinearWeight(torch.randn(5, 4, device=d), _linear_parts(d)[1], 10),
        ValueError,
        ["packed.feature_idx", "8 entries", "4 columns"],
    ),
    (
        "linear-index-int64",
        "linear",
        lambda d: PackedLinearWeight(_linear_parts(d)[0], _linear_parts(d)[1].long(), 10),
        TypeError,
        ["packed.feature_idx", "int32"],
    ),
    (
        "linear-weight-not-contiguous",
        "linear",
        lambda d: PackedLinearWeight(torch.randn(8, 5, device=d).t(), _linear_parts(d)[1], 10),
        ValueError,
        ["packed.weight", "contiguous"],
    ),
    (
        "linear-weight-1d",
        "linear",
        lambda d: PackedLinearWeight(torch.randn(8, device=d), _linear_parts(d)[1], 10),
        ValueError,
        ["packed.weight", "2-D"],
    ),
    (
        "conv-in-channels-float",
        "conv",
        lambda d: PackedConv2dWeight(*_conv_parts(d), 4.0, (3, 3)),
        TypeError,
        ["packed.in_channels", "int"],
    ),
    (
        "linear-in-features-negative",
        "linear",
        lambda d: PackedLinearWeight(*_linear_parts(d), -10),
        ValueError,
        ["packed.in_features", "non-negative"],
    ),
]


def _call_packed(kind, packed, device):
    if kind == "conv":
        return gwprune.ops.conv2d_packed(torch.randn(2, 4, 8, 8, device=device), packed)
    return gwprune.ops.linear_packed(torch.randn(3, 10, device=device), packed)


@pytest.mark.parametrize(
    "case,kind,build,error,words", HAND_PACKED, ids=[c[0] for c in HAND_PACKED]
)
def test_packed_checks_catch_hand_built_packed_weights(case, kind, build, error, words):
    check = _checks.check_packed_conv2d if kind == "conv" else _checks.check_packed_linear
    x = torch.randn(2, 4, 8, 8) if kind == "conv" else torch.randn(3, 10)
    with pytest.raises(error) as info:
        check(build("cpu"), x)
    for word in words:
        assert word in str(info.value), f"{case}: {word!r} not in {info.value}"
    # A packed weight from pack_*_weight passes the same check.
    check(packed_conv("cpu") if kind == "conv" else packed_linear("cpu"), x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "case,kind,build,error,words", HAND_PACKED, ids=[c[0] for c in HAND_PACKED]
)
def test_packed_ops_reject_hand_built_packed_weights(device, case, kind, build, error, words):
    with pytest.raises(error) as info:
        _call_packed(kind, build(device), device)
    for word in words:
        assert word in str(info.value), f"{case}: {word!r} not in {info.value}"
    assert_device_still_works(device)


# ---- modules ---------------------------------------------------------------------------------

CONV = nn.Conv2d(4, 6, 3, padding=1)
LINEAR = nn.Linear(10, 5)

MODULE_ERRORS = [
    (
        "conv-from-linear",
        lambda: GroupwiseConv2d.from_dense(LINEAR, torch.tensor([1])),
        TypeError,
        ["conv", "nn.Conv2d"],
    ),
    (
        "conv-grouped-keep-out-of-range",
        lambda: GroupwiseConv2d.from_dense(nn.Conv2d(4, 6, 3, groups=2), torch.tensor([36])),
        ValueError,
        ["keep_idx contains 36", "out of range for 36"],
    ),
    (
        "conv-padding-mode",
        lambda: GroupwiseConv2d.from_dense(
            nn.Conv2d(4, 6, 3, padding_mode="reflect"), torch.tensor([1])
        ),
        ValueError,
        ["padding_mode", "reflect"],
    ),
    (
        "conv-keep-list",
        lambda: GroupwiseConv2d.from_dense(CONV, [1, 2]),
        TypeError,
        ["keep_idx", "torch.Tensor"],
    ),
    (
        "conv-keep-out-of-range",
        lambda: GroupwiseConv2d.from_dense(CONV, torch.tensor([36])),
        ValueError,
        ["keep_idx", "36", "out of range"],
    ),
    (
        "conv-keep-negative",
        lambda: GroupwiseConv2d.from_dense(CONV, torch.tensor([-2])),
        ValueError,
        ["keep_idx", "-2"],
    ),
    (
        "conv-keep-duplicate",
        lambda: GroupwiseConv2d.from_dense(CONV, torch.tensor([3, 3])),
        ValueError,
        ["keep_idx", "duplicated"],
    ),
    (
        "conv-keep-float",
        lambda: GroupwiseConv2d.from_dense(CONV, torch.tensor([1.0])),
        TypeError,
        ["keep_idx", "int32 or int64"],
    ),
    (
        "conv-keep-2d",
        lambda: GroupwiseConv2d.from_dense(CONV, torch.tensor([[1]])),
        ValueError,
        ["keep_idx", "1-D"],
    ),
    (
        "conv-keep-bool",
        lambda: GroupwiseConv2d.from_dense(CONV, torch.ones(36, dtype=torch.bool)),
        TypeError,
        ["keep_idx", "mask"],
    ),
    (
        "conv-memory-format",
        lambda: GroupwiseConv2d.from_dense(
            CONV, torch.tensor([1]), memory_format=torch.preserve_format
        ),
        ValueError,
        ["memory_format"],
    ),
    (
        "conv-mask-size",
        lambda: GroupwiseConv2d.from_mask(CONV, torch.ones(4, 3, 2) > 0),
        ValueError,
        ["group_mask", "24 entries", "36 groups"],
    ),
    (
        "conv-mask-list",
        lambda: GroupwiseConv2d.from_mask(CONV, [True] * 36),
        TypeError,
        ["group_mask", "torch.Tensor"],
    ),
    (
        "conv-mask-fraction",
        lambda: GroupwiseConv2d.from_mask(CONV, torch.full((36,), 0.5)),
        ValueError,
        ["group_mask", "0 and 1"],
    ),
    (
        "conv-mask-from-linear",
        lambda: GroupwiseConv2d.from_mask(LINEAR, torch.ones(10) > 0),
        TypeError,
        ["conv", "nn.Conv2d"],
    ),
    (
        "conv-zeroed-from-linear",
        lambda: GroupwiseConv2d.from_zeroed(LINEAR),
        TypeError,
        ["conv", "nn.Conv2d"],
    ),
    (
        "conv-count-too-large",
        lambda: GroupwiseConv2d(4, 6, 3, 37),
        ValueError,
        ["keep_idx", "[0, 36]", "37"],
    ),
    ("conv-count-negative", lambda: GroupwiseConv2d(4, 6, 3, -1), ValueError, ["keep_idx", "-1"]),
    (
        "conv-keep-str",
        lambda: GroupwiseConv2d(4, 6, 3, "3"),
        TypeError,
        ["keep_idx", "torch.Tensor"],
    ),
    (
        "conv-kernel-triple",
        lambda: GroupwiseConv2d(4, 6, (3, 3, 3), 3),
        TypeError,
        ["kernel_size", "pair"],
    ),
    (
        "linear-from-conv",
        lambda: GroupwiseLinear.from_dense(CONV, torch.tensor([1])),
        TypeError,
        ["linear", "nn.Linear"],
    ),
    (
        "linear-keep-out-of-range",
        lambda: GroupwiseLinear.from_dense(LINEAR, torch.tensor([10])),
        ValueError,
        ["keep_idx", "10", "out of range"],
    ),
    (
        "linear-keep-duplicate",
        lambda: GroupwiseLinear.from_dense(LINEAR, torch.tensor([1, 1])),
        ValueError,
        ["keep_idx", "duplicated"],
    ),
    (
        "linear-keep-list",
        lambda: GroupwiseLinear.from_dense(LINEAR, [1]),
        TypeError,
        ["keep_idx", "torch.Tensor"],
    ),
    (
        "linear-mask-size",
        lambda: GroupwiseLinear.from_mask(LINEAR, torch.ones(9) > 0),
        ValueError,
        ["group_mask", "9 entries", "10 groups"],
    ),
    (
        "linear-mask-fraction",
        lambda: GroupwiseLinear.from_mask(LINEAR, torch.full((10,), 0.5)),
        ValueError,
        ["group_mask", "0 and 1"],
    ),
    (
        "linear-zeroed-from-conv",
        lambda: GroupwiseLinear.from_zeroed(CONV),
        TypeError,
        ["linear", "nn.Linear"],
    ),
    (
        "linear-count-too-large",
        lambda: GroupwiseLinear(10, 5, 11),
        ValueError,
        ["keep_idx", "[0, 10]", "11"],
    ),
]


@pytest.mark.parametrize("case,call,error,words", MODULE_ERRORS, ids=[c[0] for c in MODULE_ERRORS])
def test_modules_reject_bad_input(case, call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{case}: {word!r} not in {info.value}"


@pytest.mark.parametrize("device", DEVICES)
def test_module_forward_rejects_bad_input(device):
    dense_conv = copy.deepcopy(CONV).to(device)
    dense_linear = copy.deepcopy(LINEAR).to(device)
    conv = GroupwiseConv2d.from_dense(dense_conv, torch.tensor([1, 7, 20], device=device))
    linear = GroupwiseLinear.from_dense(dense_linear, torch.tensor([0, 9], device=device))
    with pytest.raises(ValueError, match="x has 5 channels"):
        conv(torch.randn(1, 5, 6, 6, device=device))
    with pytest.raises(TypeError, match="packed.weight has dtype"):
        conv(torch.randn(1, 4, 6, 6, dtype=torch.float64, device=device))
    with pytest.raises(ValueError, match="packed.weight is on"):
        conv(torch.randn(1, 4, 6, 6, device=other_device(device)))
    with pytest.raises(ValueError, match="output size"):
        conv(torch.randn(1, 4, 0, 6, device=device))
    with pytest.raises(ValueError, match="x has 9 features"):
        linear(torch.randn(2, 9, device=device))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        linear([[0.0] * 10])
    assert_device_still_works(device)


@pytest.mark.parametrize(
    "keep", [torch.tensor([40]), torch.tensor([1, 1]), torch.tensor([1.5])], ids=str
)
def test_module_constructors_validate_index_tensors(keep):
    with pytest.raises((ValueError, TypeError), match="keep_idx"):
        GroupwiseConv2d(4, 6, 3, keep)


def test_module_state_dict_indices_are_validated_at_load():
    module = GroupwiseConv2d.from_dense(CONV, torch.tensor([1, 2, 3]))
    state = module.state_dict()
    state["group_idx"] = torch.tensor([1, 2, 999, -1, -1, -1, -1, -1], dtype=torch.int32)
    with pytest.raises(ValueError, match="group_idx"):
        GroupwiseConv2d(4, 6, 3, 3, padding=1).load_state_dict(state)


def test_integer_masks_must_hold_zeros_and_ones():
    with pytest.raises(ValueError, match="group_mask"):
        GroupwiseConv2d.from_mask(CONV, torch.full((36,), 2))


# ---- zero-size dimensions ------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_zero_size_conv_dimensions(device, layout):
    from conftest import poisoned_outputs

    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    bias = torch.randn(6, device=device)
    with poisoned_outputs(device):
        # No images: an empty output of the right shape, raw and packed.
        x = torch.randn(0, 4, 8, 8, device=device).contiguous(memory_format=fmt)
        assert gwprune.ops.conv2d(
            x, torch.randn(6, 4, 3, 3, device=device), torch.tensor([0, 7], device=device), bias
        ).shape == (0, 6, 6, 6)
        assert gwprune.ops.conv2d_packed(x, packed_conv(device), bias).shape == (0, 6, 6, 6)
        # No input channels: nothing to sum, the output is the bias (F.conv2d agrees on values
        # but returns 0 output channels here, which is PyTorch's own quirk).
        x = torch.randn(2, 0, 8, 8, device=device).contiguous(memory_format=fmt)
        empty_keep = torch.empty(0, dtype=torch.long, device=device)
        out = gwprune.ops.conv2d(x, torch.randn(6, 0, 3, 3, device=device), empty_keep, bias)
        assert torch.equal(out, bias.view(1, 6, 1, 1).expand(2, 6, 6, 6))
        # An empty image with padding: every tap reads padding, the output is the bias
        # (F.conv2d refuses this input; gwprune returns the mathematical answer).
        x = torch.randn(2, 4, 0, 5, device=device).contiguous(memory_format=fmt)
        out = gwprune.ops.conv2d(
            x,
            torch.randn(6, 4, 1, 1, device=device),
            torch.arange(4, device=device),
            bias,
            padding=1,
        )
        assert torch.equal(out, bias.view(1, 6, 1, 1).expand(2, 6, 2, 7))
    assert_device_still_works(device)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_size_linear_dimensions(device):
    from conftest import poisoned_outputs

    bias = torch.randn(5, device=device)
    with poisoned_outputs(device):
        no_features = gwprune.ops.linear(
            torch.randn(3, 0, device=device),
            torch.randn(5, 0, device=device),
            torch.empty(0, dtype=torch.int32, device=device),
            bias,
        )
        assert torch.equal(no_features, bias.expand(3, 5))
        no_outputs = gwprune.ops.linear(
            torch.randn(3, 4, device=device),
            torch.randn(0, 4, device=device),
            torch.tensor([1, 3], device=device),
        )
        assert no_outputs.shape == (3, 0)
        no_rows = gwprune.ops.linear_packed(
            torch.randn(2, 0, 10, device=device), packed_linear(device)
        )
        assert no_rows.shape == (2, 0, 5)
    assert_device_still_works(device)


def test_packing_a_conv_weight_with_no_output_channels_is_clean():
    try:
        gwprune.pack_conv2d_weight(torch.randn(0, 4, 3, 3), torch.tensor([1]))
    except ValueError as error:
        assert "weight" in str(error)


# ---- the CUDA kernels' per-image 32-bit limits -------------------------------------------------


LIMIT_CASES = [
    # (case, x shape, weight shape, conv kwargs, words)
    ("dilated-reach", (1, 1, 40001, 1), (1, 1, 2, 1), {"dilation": (40000, 1)}, ["32767"]),
    ("padding-reach", (1, 1, 1, 1), (1, 1, 1, 1), {"padding": (0, 32768)}, ["32767", "width"]),
    ("image-pixels", (1, 1, 65536, 32768), (1, 1, 1, 1), {}, ["H*W", "2^31"]),
    ("output-pixels", (1, 1, 46000, 46000), (1, 1, 1, 1), {"padding": 300}, ["Ho*Wo", "2^31"]),
]


@pytest.mark.parametrize(
    "case,x_shape,w_shape,kwargs,words", LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES]
)
def test_cuda_conv_limits_are_checked_in_python(monkeypatch, case, x_shape, w_shape, kwargs, words):
    """The check itself, without a GPU: a stand-in x that claims to be on CUDA."""
    monkeypatch.setattr(_checks, "cuda_kernels_compiled", lambda: True)
    x = types.SimpleNamespace(device=torch.device("cuda"), shape=x_shape)
    kernel = w_shape[2:]
    stride, padding, dilation = 1, kwargs.get("padding", 0), kwargs.get("dilation", 1)
    pad = _checks.as_pair(padding, "padding", 0)
    dil = _checks.as_pair(dilation, "dilation", 1)
    out_hw = tuple(
        _checks.conv_out_size(x_shape[2 + d], kernel[d], stride, pad[d], dil[d]) for d in range(2)
    )
    with pytest.raises(ValueError) as info:
        _checks.check_cuda_conv_limits(x, x_shape[1], kernel, pad, dil, out_hw)
    for word in words:
        assert word in str(info.value), f"{case}: {word!r} not in {info.value}"
    # The same conv is fine for the CPU path, which has no such limit.
    _checks.check_cuda_conv_limits(
        types.SimpleNamespace(device=torch.device("cpu"), shape=x_shape),
        x_shape[1],
        kernel,
        pad,
        dil,
        out_hw,
    )


@pytest.mark.cuda
@pytest.mark.parametrize(
    "case,x_shape,w_shape,kwargs,words", LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES]
)
def test_cuda_conv_limits_raise_cleanly(case, x_shape, w_shape, kwargs, words):
    # An expanded scalar stands in for a huge input: no memory, and the check runs first.
    x = torch.ones(1, 1, 1, 1, device="cuda").expand(*x_shape)
    weight = torch.randn(*w_shape, device="cuda")
    keep = torch.arange(weight[0].numel(), device="cuda")
    for call in (
        lambda: gwprune.ops.conv2d(x, weight, keep, **kwargs),
        lambda: gwprune.ops.conv2d_packed(x, gwprune.pack_conv2d_weight(weight, keep), **kwargs),
    ):
        with pytest.raises(ValueError) as info:
            call()
        for word in words:
            assert word in str(info.value), f"{case}: {word!r} not in {info.value}"
    assert_device_still_works("cuda")
