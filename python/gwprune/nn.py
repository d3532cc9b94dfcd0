"""Drop-in inference modules for group-wise pruned conv2d and linear layers.

``GroupwiseConv2d`` and ``GroupwiseLinear`` hold a weight packed once (only
the kept columns of ``weight.reshape(out, -1)``) and run
``gwprune.ops.conv2d_packed`` / ``gwprune.ops.linear_packed``, so a forward is
gather + GEMM only. They are inference-only: the ops have no autograd formula,
and the packed weight and bias are buffers, not parameters.

Buffers (what ``state_dict`` saves):

- ``weight``: ``[out, K']`` the kept columns, in the order of the index buffer;
- ``group_idx`` (conv) / ``feature_idx`` (linear): int32 ``[K']`` flat index of
  each kept column in the dense layer;
- ``bias``: ``[out]`` or absent.

Their shapes depend only on the layer's sizes and the number of kept groups,
so a state dict loads into any module built with the same sizes and keep count.

Backends: ``"gathered"`` (the default) runs the gather + GEMM ops; ``"dense"``
runs ``F.conv2d`` / ``F.linear`` on the dense weight with the pruned groups
zeroed (same result; cuDNN/cuBLAS speed), for layers where the compacted GEMM
does not pay, such as memory-bound convs with few channels. ``set_backend``
switches; ``gwprune.autotune`` picks per layer by timing both. The dense weight
is a cache rebuilt from the packed one (not saved in ``state_dict``).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks, ops
from .activation import activation_module, apply_activation, check_activation
from .conv_padding import PADDING_STRINGS
from .groups import keep_idx_from_mask, keep_idx_from_zeroed
from .packing import (
    PAD_INDEX,
    PackedConv2dWeight,
    PackedLinearWeight,
    kept_count,
    pack_conv2d_weight,
    pack_linear_weight,
    pad_index,
)

__all__ = ["GroupwiseConv2d", "GroupwiseLinear", "BACKENDS", "resolve_conv2d_padding"]

# "gathered": gather + compacted GEMM (gwprune.ops); "dense": the masked dense layer.
BACKENDS = ("gathered", "dense")


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise TypeError(f"gwprune: {name} must be an int or a pair of ints, got {value!r}")


def resolve_conv2d_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """The explicit symmetric padding of ``conv``, resolving ``'valid'`` and ``'same'``.

    ``'same'`` is only representable when the total padding of each dimension,
    ``dilation * (kernel - 1)``, is even: PyTorch pads an odd total one more on
    the right/bottom, which a symmetric (pad_h, pad_w) cannot express.
    """
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        pads = []
        for kernel, dilation in zip(conv.kernel_size, conv.dilation, strict=True):
            total = dilation * (kernel - 1)
            if total % 2:
                raise ValueError(
                    f"gwprune: padding='same' with kernel_size={conv.kernel_size} and "
                    f"dilation={conv.dilation} pads asymmetrically, which gwprune cannot express"
                )
            pads.append(total // 2)
        return (pads[0], pads[1])
    return _pair(conv.padding, "padding")


def _check_keep_idx_arg(keep_idx, name: str = "keep_idx") -> torch.Tensor:
    if not isinstance(keep_idx, torch.Tensor):
        raise TypeError(f"gwprune: {name} must be a torch.Tensor, got {type(keep_idx).__name__}")
    return keep_idx


def _placeholder_idx(keep, num_groups: int, device) -> torch.Tensor:
    """Index buffer for __init__: the given kept indices, or 0..n-1 for a bare keep count."""
    if isinstance(keep, int) and not isinstance(keep, bool):
        if not 0 <= keep <= num_groups:
            raise ValueError(
                f"gwprune: keep_idx as a count must be in [0, {num_groups}], got {keep}"
            )
        return pad_index(torch.arange(keep, dtype=torch.int32, device=device))
    keep = _check_keep_idx_arg(keep)
    _checks.check_index_meta(keep, "keep_idx", keep, "keep_idx", num_groups, "groups")
    _checks.check_index_values(keep, "keep_idx", num_groups, "groups")
    return pad_index(torch.sort(keep.long()).values.to(device=device))


class _GroupwiseBase(nn.Module):
    """Shared buffer handling (index buffers keep their integer dtype under any cast)
    and the backend choice."""

    _index_buffer: str  # name of the int32 index buffer of the subclass
    BACKENDS = BACKENDS  # the backends set_backend takes (convs add their CUDA paths)
    # Class-level defaults: modules pickled before backends existed load as "gathered",
    # those pickled before activations existed without one.
    _backend = "gathered"
    _dense_memory_format = torch.contiguous_format
    activation: str | None = None  # applied to the output (gwprune.activation); not saved

    def _init_backend(self) -> None:
        self._backend = "gathered"
        # The dense backend's weight: a cache of the packed one, not part of state_dict.
        self.register_buffer("dense_weight", None, persistent=False)

    @property
    def backend(self) -> str:
        """``"gathered"`` (gwprune's kernels; for convs on CUDA, the path
        ``gwprune.get_conv_backend()`` picks), a conv's ``"implicit"`` / ``"explicit"``
        (that CUDA path, forced), or ``"dense"`` (masked dense layer)."""
        return self._backend

    def set_backend(
        self, backend: str, memory_format: torch.memory_format = torch.contiguous_format
    ) -> "_GroupwiseBase":
        """Runs the layer as ``backend`` (one of the class's ``BACKENDS``) from now on. For
        ``"dense"``, builds the dense weight (pruned groups zero) in ``memory_format``
        (conv: the layout of the inputs it will see); ``load_state_dict`` rebuilds it, a
        weight changed by hand needs another ``set_backend``. Returns the module."""
        if backend not in self.BACKENDS:
            raise ValueError(f"gwprune: backend must be one of {self.BACKENDS}, got {backend!r}")
        if memory_format not in (torch.contiguous_format, torch.channels_last):
            raise ValueError(
                "gwprune: memory_format must be torch.contiguous_format or "
                f"torch.channels_last, got {memory_format}"
            )
        if "dense_weight" not in self._buffers:  # a module pickled before backends existed
            self.register_buffer("dense_weight", None, persistent=False)
        self._backend = backend
        self._dense_memory_format = memory_format
        self.dense_weight = self._build_dense_weight() if backend == "dense" else None
        return self

    def _build_dense_weight(self) -> torch.Tensor:
        with torch.no_grad():
            weight = self._dense_weight_flat().reshape(self._dense_weight_shape())
        if weight.dim() == 4:
            weight = weight.contiguous(memory_format=self._dense_memory_format)
        return weight

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A saved index buffer is validated like a keep_idx argument (one host sync for a
        # GPU tensor, at load time only): out-of-range entries would otherwise read as
        # zeros on CUDA, silently wrong. -1 is the packing's padding.
        index = state_dict.get(prefix + self._index_buffer)
        if isinstance(index, torch.Tensor) and index.numel():
            name = f"{prefix}{self._index_buffer}"
            if index.dtype not in (torch.int32, torch.int64) or index.dim() != 1:
                raise ValueError(
                    f"gwprune: {name} must be a 1-D int32 tensor, got {index.dtype} "
                    f"of shape {tuple(index.shape)}"
                )
            real = index[index != PAD_INDEX]
            _checks.check_index_values(real, name, self.num_groups, "groups")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self._backend == "dense":  # the cache follows the loaded weights
            self.dense_weight = self._build_dense_weight()

    def _apply(self, fn, recurse=True):
        # Module.to(dtype) already skips integer tensors, but Module.type(), .half() via
        # custom lambdas and similar casts run fn on every buffer: indices must keep their
        # dtype and exact values (a float16 index is wrong above 2048), and only follow
        # the device of the weight.
        original_index = self._buffers[self._index_buffer]
        super()._apply(fn, recurse)
        moved = self._buffers[self._index_buffer]
        if moved is not None and moved.dtype != original_index.dtype:
            self._buffers[self._index_buffer] = original_index.to(moved.device)
        return self

    @property
    def keep_idx(self) -> torch.Tensor:
        """Sorted int64 indices of the kept groups (flat columns of the dense weight)."""
        index = self._buffers[self._index_buffer].long()
        return torch.sort(index[index >= 0]).values

    @property
    def num_kept(self) -> int:
        return kept_count(self._buffers[self._index_buffer])

    @property
    def keep_ratio(self) -> float:
        return self.num_kept / self.num_groups if self.num_groups else 1.0

    def _dense_weight_flat(self) -> torch.Tensor:
        """``[out, num_groups]`` dense weight with pruned columns zero."""
        index = self._buffers[self._index_buffer].long()
        real = index >= 0
        dense = self.weight.new_zeros(self.weight.shape[0], self.num_groups)
        dense[:, index[real]] = self.weight[:, real]
        return dense

    def _kept_repr(self) -> str:
        text = f"kept_groups={self.num_kept}/{self.num_groups} ({100 * self.keep_ratio:.1f}%)"
        if self.activation is not None:
            text += f", activation={self.activation!r}"
        return text if self._backend == "gathered" else f"{text}, backend={self._backend!r}"

    def _with_activation(self, dense: nn.Module) -> nn.Module:
        """``dense``, followed by this layer's activation module if it has one."""
        module = activation_module(self.activation)
        return dense if module is None else nn.Sequential(dense, module)


class GroupwiseConv2d(_GroupwiseBase):
    """Conv2d whose pruned groups (columns ``(c, i, j)`` of ``weight.reshape(Cout, -1)``)
    are dropped. Equals ``nn.Conv2d`` with those groups zeroed, then ``activation``.

    ``groups`` > 1 (grouped and depthwise convs): the groups are numbered ``(c, i, j)``
    over all C input channels and pruned within each conv group (``gwprune.groups``);
    ``weight`` is ``[Cout, K'p]`` with rows of conv group k using entries
    ``[k*K'p, (k+1)*K'p)`` of ``group_idx`` (``K'p``: the widest group's padded count).
    ``padding`` may be ``'same'`` or ``'valid'`` (asymmetric ``'same'`` included).

    Build one with ``from_dense``, ``from_mask`` or ``from_zeroed``. The constructor
    makes an empty (zero-weight) module for ``load_state_dict``: ``keep_idx`` is the
    kept groups or just their count (for ``groups`` > 1: the count of the conv group
    that keeps the most).
    """

    BACKENDS = ("gathered", "implicit", "explicit", "dense")

    _index_buffer = "group_idx"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        keep_idx: torch.Tensor | int,
        stride=1,
        padding=0,
        dilation=1,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        groups: int = 1,
        activation: str | None = None,
    ):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _conv_padding(padding)
        self.dilation = _pair(dilation, "dilation")
        _checks.check_groups_arg(groups, self.out_channels, "out_channels")
        _checks.check_groups_arg(groups, self.in_channels, "in_channels")
        self.groups = groups
        self.activation = check_activation(activation)
        if groups == 1:
            group_idx = _placeholder_idx(keep_idx, self.num_groups, device)
        else:
            group_idx = self._grouped_placeholder_idx(keep_idx, device)
        self.register_buffer("group_idx", group_idx)
        width = group_idx.numel() // groups
        self.register_buffer(
            "weight", torch.zeros(self.out_channels, width, device=device, dtype=dtype)
        )
        if bias:
            self.register_buffer("bias", torch.zeros(self.out_channels, device=device, dtype=dtype))
        else:
            self.register_buffer("bias", None)
        self._init_backend()

    @property
    def num_groups(self) -> int:
        return self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    def _dense_weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def _grouped_placeholder_idx(self, keep, device) -> torch.Tensor:
        """Index buffer of a grouped conv: packed from the kept indices, or each conv
        group's first ``keep`` groups for a bare count."""
        per_group = self.num_groups // self.groups
        if isinstance(keep, int) and not isinstance(keep, bool):
            if not 0 <= keep <= per_group:
                raise ValueError(
                    f"gwprune: keep_idx as a count must be in [0, {per_group}] (groups per conv "
                    f"group) for groups={self.groups}, got {keep}"
                )
            starts = torch.arange(self.groups, device=device) * per_group
            keep = (starts[:, None] + torch.arange(keep, device=device)[None, :]).reshape(-1)
        keep = _check_keep_idx_arg(keep)
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        placeholder = torch.zeros(shape, device=device)
        return pack_conv2d_weight(placeholder, keep.to(device), groups=self.groups).group_idx

    def _dense_weight_flat(self) -> torch.Tensor:
        if self.groups == 1:
            return super()._dense_weight_flat()
        rows = self.out_channels // self.groups
        per_group = self.num_groups // self.groups
        width = self.weight.shape[1]
        dense = self.weight.new_zeros(self.out_channels, per_group)
        index = self.group_idx.long()
        for k in range(self.groups):
            block = index[k * width : (k + 1) * width]
            real = block >= 0
            dense[k * rows : (k + 1) * rows, block[real] - k * per_group] = self.weight[
                k * rows : (k + 1) * rows, real
            ]
        return dense

    @classmethod
    def from_dense(
        cls,
        conv: nn.Conv2d,
        keep_idx: torch.Tensor,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> "GroupwiseConv2d":
        """Packs ``conv``'s kept groups. ``keep_idx``: 1-D int tensor of kept flat
        ``(c, i, j)`` indices. ``memory_format``: the input layout the layer will mostly
        see (sets the gather order; results are the same for either layout)."""
        _check_conv_arg(conv)
        if conv.padding_mode != "zeros":
            raise ValueError(
                f"gwprune: conv has padding_mode={conv.padding_mode!r}; only 'zeros' is supported"
            )
        keep_idx = _check_keep_idx_arg(keep_idx)
        weight = conv.weight.detach()
        packed = pack_conv2d_weight(
            weight, keep_idx.to(weight.device), memory_format, groups=conv.groups
        )
        module = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            keep_idx.numel() if conv.groups == 1 else keep_idx,
            stride=conv.stride,
            padding=_module_padding(conv),
            dilation=conv.dilation,
            bias=conv.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
            groups=conv.groups,
        )
        module.weight = packed.weight
        module.group_idx = packed.group_idx
        if conv.bias is not None:
            module.bias = conv.bias.detach().clone()
        return module

    @classmethod
    def from_mask(cls, conv: nn.Conv2d, group_mask: torch.Tensor, **kwargs) -> "GroupwiseConv2d":
        """Keeps the groups where ``group_mask`` (``[C, kh, kw]`` or ``[C*kh*kw]``) is True."""
        _check_conv_arg(conv)
        _check_group_mask_size(group_mask, conv.weight, conv.groups)
        return cls.from_dense(conv, keep_idx_from_mask(group_mask), **kwargs)

    @classmethod
    def from_zeroed(cls, conv: nn.Conv2d, **kwargs) -> "GroupwiseConv2d":
        """Keeps the groups of ``conv.weight`` that are not entirely zero."""
        _check_conv_arg(conv)
        keep_idx = keep_idx_from_zeroed(conv.weight.detach(), conv.groups)
        return cls.from_dense(conv, keep_idx, **kwargs)

    def packed(self) -> PackedConv2dWeight:
        # Straight from _buffers (where assignments to them land): nn.Module.__getattr__
        # costs 0.7 us a buffer, a third of the eager call's Python.
        buffers = self._buffers
        weight, group_idx = buffers["weight"], buffers["group_idx"]
        view = self.__dict__.get("_packed_view")
        # Reused while the buffers are the same tensors (.to() and load_state_dict
        # replace or refill them; a new object is made then): building the frozen
        # dataclass costs more host time per call than checking.
        if view is None or view.weight is not weight or view.group_idx is not group_idx:
            view = PackedConv2dWeight(
                weight, group_idx, self.in_channels, self.kernel_size, self.groups
            )
            self.__dict__["_packed_view"] = view
        return view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._backend == "dense":
            out = F.conv2d(
                x,
                self.dense_weight,
                self.bias,
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
            )
            return apply_activation(out, self.activation)
        return ops.conv2d_packed(
            x,
            self.packed(),
            self._buffers["bias"],
            self.stride,
            self.padding,
            self.dilation,
            activation=self.activation,
            backend=None if self._backend == "gathered" else self._backend,
        )

    def to_dense(self) -> nn.Module:
        """The equivalent ``nn.Conv2d`` with the pruned groups zeroed; with an activation,
        ``nn.Sequential(conv, activation module)``."""
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(self._dense_weight_flat().reshape(conv.weight.shape))
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return self._with_activation(conv)

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            text += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return f"{text}, {self._kept_repr()}"


