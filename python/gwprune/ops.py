"""Public inference ops: group-wise conv2d and linear.

Each op is a ``torch.library.custom_op`` (so ``torch.compile`` and
``torch.library.opcheck`` see one opaque op with a fake implementation) over
the pybind11 functions of ``gwprune._C`` (CUDA kernels; CPU kernels of csrc/cpu) and, where
``_C`` lacks a device's kernels, over ``gwprune.reference``. No autograd: these are
inference ops.

An eager call with a CUDA ``x`` (or a CPU one, with the CPU kernels) skips all of that: the
public function tests that it may (``_eager_call``) and makes one call into
``gwprune._C``'s eager entry, which runs the checks of ``_checks.py`` in C++ (same order,
types and messages) and then the op.

Raw ops take a dense-shaped weight plus ``keep_idx``; the first call with them validates
``keep_idx`` (one host sync when it lives on a GPU) and packs, later calls reuse the packed
weight from ``gwprune.pack_cache`` (an eager hit: one call, ``gwprune._C.conv2d_cached`` /
``linear_cached``, which looks the weight up in the C++ store, checks and runs the op).
Packed ops take a weight compacted once by ``pack_conv2d_weight`` / ``pack_linear_weight``:
their forward is gather + GEMM only, with no sync.
"""

import logging

import torch

from . import _checks, pack_cache, reference
from ._config import get_workspace_limit, resolve_conv_backend
from ._extension import _C, cpu_kernels_compiled, cuda_kernels_compiled
from ._layout import conv_output_memory_format
from .activation import check_activation, op_argument
from .conv_padding import apply_string_padding
from .grouped import run_conv_groups
from .groups import (  # noqa: F401  (re-exported: the seed's two ways of marking groups)
    group_mask_from_keep_idx,
    keep_idx_from_mask,
    keep_idx_from_zeroed,
    mask_weight,
    num_groups,
)
from .packing import (
    PackedConv2dWeight,
    PackedLinearWeight,
    pack_conv2d_weight,
    pack_linear_weight,
)

__all__ = [
    "conv2d",
    "conv2d_packed",
    "linear",
    "linear_packed",
    "pack_conv2d_weight",
    "pack_linear_weight",
    "PackedConv2dWeight",
    "PackedLinearWeight",
    "keep_idx_from_mask",
    "keep_idx_from_zeroed",
    "group_mask_from_keep_idx",
    "mask_weight",
]

logger = logging.getLogger("gwprune")
_warned_fallback = False
_CUDA_KERNELS = cuda_kernels_compiled()
_CPU_KERNELS = cpu_kernels_compiled()


def _use_cuda_kernels(x: torch.Tensor) -> bool:
    if x.device.type != "cuda":
        return False
    if cuda_kernels_compiled():
        return True
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        logger.warning("gwprune: CUDA kernels not compiled; CUDA tensors use the reference path")
    return False


def _run_conv2d_packed(
    x,
    weight,
    group_idx,
    bias,
    kernel_size,
    stride,
    padding,
    dilation,
    workspace_bytes,
    backend="auto",
    activation="none",
):
    # CPU tensors: csrc/cpu's kernels; the reference path only with no (or an old) _C.
    if _use_cuda_kernels(x) or (x.device.type == "cpu" and cpu_kernels_compiled()):
        return _C.conv2d_packed(
            x,
            weight,
            group_idx,
            bias,
            kernel_size,
            stride,
            padding,
            dilation,
            workspace_bytes,
            backend,
            activation,
        )
    return reference.conv2d_packed(
        x, weight, group_idx, bias, kernel_size, stride, padding, dilation, activation
    )


def _run_linear_packed(x, weight, feature_idx, bias, workspace_bytes, activation="none"):
    if _use_cuda_kernels(x) or (x.device.type == "cpu" and cpu_kernels_compiled()):
        return _C.linear_packed(x, weight, feature_idx, bias, workspace_bytes, activation)
    return reference.linear_packed(x, weight, feature_idx, bias, activation)


