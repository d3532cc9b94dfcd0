"""Shared test configuration: devices, precisions, tolerances, the upcast oracle, and the
property-test settings and case counter (tests/test_properties.py)."""

import collections
import contextlib
import json
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()

# Relative error ||out - ref|| / ||ref|| allowed against a float64 reference.
TOLERANCES = {"fp64": 1e-12, "fp32": 1e-5, "tf32": 5e-3, "fp16": 1e-2, "bf16": 1e-2}
DTYPES = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "tf32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}

cuda_only = pytest.mark.cuda

DEVICES = ["cpu", pytest.param("cuda", marks=cuda_only)]
# CPU computes fp32 exactly as asked and has no TF32; half precisions are checked on CUDA,
# where they matter, and on CPU through the CPU kernels in test_properties.py and
# test_numerics.py.
CPU_PRECISIONS = ["fp64", "fp32"]
CUDA_PRECISIONS = ["fp64", "fp32", "tf32", "fp16", "bf16"]


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def implicit_kernel_available() -> bool:
    """An sm_90 GPU and a build with sm_90a: the implicit-GEMM conv can run."""
    import gwprune

    if not HAS_CUDA or not gwprune.cuda_kernels_compiled():
        return False
    major, minor = torch.cuda.get_device_capability()
    return (major, minor) == (9, 0) and "sm_90a" in gwprune._extension.compiled_cuda_archs()


def device_precisions():
    """(device, precision) pairs for parametrized numerical tests."""
    pairs = [pytest.param("cpu", p, id=f"cpu-{p}") for p in CPU_PRECISIONS]
    pairs += [pytest.param("cuda", p, id=f"cuda-{p}", marks=cuda_only) for p in CUDA_PRECISIONS]
    return pairs


@contextlib.contextmanager
def precision_flags(precision: str):
    """Sets PyTorch's TF32 flags as the precision asks; restores them after."""
    allow = precision == "tf32"
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = allow
    torch.backends.cuda.matmul.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextlib.contextmanager
def poisoned_outputs(device: str):
    """Makes every output/workspace of gwprune's compiled kernels (CUDA, and CPU where _C has
    CPU kernels) start as NaN, so unwritten elements fail."""
    from gwprune._extension import _C, cpu_kernels_compiled

    if _C is None or (torch.device(device).type == "cpu" and not cpu_kernels_compiled()):
        yield
        return
    _C.set_poison_outputs(True)
    try:
        yield
    finally:
        _C.set_poison_outputs(False)


def host_sync_count(call) -> int:
    """How many host syncs ``call()`` makes, by torch.cuda's sync debug mode (the queue is
    drained first, so earlier work is not counted)."""
    import warnings

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    diff = (out.double().cpu() - ref.double().cpu()).norm()
    scale = ref.double().cpu().norm()
    if scale == 0:
        return float(diff)
    return float(diff / scale)


def assert_matches(
    out: torch.Tensor,
    ref: torch.Tensor,
    precision: str,
    context: str,
    product: torch.Tensor | None = None,
    dense: torch.Tensor | None = None,
) -> None:
    """Shape, finiteness and relative error against the float64 reference; on failure
    the message names the case and the worst element.

    ``product``, the reference without its bias, makes the error relative to the larger of
    ``‖ref‖`` and ``‖product‖``: a half-precision GEMM may round the product to the output
    type before adding the bias (cuDNN's conv does, and so do some cuBLASLt bias epilogues),
    which costs up to half an ulp of the product, more than 1e-2 of an output that the bias
    nearly cancels.

    ``dense``, the same layer computed by dense PyTorch at the same precision on the same
    device: where even it misses the tolerance on this case (e.g. bf16 F.linear with a bias
    and thousands of inputs, whose cuBLASLt epilogue reduces split-K partial sums in bf16),
    the output may be up to 1.5 times as far from the reference as dense PyTorch's."""
    assert out.shape == ref.shape, f"{context}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    out64, ref64 = out.double().cpu(), ref.double().cpu()
    finite = torch.isfinite(out64)
    if not bool(finite.all()):
        where = (~finite).nonzero()[0].tolist()
        raise AssertionError(f"{context}: non-finite output at {where} (unwritten element?)")
    error = relative_error(out64, ref64)
    scale = float(ref64.norm())
    if product is not None:
        scale = max(scale, float(product.double().cpu().norm()))
        error = float((out64 - ref64).norm()) / scale if scale > 0 else error
    tolerance, dense_note = TOLERANCES[precision], ""
    if dense is not None:
        dense64 = dense.double().cpu()
        dense_error = float((dense64 - ref64).norm()) / scale if scale > 0 else 0.0
        if dense_error > tolerance:
            tolerance = 1.5 * dense_error
        dense_note = f" (dense PyTorch: {dense_error:.3e})"
    if error > tolerance:
        worst = (out64 - ref64).abs().argmax()
        index = list(torch.unravel_index(worst, out64.shape))
        index = [int(i) for i in index]
        raise AssertionError(
            f"{context}: relative error {error:.3e} > {tolerance:.1e} ({precision}){dense_note}; "
            f"worst at {index}: got {out64[tuple(index)].item():.6g}, "
            f"expected {ref64[tuple(index)].item():.6g}"
        )


