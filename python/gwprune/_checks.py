"""Argument validation shared by every backend.

Each check raises TypeError (wrong kind of thing) or ValueError (right kind,
wrong value) with a message that names the argument and the problem. The
shape-only checks also run under torch.compile's fake tensors; the value checks
of index tensors read the indices (one host sync when they live on a GPU).
"""

from collections.abc import Sequence

import torch

from ._extension import cuda_kernels_compiled

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)


def _fail_type(message: str):
    raise TypeError(f"gwprune: {message}")


def _fail_value(message: str):
    raise ValueError(f"gwprune: {message}")


def check_tensor(value, name: str) -> None:
    if not isinstance(value, torch.Tensor):
        _fail_type(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def check_float_tensor(value, name: str, dim: int | None = None) -> None:
    check_tensor(value, name)
    if value.dtype not in FLOAT_DTYPES:
        _fail_type(f"{name} must be float32, float64, float16 or bfloat16, got {value.dtype}")
    if dim is not None and value.dim() != dim:
        _fail_value(f"{name} must be a {dim}-D tensor, got shape {tuple(value.shape)}")


def check_same_device(value: torch.Tensor, name: str, x: torch.Tensor) -> None:
    if value.device != x.device:
        _fail_value(f"{name} is on {value.device} but x is on {x.device}")


def check_same_dtype_device(value: torch.Tensor, name: str, x: torch.Tensor) -> None:
    if value.dtype != x.dtype:
        _fail_type(f"{name} has dtype {value.dtype} but x has dtype {x.dtype}")
    check_same_device(value, name, x)


def as_pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as a 2-tuple."""
    # Fast path for what modules pass on every call (an int or a tuple of two ints): the
    # generic Sequence check below goes through ABC machinery, a few microseconds a call.
    if (
        type(value) is tuple
        and len(value) == 2
        and type(value[0]) is int
        and type(value[1]) is int
        and min(value) >= minimum
    ):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        _fail_type(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        bound = "positive" if minimum == 1 else "non-negative"
        _fail_value(f"{name} must be {bound}, got {value!r}")
    return pair


def check_index_meta(
    index, name: str, ref: torch.Tensor, ref_name: str, limit: int, what: str
) -> None:
    """Kind, rank and placement of a kept-index tensor (no values read)."""
    check_tensor(index, name)
    if index.dtype == torch.bool:
        _fail_type(
            f"{name} must hold integer indices, got a bool tensor "
            "(for a mask use gwprune.keep_idx_from_mask)"
        )
    if index.dtype not in INDEX_DTYPES:
        _fail_type(f"{name} must be an int32 or int64 tensor, got {index.dtype}")
    if index.dim() != 1:
        _fail_value(f"{name} must be 1-D, got shape {tuple(index.shape)}")
    if index.device != ref.device:
        _fail_value(f"{name} is on {index.device} but {ref_name} is on {ref.device}")
    if index.numel() > limit:
        _fail_value(f"{name} has {index.numel()} entries but there are only {limit} {what}")


def index_value_stats(ordered: torch.Tensor) -> torch.Tensor:
    """[lowest, highest, duplicate count] of sorted, non-empty indices, on their device
    (reading it is the host sync of the value check)."""
    duplicates = (ordered[1:] == ordered[:-1]).sum()
    return torch.stack([ordered[0], ordered[-1], duplicates.to(ordered.dtype)])


def check_index_stats(stats: list[int], name: str, limit: int, what: str) -> None:
    """Raises for out-of-range or repeated indices, given index_value_stats read back."""
    low, high, repeated = stats
    if low < 0:
        _fail_value(f"{name} contains {low}; indices must be >= 0")
    if high >= limit:
        _fail_value(f"{name} contains {high}, out of range for {limit} {what}")
    if repeated:
        _fail_value(
            f"{name} contains {repeated} duplicated indices; each kept index must be unique"
        )


def check_index_values(index: torch.Tensor, name: str, limit: int, what: str) -> None:
    """Range and uniqueness of kept indices: costs one host sync for GPU indices."""
    if index.numel() == 0:
        return
    ordered = torch.sort(index.reshape(-1)).values
    check_index_stats(index_value_stats(ordered).tolist(), name, limit, what)


def check_bias(bias, x: torch.Tensor, out_features: int, what: str) -> None:
    if bias is None:
        return
    check_tensor(bias, "bias")
    check_same_dtype_device(bias, "bias", x)
    if bias.dim() != 1 or bias.shape[0] != out_features:
        _fail_value(f"bias must have shape ({out_features},) ({what}), got {tuple(bias.shape)}")


def conv_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def check_conv2d_input(
    x, in_channels: int, kernel_size: tuple[int, int], stride, padding, dilation
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Checks x and the conv parameters; returns (stride, padding, dilation, out_hw)."""
    check_float_tensor(x, "x")
    if x.dim() != 4:
        _fail_value(f"x must be a 4-D [N, C, H, W] tensor, got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        hint = ""
        if in_channels and x.shape[1] % in_channels == 0 and x.shape[1] != in_channels:
            hint = " (a grouped convolution? pass groups=)"
        _fail_value(f"x has {x.shape[1]} channels but weight expects {in_channels}{hint}")
    if min(kernel_size) <= 0:
        _fail_value(f"kernel size must be positive, got {tuple(kernel_size)}")
    stride = as_pair(stride, "stride", 1)
    padding = as_pair(padding, "padding", 0)
    dilation = as_pair(dilation, "dilation", 1)
    out_hw = tuple(
        conv_out_size(x.shape[2 + d], kernel_size[d], stride[d], padding[d], dilation[d])
        for d in range(2)
    )
    if min(out_hw) <= 0:
        _fail_value(
            f"output size would be {out_hw} for input {tuple(x.shape[2:])}, kernel "
            f"{kernel_size}, stride {stride}, padding {padding}, dilation {dilation}: "
            "the input is too small"
        )
    check_cuda_conv_limits(x, in_channels, kernel_size, padding, dilation, out_hw)
    return stride, padding, dilation, out_hw


# The CUDA gather kernels index within one image in 32 bits and keep tap offsets in 16 bits
# (csrc/cuda/conv2d_cuda.cpp check_conv_fits_32bit holds the same limits). They are checked
# here too so that an oversized conv raises a Python ValueError before gwprune._C is reached.
INT32_MAX = 2**31 - 1
INT16_MAX = 2**15 - 1


def check_cuda_conv_limits(x, in_channels, kernel_size, padding, dilation, out_hw) -> None:
    if x.device.type != "cuda" or not cuda_kernels_compiled():
        return  # without CUDA kernels CUDA tensors take the reference path: no such limit
    height, width = x.shape[2], x.shape[3]
    sizes = (
        ("C*kh*kw (groups per filter)", in_channels * kernel_size[0] * kernel_size[1]),
        ("H*W of one input image", height * width),
        ("Ho*Wo of one output image", out_hw[0] * out_hw[1]),
    )
    reaches = tuple((kernel_size[d] - 1) * dilation[d] + padding[d] for d in range(2))
    if max(size for _, size in sizes) <= INT32_MAX and max(reaches) <= INT16_MAX:
        return  # the common case, decided without building any message
    for what, size in sizes:
        if size > INT32_MAX:
            _fail_value(
                f"{what} is {size}, above 2^31 - 1: one image of this conv is too large for "
                "the CUDA kernels (split the image, or run it on the CPU)"
            )
    for d, axis in enumerate(("height", "width")):
        reach = reaches[d]
        if reach > INT16_MAX:
            _fail_value(
                f"(kernel - 1) * dilation + padding along {axis} is {reach}, above 32767: "
                f"kernel {tuple(kernel_size)}, dilation {dilation}, padding {padding} are "
                "too large for the CUDA kernels"
            )


def check_conv2d_weight(weight, x: torch.Tensor) -> None:
    check_tensor(weight, "weight")
    if weight.dim() != 4:
        _fail_value(
            f"weight must be a 4-D [Cout, C, kh, kw] tensor, got shape {tuple(weight.shape)}"
        )
    check_same_dtype_device(weight, "weight", x)
    if weight.shape[0] == 0:
        _fail_value(f"weight has 0 output channels (shape {tuple(weight.shape)})")
    if weight.shape[2] == 0 or weight.shape[3] == 0:
        _fail_value(
            f"weight has kernel size {tuple(weight.shape[2:])}; kernel size must be positive"
        )


def check_linear_input(x, in_features: int) -> None:
    check_float_tensor(x, "x")
    if x.dim() < 1:
        _fail_value("x must have at least 1 dimension [..., in_features]")
    if x.shape[-1] != in_features:
        _fail_value(
            f"x has {x.shape[-1]} features in its last dimension but weight expects {in_features}"
        )


def check_linear_weight(weight, x: torch.Tensor) -> None:
    check_tensor(weight, "weight")
    if weight.dim() != 2:
        _fail_value(
            "weight must be a 2-D [out_features, in_features] tensor, "
            f"got shape {tuple(weight.shape)}"
        )
    check_same_dtype_device(weight, "weight", x)


def check_groups_arg(groups, out_channels: int, what: str) -> None:
    """``groups`` is a positive int dividing ``out_channels``."""
    if isinstance(groups, bool) or not isinstance(groups, int):
        _fail_type(f"groups must be a positive int, got {groups!r}")
    if groups < 1:
        _fail_value(f"groups must be positive, got {groups}")
    if out_channels % groups:
        _fail_value(f"groups={groups} does not divide the {out_channels} {what}")


def check_no_groups(groups) -> None:
    if isinstance(groups, bool) or not isinstance(groups, int):
        _fail_type(f"groups must be the int 1, got {groups!r}")
    if groups != 1:
        _fail_value(
            f"groups must be 1, got {groups!r}: grouped convolution is out of scope for gwprune"
        )


# ---- packed weights built by hand ----------------------------------------------------------
# pack_conv2d_weight / pack_linear_weight build consistent packed weights from validated
# indices. A PackedConv2dWeight / PackedLinearWeight made directly (or from a state dict) is
# checked here for kind, shape, dtype, device and layout, all without reading the indices (no
# host sync); index values of such a packed weight are trusted: the CUDA gathers read an index
# outside [0, groups) as zeros, never out of bounds.


def _check_packed_index(index, name: str, x: torch.Tensor, kept_columns: int) -> None:
    check_tensor(index, name)
    if index.dtype != torch.int32:
        _fail_type(f"{name} must be an int32 tensor, got {index.dtype}")
    if index.dim() != 1:
        _fail_value(f"{name} must be 1-D, got shape {tuple(index.shape)}")
    check_same_device(index, name, x)
    if not index.is_contiguous():
        _fail_value(f"{name} must be contiguous")
    if index.numel() != kept_columns:
        _fail_value(
            f"{name} has {index.numel()} entries but packed.weight has {kept_columns} columns"
        )


def _check_packed_weight(weight, x: torch.Tensor) -> None:
    check_tensor(weight, "packed.weight")
    if weight.dim() != 2:
        _fail_value(f"packed.weight must be a 2-D [out, K'] tensor, got {tuple(weight.shape)}")
    check_same_dtype_device(weight, "packed.weight", x)
    if not weight.is_contiguous():
        _fail_value("packed.weight must be contiguous (pack it with gwprune.pack_*_weight)")


def _check_count(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail_type(f"{name} must be an int, got {value!r}")
    if value < 0:
        _fail_value(f"{name} must be non-negative, got {value}")


def check_packed_conv2d(packed, x: torch.Tensor) -> None:
    """A PackedConv2dWeight is consistent with itself and with x (no values read)."""
    _check_packed_weight(packed.weight, x)
    groups = getattr(packed, "groups", 1)
    check_groups_arg(groups, packed.weight.shape[0], "rows of packed.weight")
    _check_packed_index(packed.group_idx, "packed.group_idx", x, groups * packed.weight.shape[1])
    if groups != 1 and packed.in_channels % groups:
        _fail_value(f"groups={groups} does not divide packed.in_channels={packed.in_channels}")
    _check_count(packed.in_channels, "packed.in_channels")
    as_pair(packed.kernel_size, "packed.kernel_size", 1)


def check_packed_linear(packed, x: torch.Tensor) -> None:
    """A PackedLinearWeight is consistent with itself and with x (no values read)."""
    _check_packed_weight(packed.weight, x)
    _check_packed_index(packed.feature_idx, "packed.feature_idx", x, packed.weight.shape[1])
    _check_count(packed.in_features, "packed.in_features")
