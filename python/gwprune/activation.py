"""Activations a gwprune layer can apply to its own output (fused at conversion).

Names (the ``activation`` of the packed ops and of the modules):

| name | computes | dense module |
|---|---|---|
| ``None`` | nothing | |
| ``'relu'`` | ``max(x, 0)`` | ``nn.ReLU`` |
| ``'relu6'`` | ``min(max(x, 0), 6)`` | ``nn.ReLU6`` |
| ``'silu'`` | ``x * sigmoid(x)`` | ``nn.SiLU`` |
| ``'gelu'`` | exact (erf) GELU | ``nn.GELU()`` |
| ``'gelu_tanh'`` | tanh-approximated GELU | ``nn.GELU(approximate='tanh')`` |

The two GELUs are kept apart because cuBLASLt's GELU epilogue computes the tanh
approximation (as PyTorch's own ``_addmm_activation`` does), which differs from the
exact GELU by up to about 1e-3: only ``'gelu_tanh'`` may use it. The implicit-GEMM CUDA
conv applies every one in its own epilogue, in fp32 before rounding. On the CPU path and
wherever no epilogue applies, the activation is one in-place pass over the output.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ACTIVATIONS", "check_activation", "apply_activation", "activation_module"]

ACTIVATIONS = ("relu", "relu6", "silu", "gelu", "gelu_tanh")

# What the packed ops receive: a string, "none" for no activation (a custom op's schema
# takes a plain str).
NO_ACTIVATION = "none"


def check_activation(activation) -> str | None:
    """``activation`` validated: None or one of ``ACTIVATIONS`` (``'none'`` reads as None)."""
    if activation is None or activation == NO_ACTIVATION:
        return None
    if not isinstance(activation, str):
        raise TypeError(
            f"gwprune: activation must be None or one of {ACTIVATIONS}, got "
            f"{type(activation).__name__}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"gwprune: activation must be None or one of {ACTIVATIONS}, got {activation!r}"
        )
    return activation


def op_argument(activation: str | None) -> str:
    """The string the packed ops and gwprune._C take."""
    return NO_ACTIVATION if activation is None else activation


def apply_activation(out: torch.Tensor, activation: str | None) -> torch.Tensor:
    """``activation`` applied to ``out`` in place (``out`` must be a fresh tensor); returns it."""
    if activation is None or activation == NO_ACTIVATION:
        return out
    if activation == "relu":
        return out.relu_()
    if activation == "relu6":
        return F.hardtanh(out, 0.0, 6.0, inplace=True)
    if activation == "silu":
        return F.silu(out, inplace=True)
    if activation == "gelu":
        return torch.ops.aten.gelu_(out)
    if activation == "gelu_tanh":
        return torch.ops.aten.gelu_(out, approximate="tanh")
    raise ValueError(
        f"gwprune: activation must be None or one of {ACTIVATIONS}, got {activation!r}"
    )


def activation_module(activation: str | None) -> nn.Module | None:
    """The dense module that computes ``activation`` (None for None)."""
    if activation is None:
        return None
    return {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "silu": nn.SiLU,
        "gelu": nn.GELU,
        "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    }[check_activation(activation)]()
