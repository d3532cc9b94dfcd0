"""The C++ eager entries (gwprune._C.*_eager) against the Python checks they replace.

A CUDA call of gwprune.ops goes straight to one of them, so each must raise, for every bad
argument of tests/test_validation.py, the same exception type with the same message as the
Python path. They are called directly here, also with CPU tensors: the checks do not care
about the device, and a CPU call that passes them ends at the CPU refusal of the op (or,
once CPU kernels are compiled, returns the result)."""

import pytest
import torch
from conftest import DEVICES
from test_validation import (
    CONV_ERRORS,
    HAND_PACKED,
    LINEAR_ERRORS,
    conv_args,
    linear_args,
    other_device,
    packed_conv,
    packed_linear,
)

import gwprune
from gwprune import _checks, pack_cache
from gwprune._extension import _C

pytestmark = pytest.mark.skipif(_C is None, reason="gwprune._C is not built")

WORKSPACE = 1 << 20
CPU_REFUSAL = "runs CUDA tensors only"
# Arguments whose checks run in the eager entries; the others (weight shape, keep_idx,
# groups) are checked by Python when the weight is packed, before any entry is reached.
CONV_CALL_ARGS = {"x", "bias", "stride", "padding", "dilation"}
LINEAR_CALL_ARGS = {"x", "bias"}


def outcome(call):
    """(exception type, message), or ("ok", result)."""
    try:
        return "ok", call()
    except Exception as error:  # noqa: BLE001  (compared below, whatever it is)
        return type(error), str(error)


def assert_same_outcome(python, cpp, case):
    if python[0] == "ok":
        if cpp[0] == "ok":
            torch.testing.assert_close(cpp[1], python[1])
        else:  # the CPU path of a CPU-only build: every check passed, then the refusal
            assert cpp[0] is ValueError and CPU_REFUSAL in cpp[1], f"{case}: {cpp}"
        return
    assert cpp == python, f"{case}:\n  C++:    {cpp}\n  Python: {python}"


def conv_layout(x):
    return pack_cache.conv2d_layout(x) if isinstance(x, torch.Tensor) else pack_cache.CONV_NCHW


def cached_call_outcome(call, layout, weight, keep_idx, packed_tensors, x):
    """The outcome of gwprune._C.conv2d_cached / linear_cached (the pack cache's hit path)
    on a weight the cache holds (its packed tensors stored as an earlier call would have,
    but also for a weight no call would pack: on another device or of another dtype than
    x). A miss returns None, which the public op answers with the Python path: only an x
    that is not a tensor may miss here."""
    gwprune.clear_pack_cache()
    versions = (weight._version, keep_idx._version)
    assert _C.pack_cache_insert(weight, keep_idx, layout, *versions, *packed_tensors, -1)
    result = outcome(lambda: call(weight, keep_idx))
    gwprune.clear_pack_cache()
    if result == ("ok", None):
        assert not isinstance(x, torch.Tensor), "a miss on a cached weight"
        return outcome(lambda: _checks.check_float_tensor(x, "x"))
    return result


def weight_override(overrides, base_shape):
    """The overridden weight when it keeps the base shape (dtype or device changes)."""
    weight = overrides.get("weight")
    if isinstance(weight, torch.Tensor) and tuple(weight.shape) == base_shape:
        return weight
    return None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,make", [pytest.param(c[0], c[1], id=c[0]) for c in CONV_ERRORS])
