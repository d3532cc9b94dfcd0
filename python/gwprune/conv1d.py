"""transformers' ``Conv1D`` (GPT-2 family): a linear layer whose weight is stored
``[in_features, out_features]`` and computes ``y = x @ W + b``.

gwprune converts it like ``nn.Linear``, packing the transposed weight; its groups are
its input features (rows of the stored weight). transformers is not a dependency: the
class is looked up only in an already imported ``transformers.pytorch_utils`` (a model
that holds a Conv1D has imported it).
"""

import sys

import torch
import torch.nn as nn


def conv1d_class() -> type | None:
    module = sys.modules.get("transformers.pytorch_utils")
    return getattr(module, "Conv1D", None)


def is_conv1d(module: nn.Module) -> bool:
    cls = conv1d_class()
    return cls is not None and isinstance(module, cls)


def linear_weight(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` of ``module`` as an ``nn.Linear`` holds it, ``[out, in]``."""
    return weight.t() if is_conv1d(module) else weight