def make_keep_idx(num_groups: int, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Kept groups for a test: 'one', 'quarter', 'half', 'all' or 'none', in random order."""
    count = {
        "none": 0,
        "one": 1,
        "quarter": max(1, num_groups // 4),
        "half": max(1, num_groups // 2),
        "all": num_groups,
    }[mode]
    return torch.randperm(num_groups, generator=generator)[:count]


# ---- property tests (hypothesis) ---------------------------------------------------------
# Examples per property test and device: GWPRUNE_HYPOTHESIS_EXAMPLES for every device, or
# GWPRUNE_HYPOTHESIS_EXAMPLES_CPU / GWPRUNE_HYPOTHESIS_EXAMPLES_CUDA for one. The default keeps
# the CPU CI run short; the GPU reliability run asks for thousands (docs/reliability.md).
DEFAULT_HYPOTHESIS_EXAMPLES = 200


def _positive_int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise pytest.UsageError(f"{name} must be a positive integer, got {value!r}") from None
    if number <= 0:
        raise pytest.UsageError(f"{name} must be a positive integer, got {value!r}")
    return number


def hypothesis_examples(device: str) -> int:
    """How many examples one property test runs on this device type."""
    device_type = torch.device(device).type
    for name in (
        f"GWPRUNE_HYPOTHESIS_EXAMPLES_{device_type.upper()}",
        "GWPRUNE_HYPOTHESIS_EXAMPLES",
    ):
        number = _positive_int_env(name)
        if number is not None:
            return number
    return DEFAULT_HYPOTHESIS_EXAMPLES


def hypothesis_seed() -> int | None:
    """GWPRUNE_HYPOTHESIS_SEED picks a random exploration; unset, every run draws the same
    (derandomized) cases, so CI is reproducible."""
    value = os.environ.get("GWPRUNE_HYPOTHESIS_SEED")
    return None if value in (None, "") else int(value)


# Property cases that ran to the end of their checks, per device type (cpu, cuda).
PROPERTY_CASES: collections.Counter = collections.Counter()


def count_property_case(device) -> None:
    PROPERTY_CASES[torch.device(device).type] += 1


def property_case_report() -> dict[str, int]:
    report = {"cpu": 0, "cuda": 0}
    report.update(PROPERTY_CASES)
    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    report = property_case_report()
    if any(report.values()):
        counts = ", ".join(f"{device}={count}" for device, count in sorted(report.items()))
        terminalreporter.write_sep("-", "gwprune property cases")
        terminalreporter.write_line(f"gwprune property cases executed: {counts}")
    path = os.environ.get("GWPRUNE_HYPOTHESIS_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1, sort_keys=True)
            handle.write("\n")


# ---- the device still works ----------------------------------------------------------------


def assert_device_still_works(device: str) -> None:
    """A valid conv and linear still give the right answer on this device, and (on CUDA) the
    context reports no pending error: a bad call before this one broke nothing."""
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(2, 3, 6, 5, generator=generator)
    weight = torch.randn(4, 3, 3, 3, generator=generator)
    keep = torch.tensor([0, 4, 9, 13, 26])
    ref = torch.nn.functional.conv2d(
        x.double(), _mask_weight_for_check(weight.double(), keep), padding=1
    )
    xl = torch.randn(5, 7, generator=generator)
    wl = torch.randn(3, 7, generator=generator)
    keep_l = torch.tensor([1, 2, 6])
    ref_l = torch.nn.functional.linear(xl.double(), _mask_weight_for_check(wl.double(), keep_l))

    import gwprune

    with precision_flags("fp32"):
        out = gwprune.ops.conv2d(x.to(device), weight.to(device), keep.to(device), padding=1)
        out_l = gwprune.ops.linear(xl.to(device), wl.to(device), keep_l.to(device))
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    assert_matches(out, ref, "fp32", f"valid conv on {device} after a bad call")
    assert_matches(out_l, ref_l, "fp32", f"valid linear on {device} after a bad call")


def _mask_weight_for_check(weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    flat = weight.reshape(weight.shape[0], -1).clone()
    mask = torch.zeros(flat.shape[1], dtype=torch.bool)
    mask[keep] = True
    flat[:, ~mask] = 0
    return flat.reshape(weight.shape)


def linear_reference(x, weight, bias, keep) -> torch.Tensor:
    """F.linear in float64 on the masked weight: the oracle of the CPU linear tests."""
    return torch.nn.functional.linear(
        x.double(),
        _mask_weight_for_check(weight.double(), keep.cpu()),
        None if bias is None else bias.double(),
    )


@contextlib.contextmanager
def setting(get, set_, value):
    """A process-wide setting (read by get(), written by set_(value)) for the block,
    restored after."""
    saved = get()
    set_(value)
    try:
        yield
    finally:
        set_(saved)


def _environment_setting(variable: str, value: str | None):
    def set_(new):
        if new is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = new

    return setting(lambda: os.environ.get(variable), set_, value)


@contextlib.contextmanager
def forced_gather(name: str):
    """GWPRUNE_IMPLICIT_GATHER (the implicit kernel's NCHW producer) set for the block;
    "persistent-kN" also sets GWPRUNE_IMPLICIT_K_SLICES to N (the persistent kernel's K
    slices, csrc/cuda/implicit/windows/k_slices.cuh)."""
    gather, _, slices = name.partition("-k")
    with (
        _environment_setting("GWPRUNE_IMPLICIT_GATHER", gather),
        _environment_setting("GWPRUNE_IMPLICIT_K_SLICES", slices or None),
    ):
        yield


def threads(count: int):
    """torch's CPU thread count set to `count` for the block, restored after."""
    return setting(torch.get_num_threads, torch.set_num_threads, count)