def test_conv_entries_raise_what_python_raises(device, case, make):
    overrides = make(device)
    changed = set(overrides)
    new_weight = weight_override(overrides, (6, 4, 3, 3))
    if not changed <= CONV_CALL_ARGS | ({"weight"} if new_weight is not None else set()):
        pytest.skip("checked when packing, by Python")
    args = conv_args(device, **overrides)
    base = conv_args(device)
    packed = gwprune.pack_conv2d_weight(base["weight"], base["keep_idx"])
    if new_weight is not None:
        packed = packed.to(device=new_weight.device, dtype=new_weight.dtype)
        args["keep_idx"] = args["keep_idx"].to(new_weight.device)
    call = (args["x"], args["bias"], args["stride"], args["padding"], args["dilation"])
    x, bias, stride, padding, dilation = call

    raw_python = outcome(lambda: gwprune.ops.conv2d(**args))
    raw_cpp = outcome(
        lambda: _C.conv2d_cached_eager(
            x, packed.weight, packed.group_idx, bias, 4, 3, 3, stride, padding, dilation,
            WORKSPACE, -1,
        )
    )  # fmt: skip
    assert_same_outcome(raw_python, raw_cpp, f"{case} (raw call from the pack cache)")
    raw_hit = cached_call_outcome(
        lambda w, k: _C.conv2d_cached(x, w, k, bias, stride, padding, dilation, WORKSPACE),
        conv_layout(x),
        new_weight if new_weight is not None else base["weight"],
        args["keep_idx"] if new_weight is not None else base["keep_idx"],
        (packed.weight, packed.group_idx),
        x,
    )
    assert_same_outcome(raw_python, raw_hit, f"{case} (raw call, the cache's hit path)")

    packed_python = outcome(lambda: gwprune.ops.conv2d_packed(x, packed, *call[1:]))
    packed_cpp = outcome(
        lambda: _C.conv2d_packed_eager(
            x, packed.weight, packed.group_idx, bias, packed.in_channels, packed.kernel_size,
            stride, padding, dilation, WORKSPACE,
        )
    )  # fmt: skip
    assert_same_outcome(packed_python, packed_cpp, f"{case} (packed call)")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,make", [pytest.param(c[0], c[1], id=c[0]) for c in LINEAR_ERRORS])
def test_linear_entries_raise_what_python_raises(device, case, make):
    overrides = make(device)
    new_weight = weight_override(overrides, (5, 10))
    allowed = LINEAR_CALL_ARGS | ({"weight"} if new_weight is not None else set())
    if not set(overrides) <= allowed:
        pytest.skip("checked when packing, by Python")
    args = linear_args(device, **overrides)
    base = linear_args(device)
    packed = gwprune.pack_linear_weight(base["weight"], base["keep_idx"])
    if new_weight is not None:
        packed = packed.to(device=new_weight.device, dtype=new_weight.dtype)
        args["keep_idx"] = args["keep_idx"].to(new_weight.device)
    x, bias = args["x"], args["bias"]

    raw_python = outcome(lambda: gwprune.ops.linear(**args))
    raw_cpp = outcome(
        lambda: _C.linear_cached_eager(
            x, packed.weight, packed.feature_idx, bias, 10, WORKSPACE, -1
        )
    )
    assert_same_outcome(raw_python, raw_cpp, f"{case} (raw call from the pack cache)")
    raw_hit = cached_call_outcome(
        lambda w, k: _C.linear_cached(x, w, k, bias, WORKSPACE),
        pack_cache.LINEAR,
        new_weight if new_weight is not None else base["weight"],
        args["keep_idx"] if new_weight is not None else base["keep_idx"],
        (packed.weight, packed.feature_idx),
        x,
    )
    assert_same_outcome(raw_python, raw_hit, f"{case} (raw call, the cache's hit path)")

    packed_python = outcome(lambda: gwprune.ops.linear_packed(x, packed, bias))
    packed_cpp = outcome(
        lambda: _C.linear_packed_eager(
            x, packed.weight, packed.feature_idx, bias, packed.in_features, WORKSPACE
        )
    )
    assert_same_outcome(packed_python, packed_cpp, f"{case} (packed call)")