def _conv2d_empty_like_output(x, out_channels, kernel_size, stride, padding, dilation):
    out_h, out_w = (
        _checks.conv_out_size(x.shape[2 + d], kernel_size[d], stride[d], padding[d], dilation[d])
        for d in range(2)
    )
    return torch.empty(
        (x.shape[0], out_channels, out_h, out_w),
        dtype=x.dtype,
        device=x.device,
        memory_format=conv_output_memory_format(x),
    )


# ---- registered ops -------------------------------------------------------------------
# Eager calls go straight to the *_impl functions (the custom-op dispatcher costs tens of
# microseconds a call, as much as a small layer's GPU time); under torch.compile the
# registered ops are used, so the compiled graph holds one opaque op with its fake.


def _requires_grad(value) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


def _eager_call(x, weight, bias) -> bool:
    """Whether this call goes straight to gwprune._C's eager entry, which checks the
    arguments as this module does and runs the op: x is a CUDA tensor and the CUDA kernels
    are compiled, or a CPU tensor and the CPU kernels are (csrc/cpu), torch.compile is not
    tracing, and autograd has nothing to record (else the registered op runs, so that a
    backward fails loudly)."""
    if not isinstance(x, torch.Tensor):
        return False
    # is_cuda / is_cpu, not x.device.type: building the device object costs 0.5 us a call.
    if not ((x.is_cuda and _CUDA_KERNELS) or (x.is_cpu and _CPU_KERNELS)):
        return False
    if torch.compiler.is_compiling():
        return False
    if torch.is_grad_enabled():
        return not (x.requires_grad or _requires_grad(weight) or _requires_grad(bias))
    return True


def _registered_or_eager(op, impl, *tensors):
    """The registered op under torch.compile, or when autograd would record the call (so
    a backward fails loudly: these ops have no gradient); else the implementation."""
    if torch.compiler.is_compiling():
        return op
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return op
    return impl


def _conv2d_packed_impl(
    x: torch.Tensor,
    weight: torch.Tensor,
    group_idx: torch.Tensor,
    bias: torch.Tensor | None,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    workspace_bytes: int,
    backend: str = "auto",
    activation: str = "none",
) -> torch.Tensor:
    return _run_conv2d_packed(
        x,
        weight,
        group_idx,
        bias,
        kernel_size,
        stride,
        padding,
        dilation,
        workspace_bytes,
        backend,
        activation,
    )


_conv2d_packed_op = torch.library.custom_op(
    "gwprune::conv2d_packed", _conv2d_packed_impl, mutates_args=()
)


@_conv2d_packed_op.register_fake
def _(
    x,
    weight,
    group_idx,
    bias,
    kernel_size,
    stride,
    padding,
    dilation,
    workspace_bytes,
    backend="auto",
    activation="none",
):
    return _conv2d_empty_like_output(x, weight.shape[0], kernel_size, stride, padding, dilation)


def _conv2d_impl(
    x: torch.Tensor,
    weight: torch.Tensor,
    keep_idx: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    workspace_bytes: int,
    backend: str,
) -> torch.Tensor:
    entry = pack_cache.conv2d_entry(weight, keep_idx, pack_cache.conv2d_layout(x))
    pack_cache.record_use(entry)
    packed = entry.packed
    return _run_conv2d_packed(
        x,
        packed.weight,
        packed.group_idx,
        bias,
        list(packed.kernel_size),
        stride,
        padding,
        dilation,
        workspace_bytes,
        backend,
    )


_conv2d_op = torch.library.custom_op("gwprune::conv2d", _conv2d_impl, mutates_args=())


@_conv2d_op.register_fake
def _(x, weight, keep_idx, bias, stride, padding, dilation, workspace_bytes, backend):
    kernel_size = (weight.shape[2], weight.shape[3])
    return _conv2d_empty_like_output(x, weight.shape[0], kernel_size, stride, padding, dilation)


def _linear_packed_impl(
    x: torch.Tensor,
    weight: torch.Tensor,
    feature_idx: torch.Tensor,
    bias: torch.Tensor | None,
    workspace_bytes: int,
    activation: str = "none",
) -> torch.Tensor:
    return _run_linear_packed(x, weight, feature_idx, bias, workspace_bytes, activation)


