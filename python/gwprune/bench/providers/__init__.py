"""The providers the benchmark compares, in table order."""

from .base import Prepared, Provider, Unsupported
from .dense import AnchorConv2d, DenseConv2d, DenseLinear
from .groupwise import GroupFloor, GroupFloorFlat, GroupImplicit, GroupNaive, GroupPacked
from .sparse import BsrSpMM, CsrSpMM, SemiStructured24

__all__ = ["Prepared", "Provider", "Unsupported", "default_providers", "provider_names"]


def default_providers() -> list[Provider]:
    return [
        DenseConv2d(channels_last=False),
        DenseConv2d(channels_last=True),
        DenseLinear(),
        AnchorConv2d(channels_last=False),
        AnchorConv2d(channels_last=True),
        GroupPacked(channels_last=False),
        GroupPacked(channels_last=True),
        GroupImplicit(channels_last=False),
        GroupImplicit(channels_last=True),
        GroupNaive(),
        GroupNaive(channels_last=True),
        GroupFloor(),
        GroupFloorFlat(),
        CsrSpMM("element"),
        CsrSpMM("vector"),
        SemiStructured24(),
        BsrSpMM(),
    ]


def provider_names() -> list[str]:
    return list(dict.fromkeys(provider.name for provider in default_providers()))
