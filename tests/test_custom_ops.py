"""The registered ops: opcheck (schema, fake tensors, dispatch), torch.compile,
inference_mode, the extension's load state and the command line."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import gwprune
import gwprune.ops  # noqa: F401  (registers torch.ops.gwprune.*)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def conv_sample(device, channels_last=False):
    x = torch.randn(2, 5, 9, 7, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(4, 5, 3, 3, device=device)
    keep = torch.tensor([0, 7, 8, 20, 44], device=device)
    return x, weight, keep, torch.randn(4, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_conv2d_ops(device, channels_last):
    x, weight, keep, bias = conv_sample(device, channels_last)
    packed = gwprune.pack_conv2d_weight(weight, keep)
    for backend in ("auto", "explicit"):
        torch.library.opcheck(
            torch.ops.gwprune.conv2d.default,
            (x, weight, keep, bias, [2, 1], [1, 1], [1, 2], 1 << 20, backend),
        )
        torch.library.opcheck(
            torch.ops.gwprune.conv2d_packed.default,
            (
                x,
                packed.weight,
                packed.group_idx,
                None,
                [3, 3],
                [1, 1],
                [0, 0],
                [1, 1],
                1 << 20,
                backend,
            ),
        )


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_linear_ops(device):
    x = torch.randn(3, 4, 12, device=device)
    weight = torch.randn(6, 12, device=device)
    keep = torch.tensor([1, 5, 11], device=device)
    torch.library.opcheck(torch.ops.gwprune.linear.default, (x, weight, keep, None, 1 << 20))
    packed = gwprune.pack_linear_weight(weight, keep)
    torch.library.opcheck(
        torch.ops.gwprune.linear_packed.default,
        (x, packed.weight, packed.feature_idx, torch.randn(6, device=device), 1 << 20),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(device, backend):
    x, weight, keep, bias = conv_sample(device)
    packed = gwprune.pack_conv2d_weight(weight, keep)
    linear = gwprune.pack_linear_weight(
        torch.randn(3, 4 * 9 * 7, device=device), torch.arange(0, 252, 5, device=device)
    )

    def model(inp):
        y = gwprune.ops.conv2d_packed(inp, packed, bias, padding=1)
        y = torch.relu(y)
        return gwprune.ops.linear_packed(y.flatten(1), linear)

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    x2 = torch.randn_like(x)
    torch.testing.assert_close(compiled(x2), model(x2), rtol=1e-5, atol=1e-5)


def test_raw_ops_under_compile_and_inference_mode():
    x, weight, keep, bias = conv_sample("cpu")
    expected = F.conv2d(x, gwprune.mask_weight(weight, keep), bias, padding=1)
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda a: gwprune.ops.conv2d(a, weight, keep, bias, padding=1),
        backend="aot_eager",
        fullgraph=True,
    )
    torch.testing.assert_close(compiled(x), expected)
    with torch.inference_mode():
        torch.testing.assert_close(gwprune.ops.conv2d(x, weight, keep, bias, padding=1), expected)


def test_info_and_command_line():
    facts = gwprune.info()
    assert facts["gwprune"] == gwprune.__version__
    assert facts["torch"] == torch.__version__
    assert isinstance(facts["CUDA kernels compiled"], bool)
    result = subprocess.run(
        [sys.executable, "-m", "gwprune", "info"], capture_output=True, text=True, check=True
    )
    assert "CUDA kernels compiled" in result.stdout and "GPU" in result.stdout


def test_extension_is_built_with_cuda_when_the_toolchain_is_there():
    # CI compiles the CUDA kernels on a machine with no GPU; this catches a build
    # that silently fell back to CPU-only where CUDA was expected.
    import os

    if os.environ.get("GWPRUNE_EXPECT_CUDA_BUILD") != "1":
        pytest.skip("set GWPRUNE_EXPECT_CUDA_BUILD=1 where the CUDA build is required")
    assert gwprune.cuda_kernels_compiled(), "gwprune._C was built without CUDA kernels"