class GroupwiseLinear(_GroupwiseBase):
    """Linear whose pruned input features are dropped. Equals ``nn.Linear`` with those
    columns of the weight zeroed.

    Build one with ``from_dense``, ``from_mask`` or ``from_zeroed``; the constructor
    makes an empty module for ``load_state_dict`` (``keep_idx``: indices or a count).
    """

    _index_buffer = "feature_idx"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        keep_idx: torch.Tensor | int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        activation: str | None = None,
    ):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.activation = check_activation(activation)
        feature_idx = _placeholder_idx(keep_idx, self.in_features, device)
        self.register_buffer("feature_idx", feature_idx)
        self.register_buffer(
            "weight",
            torch.zeros(self.out_features, feature_idx.numel(), device=device, dtype=dtype),
        )
        if bias:
            self.register_buffer("bias", torch.zeros(self.out_features, device=device, dtype=dtype))
        else:
            self.register_buffer("bias", None)
        self._init_backend()

    @property
    def num_groups(self) -> int:
        return self.in_features

    def _dense_weight_shape(self) -> tuple[int, ...]:
        return (self.out_features, self.in_features)

    @classmethod
    def from_dense(cls, linear: nn.Linear, keep_idx: torch.Tensor) -> "GroupwiseLinear":
        """Packs ``linear``'s kept input features (``keep_idx``: 1-D int tensor)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"gwprune: linear must be an nn.Linear, got {type(linear).__name__}")
        keep_idx = _check_keep_idx_arg(keep_idx)
        weight = linear.weight.detach()
        packed = pack_linear_weight(weight, keep_idx.to(weight.device))
        module = cls(
            linear.in_features,
            linear.out_features,
            keep_idx.numel(),
            bias=linear.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        module.weight = packed.weight
        module.feature_idx = packed.feature_idx
        if linear.bias is not None:
            module.bias = linear.bias.detach().clone()
        return module

    @classmethod
    def from_mask(cls, linear: nn.Linear, group_mask: torch.Tensor) -> "GroupwiseLinear":
        """Keeps the input features where ``group_mask`` (``[in_features]``) is True."""
        _check_group_mask_size(group_mask, linear.weight)
        return cls.from_dense(linear, keep_idx_from_mask(group_mask))

    @classmethod
    def from_zeroed(cls, linear: nn.Linear) -> "GroupwiseLinear":
        """Keeps the input features whose weight column is not entirely zero."""
        return cls.from_dense(linear, keep_idx_from_zeroed(linear.weight.detach()))

    def packed(self) -> PackedLinearWeight:
        buffers = self._buffers  # as GroupwiseConv2d.packed
        weight, feature_idx = buffers["weight"], buffers["feature_idx"]
        view = self.__dict__.get("_packed_view")
        if view is None or view.weight is not weight or view.feature_idx is not feature_idx:
            view = PackedLinearWeight(weight, feature_idx, self.in_features)
            self.__dict__["_packed_view"] = view
        return view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._backend == "dense":
            return apply_activation(F.linear(x, self.dense_weight, self.bias), self.activation)
        return ops.linear_packed(
            x, self.packed(), self._buffers["bias"], activation=self.activation
        )

    def to_dense(self) -> nn.Module:
        """The equivalent ``nn.Linear`` with the pruned input features zeroed; with an
        activation, ``nn.Sequential(linear, activation module)``."""
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        with torch.no_grad():
            linear.weight.copy_(self._dense_weight_flat())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return self._with_activation(linear)

    def extra_repr(self) -> str:
        text = f"in_features={self.in_features}, out_features={self.out_features}"
        if self.bias is None:
            text += ", bias=False"
        return f"{text}, {self._kept_repr()}"


def _check_conv_arg(conv) -> None:
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"gwprune: conv must be an nn.Conv2d, got {type(conv).__name__}")


def _module_padding(conv: nn.Conv2d):
    """``conv``'s padding as numbers where they can express it, else ``'same'`` (asymmetric:
    resolved per call by gwprune.conv_padding)."""
    try:
        return resolve_conv2d_padding(conv)
    except ValueError:
        return conv.padding


def _conv_padding(padding):
    """A pair of ints, or ``'same'`` / ``'valid'`` kept as given (resolved per call)."""
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise ValueError(
                f"gwprune: padding must be 'same', 'valid', an int or a pair of ints, "
                f"got {padding!r}"
            )
        return padding
    return _pair(padding, "padding")


def _check_group_mask_size(group_mask, weight: torch.Tensor, groups: int = 1) -> None:
    if not isinstance(group_mask, torch.Tensor):
        raise TypeError(
            f"gwprune: group_mask must be a torch.Tensor, got {type(group_mask).__name__}"
        )
    expected = groups * math.prod(weight.shape[1:])
    if group_mask.numel() != expected:
        raise ValueError(
            f"gwprune: group_mask has {group_mask.numel()} entries (shape "
            f"{tuple(group_mask.shape)}) but the layer has {expected} groups "
            f"(weight shape {tuple(weight.shape)}, one group per column of weight.reshape(out, -1))"
        )