def _packed_entry(kind, packed, x):
    if kind == "conv":
        return _C.conv2d_packed_eager(
            x, packed.weight, packed.group_idx, None, packed.in_channels, packed.kernel_size,
            1, 0, 1, WORKSPACE,
        )  # fmt: skip
    return _C.linear_packed_eager(
        x, packed.weight, packed.feature_idx, None, packed.in_features, WORKSPACE
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,kind,build", [pytest.param(*c[:3], id=c[0]) for c in HAND_PACKED])
def test_packed_entries_check_hand_built_packed_weights(device, case, kind, build):
    packed = build(device)
    x = torch.randn(2, 4, 8, 8, device=device) if kind == "conv" else torch.randn(3, 10)
    x = x.to(device)
    python = outcome(
        lambda: (gwprune.ops.conv2d_packed if kind == "conv" else gwprune.ops.linear_packed)(
            x, packed
        )
    )
    assert_same_outcome(python, outcome(lambda: _packed_entry(kind, packed, x)), case)


ODD_ARGUMENTS = [
    # Accepted by the Python path's rules (abc.Sequence of ints): the entries defer to it.
    ("stride-size", {"stride": torch.Size([1, 1])}),
    ("padding-list", {"padding": [1, 1]}),
    ("stride-int-subclass", {"stride": type("Int", (int,), {})(1)}),
    # Refused: the Python path's own error.
    ("stride-bool", {"stride": True}),
    ("x-other-device", {"x": torch.randn(2, 4, 8, 8, device="meta")}),
]


@pytest.mark.parametrize("case,overrides", ODD_ARGUMENTS, ids=[c[0] for c in ODD_ARGUMENTS])
def test_odd_arguments_behave_as_in_python(case, overrides):
    args = conv_args("cpu", **overrides)
    packed = gwprune.pack_conv2d_weight(args["weight"], args["keep_idx"])
    rest = (args["bias"], args["stride"], args["padding"], args["dilation"])
    python = outcome(lambda: gwprune.ops.conv2d_packed(args["x"], packed, *rest))
    cpp = outcome(
        lambda: _C.conv2d_packed_eager(
            args["x"], packed.weight, packed.group_idx, *rest[:1], packed.in_channels,
            packed.kernel_size, *rest[1:], WORKSPACE,
        )
    )  # fmt: skip
    assert_same_outcome(python, cpp, case)


def test_string_padding_is_resolved_before_the_entry():
    # gwprune.ops turns 'same' / 'valid' into numbers (conv_padding.py) and never hands a
    # string to an eager entry; called directly, the entry refuses it by name.
    args = conv_args("cpu")
    packed = gwprune.pack_conv2d_weight(args["weight"], args["keep_idx"])
    with pytest.raises(ValueError, match="padding='same' is resolved by gwprune.ops"):
        _C.conv2d_packed_eager(
            args["x"], packed.weight, packed.group_idx, None, 4, (3, 3), 1, "same", 1, WORKSPACE
        )


def test_ints_beyond_64_bits_are_refused_naming_the_argument():
    # Python accepts them and fails on the output size; C++ cannot hold them.
    args = conv_args("cpu")
    packed = gwprune.pack_conv2d_weight(args["weight"], args["keep_idx"])
    with pytest.raises(ValueError, match="gwprune: dilation must be a pair of 64-bit ints"):
        _C.conv2d_packed_eager(
            args["x"], packed.weight, packed.group_idx, None, 4, (3, 3), 1, 0, 2**80, WORKSPACE
        )
    with pytest.raises(ValueError, match="gwprune: packed.in_channels must fit in 64 bits"):
        _C.conv2d_packed_eager(
            args["x"], packed.weight, packed.group_idx, None, 2**70, (3, 3), 1, 0, 1, WORKSPACE
        )


def test_other_device_is_named_like_python():
    # The device spelling (cuda:0, cpu, meta) of the messages.
    x = torch.randn(3, 10)
    packed = packed_linear("cpu").to(other_device("cpu"))
    python = outcome(lambda: gwprune.ops.linear_packed(x, packed))
    cpp = outcome(
        lambda: _C.linear_packed_eager(x, packed.weight, packed.feature_idx, None, 10, WORKSPACE)
    )
    assert python[0] is ValueError and cpp == python


@pytest.mark.parametrize("device", DEVICES)
def test_valid_calls_pass_every_check(device):
    args = conv_args(device)
    packed = packed_conv(device)
    x, bias = args["x"], args["bias"]
    expected = {
        with_bias: gwprune.reference.conv2d_packed(
            x, packed.weight, packed.group_idx, bias if with_bias else None, (3, 3), (1, 1),
            (1, 1), (1, 1),
        )
        for with_bias in (True, False)
    }  # fmt: skip
    calls = {
        "packed": (
            True,
            lambda: _C.conv2d_packed_eager(
                x, packed.weight, packed.group_idx, bias, 4, (3, 3), 1, (1, 1), [1, 1], WORKSPACE
            ),
        ),
        "cached": (
            False,
            lambda: _C.conv2d_cached_eager(
                x, packed.weight, packed.group_idx, None, 4, 3, 3, 1, 1, 1, WORKSPACE, -1
            ),
        ),
    }
    for name, (with_bias, call) in calls.items():
        result = outcome(call)
        if device == "cpu" and result[0] != "ok":
            assert result[0] is ValueError and CPU_REFUSAL in result[1], f"{name}: {result}"
        else:
            assert result[0] == "ok", f"{name}: {result}"
            torch.testing.assert_close(result[1], expected[with_bias], rtol=1e-5, atol=1e-5)


# ---- the public functions' calls into the entries ---------------------------------------
# On a GPU machine every CUDA test goes through them; here the lean path is forced open for
# CPU tensors, so the real entries receive what the public functions pass: the arguments
# arrive in the right order (every check passes, then the CPU refusal) and bad ones raise
# what the Python path raises.


@pytest.fixture
def forced_eager(monkeypatch):
    from gwprune import ops

    monkeypatch.setattr(ops, "_eager_call", lambda x, w, b: isinstance(x, torch.Tensor))
    gwprune.clear_pack_cache()
    yield
    gwprune.clear_pack_cache()


def assert_refused_after_checks(call, case):
    """The call went through the eager entry's checks to the op: a _C without CPU kernels
    refuses the CPU tensors there; one with them (csrc/cpu) returns the op's result, which
    must equal the Python path's (the entry's argument order is what is checked)."""
    from gwprune import ops

    if not gwprune.cpu_kernels_compiled():
        with pytest.raises(ValueError, match=CPU_REFUSAL) as info:
            call()
        assert "runs CUDA tensors only" in str(info.value), case
        return
    through_entry = call()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ops, "_eager_call", lambda x, w, b: False)
        through_python = call()
    torch.testing.assert_close(through_entry, through_python, msg=case)