_linear_packed_op = torch.library.custom_op(
    "gwprune::linear_packed", _linear_packed_impl, mutates_args=()
)


@_linear_packed_op.register_fake
def _(x, weight, feature_idx, bias, workspace_bytes, activation="none"):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _linear_impl(
    x: torch.Tensor,
    weight: torch.Tensor,
    keep_idx: torch.Tensor,
    bias: torch.Tensor | None,
    workspace_bytes: int,
) -> torch.Tensor:
    entry = pack_cache.linear_entry(weight, keep_idx)
    pack_cache.record_use(entry)
    packed = entry.packed
    return _run_linear_packed(x, packed.weight, packed.feature_idx, bias, workspace_bytes)


_linear_op = torch.library.custom_op("gwprune::linear", _linear_impl, mutates_args=())


@_linear_op.register_fake
def _(x, weight, keep_idx, bias, workspace_bytes):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


# ---- public API ------------------------------------------------------------------------


def conv2d(
    x, weight, keep_idx, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None
):
    """Group-wise pruned ``F.conv2d``.

    ``x`` is ``[N, C, H, W]`` (NCHW or channels_last; the output follows x's
    layout), ``weight`` the dense-shaped ``[Cout, C, kh, kw]`` (values of pruned
    groups are ignored), ``keep_idx`` a 1-D int32/int64 tensor of kept flat
    ``(c, i, j)`` indices into ``weight.reshape(Cout, -1)``'s columns. Equals
    ``F.conv2d(x, mask_weight(weight, keep_idx, groups), bias, stride, padding, dilation,
    groups)``. ``padding`` may be ``'same'`` or ``'valid'`` as for ``F.conv2d``. With
    ``groups`` > 1 the weight is ``[Cout, C/groups, kh, kw]`` and ``keep_idx`` numbers
    ``(c, i, j)`` over all C input channels (``gwprune.groups``); each conv group runs as
    one gather + GEMM. ``backend`` picks the CUDA path (``"auto"``, ``"implicit"``,
    ``"explicit"``; None: ``gwprune.get_conv_backend()``).
    """
    backend = resolve_conv_backend(backend)
    # The lean path serves ungrouped convs with numeric padding (the cache packs those).
    lean = type(groups) is int and groups == 1 and not isinstance(padding, str)
    if lean and _eager_call(x, weight, bias):
        # One call: the pack-cache lookup, the checks and the op in C++; None on a miss.
        out = _C.conv2d_cached(
            x, weight, keep_idx, bias, stride, padding, dilation, get_workspace_limit(), backend
        )
        if out is not None:
            return out
    _checks.check_float_tensor(x, "x")
    _checks.check_conv2d_weight(weight, x)
    _checks.check_groups_arg(groups, weight.shape[0], "output channels of weight")
    if groups != 1:
        packed = pack_conv2d_weight(weight, keep_idx, conv_output_memory_format(x), groups)
        return conv2d_packed(x, packed, bias, stride, padding, dilation, backend=backend)
    kernel_size = (weight.shape[2], weight.shape[3])
    x, padding = apply_string_padding(x, padding, kernel_size, stride, dilation)
    stride, padding, dilation, _ = _checks.check_conv2d_input(
        x, weight.shape[1], kernel_size, stride, padding, dilation
    )
    _checks.check_index_meta(
        keep_idx,
        "keep_idx",
        x,
        "x",
        weight.shape[1] * kernel_size[0] * kernel_size[1],
        "groups (C*kh*kw of weight)",
    )
    _checks.check_bias(bias, x, weight.shape[0], "out_channels")
    return _registered_or_eager(_conv2d_op, _conv2d_impl, x, weight, bias)(
        x,
        weight,
        keep_idx,
        bias,
        list(stride),
        list(padding),
        list(dilation),
        get_workspace_limit(),
        backend,
    )


def conv2d_packed(
    x,
    packed: PackedConv2dWeight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    *,
    activation=None,
    backend=None,
):
    """Group-wise conv2d on a weight packed once by ``pack_conv2d_weight``: gather + GEMM only.
    ``activation`` (None, 'relu', 'relu6', 'silu', 'gelu', 'gelu_tanh': ``gwprune.activation``)
    is applied to the output, in the GEMM's epilogue where cuBLASLt has one; ``backend`` as
    for ``conv2d``."""
    backend = resolve_conv_backend(backend)
    if not isinstance(packed, PackedConv2dWeight):
        raise TypeError(
            f"gwprune: packed must be a PackedConv2dWeight, got {type(packed).__name__}"
        )
    lean = packed.groups == 1 and not isinstance(padding, str)
    if lean and _eager_call(x, packed.weight, bias):
        return _C.conv2d_packed_eager(
            x,
            packed.weight,
            packed.group_idx,
            bias,
            packed.in_channels,
            packed.kernel_size,
            stride,
            padding,
            dilation,
            get_workspace_limit(),
            backend,
            op_argument(check_activation(activation)),
        )
    _checks.check_float_tensor(x, "x")
    _checks.check_packed_conv2d(packed, x)
    activation = check_activation(activation)
    x, padding = apply_string_padding(x, padding, packed.kernel_size, stride, dilation)
    stride, padding, dilation, _ = _checks.check_conv2d_input(
        x, packed.in_channels, packed.kernel_size, stride, padding, dilation
    )
    _checks.check_bias(bias, x, packed.weight.shape[0], "out_channels")
    if packed.groups != 1:
        return run_conv_groups(
            x,
            packed,
            bias,
            lambda x, part, part_bias: conv2d_packed(
                x,
                part,
                part_bias,
                stride,
                padding,
                dilation,
                activation=activation,
                backend=backend,
            ),
        )
    return _registered_or_eager(_conv2d_packed_op, _conv2d_packed_impl, x, packed.weight, bias)(
        x,
        packed.weight,
        packed.group_idx,
        bias,
        list(packed.kernel_size),
        list(stride),
        list(padding),
        list(dilation),
        get_workspace_limit(),
        backend,
        op_argument(activation),
    )


def linear(x, weight, keep_idx, bias=None):
    """Group-wise pruned ``F.linear``: ``x [..., in]``, ``weight [out, in]``,
    ``keep_idx`` the kept input features. Equals
    ``F.linear(x, mask_weight(weight, keep_idx), bias)``."""
    if _eager_call(x, weight, bias):
        out = _C.linear_cached(x, weight, keep_idx, bias, get_workspace_limit())  # as conv2d
        if out is not None:
            return out
    _checks.check_float_tensor(x, "x")
    _checks.check_linear_weight(weight, x)
    _checks.check_linear_input(x, weight.shape[1])
    _checks.check_index_meta(
        keep_idx, "keep_idx", x, "x", weight.shape[1], "input features of weight"
    )
    _checks.check_bias(bias, x, weight.shape[0], "out_features")
    return _registered_or_eager(_linear_op, _linear_impl, x, weight, bias)(
        x, weight, keep_idx, bias, get_workspace_limit()
    )


def linear_packed(x, packed: PackedLinearWeight, bias=None, *, activation=None):
    """Group-wise linear on a weight packed once by ``pack_linear_weight``; ``activation``
    as for ``conv2d_packed``."""
    if not isinstance(packed, PackedLinearWeight):
        raise TypeError(
            f"gwprune: packed must be a PackedLinearWeight, got {type(packed).__name__}"
        )
    if _eager_call(x, packed.weight, bias):
        return _C.linear_packed_eager(
            x,
            packed.weight,
            packed.feature_idx,
            bias,
            packed.in_features,
            get_workspace_limit(),
            op_argument(check_activation(activation)),
        )
    _checks.check_float_tensor(x, "x")
    _checks.check_packed_linear(packed, x)
    _checks.check_linear_input(x, packed.in_features)
    _checks.check_bias(bias, x, packed.weight.shape[0], "out_features")
    activation = op_argument(check_activation(activation))
    return _registered_or_eager(_linear_packed_op, _linear_packed_impl, x, packed.weight, bias)(
        x, packed.weight, packed.feature_idx, bias, get_workspace_limit(), activation
    )