@pytest.mark.parametrize("channels_last", [False, True])
def test_public_conv_calls_reach_the_entries(forced_eager, channels_last):
    args = conv_args("cpu")
    if channels_last:
        args["x"] = args["x"].contiguous(memory_format=torch.channels_last)
    packed = gwprune.pack_conv2d_weight(args["weight"], args["keep_idx"])
    x, bias = args["x"], args["bias"]
    assert_refused_after_checks(lambda: gwprune.ops.conv2d_packed(x, packed, bias, 1, 1), "packed")
    module = gwprune.GroupwiseConv2d.from_dense(
        torch.nn.Conv2d(4, 6, 3, padding=(1, 1), stride=(1, 1)), args["keep_idx"]
    ).eval()
    assert_refused_after_checks(lambda: module(x), "module")
    gwprune.ops.conv2d(**args)  # a miss: the Python path packs and caches
    assert_refused_after_checks(lambda: gwprune.ops.conv2d(**args), "raw, from the cache")
    with pytest.raises(ValueError, match="stride must be positive"):
        gwprune.ops.conv2d(**{**args, "stride": (1, 0)})
    with pytest.raises(TypeError, match="bias must be a torch.Tensor, got list"):
        gwprune.ops.conv2d(**{**args, "bias": [0.0] * 6})
    with pytest.raises(ValueError, match="x has 5 channels but weight expects 4"):
        gwprune.ops.conv2d(**{**args, "x": torch.randn(2, 5, 8, 8)})


def test_public_linear_calls_reach_the_entries(forced_eager):
    args = linear_args("cpu")
    packed = gwprune.pack_linear_weight(args["weight"], args["keep_idx"])
    x, bias = args["x"], args["bias"]
    assert_refused_after_checks(lambda: gwprune.ops.linear_packed(x, packed, bias), "packed")
    module = gwprune.GroupwiseLinear.from_dense(torch.nn.Linear(10, 5), args["keep_idx"])
    assert_refused_after_checks(lambda: module(x), "module")
    gwprune.ops.linear(**args)
    assert_refused_after_checks(lambda: gwprune.ops.linear(**args), "raw, from the cache")
    with pytest.raises(ValueError, match="x has 9 features in its last dimension"):
        gwprune.ops.linear(**{**args, "x": torch.randn(3, 9)})
    with pytest.raises(TypeError, match="weight has dtype torch.float32 but x has dtype"):
        gwprune.ops.linear(**{**args, "x": args["x"].double()})
