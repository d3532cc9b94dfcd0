"""Experiment behind bench/NOTES.md change 8: an implicit-GEMM group-wise conv.

    python bench/experiments/implicit_gemm.py --out DIR [--check-only]

The explicit path writes the compacted operand (462 MB at TF32, keep .5, on the seed
conv) and cuBLAS reads it back; bench/NOTES.md shows that traffic alone keeps it at
>= 1.36x the compacted-GEMM floor. Here the gather moves into the GEMM's K loop: a
Triton kernel whose A tile for output pixels m and kept groups k is loaded straight
from the channels_last input x at (n, oh*s - p + i*d, ow*s - p + j*d, c), with the
kept groups in the packed weight's tap-major order, so no operand is ever written.
A linear layer is the same kernel with a 1x1 "image" per row.

It is timed side by side with dense cuDNN/cuBLAS, the floor (a GEMM on an operand
compacted beforehand) and gwprune's explicit gather + cuBLAS path, at equal precision;
every result is checked against float64 F.conv2d / F.linear on masked weights first.
Writes implicit.csv and prints a table.
"""

import argparse
import csv
import os
import sys
from functools import partial

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

import gwprune

last_kernel = None  # the compiled kernel of the last implicit_linear call (for --diagnose)
PAD_SENTINEL = -(1 << 30)  # a tap offset no pixel can reach: padding columns load nothing
_PAD_SENTINEL = tl.constexpr(PAD_SENTINEL)


def _configs():
    shapes = [  # BLOCK_M, BLOCK_N, BLOCK_K, stages, warps
        (128, 256, 32, 3, 8),
        (256, 128, 32, 3, 8),
        (128, 128, 32, 4, 4),
        (128, 128, 64, 3, 8),
        (128, 256, 64, 3, 8),
        (64, 128, 32, 4, 4),
        (64, 64, 32, 4, 4),
    ]
    return [
        triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8},
            num_stages=stages,
            num_warps=warps,
        )
        for bm, bn, bk, stages, warps in shapes
    ]


@triton.autotune(configs=_configs(), key=["P", "COUT", "KP", "C", "H", "W"])
@triton.jit
def _implicit_gemm_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    k_delta_ptr,
    k_dh_ptr,
    k_dw_ptr,
    P,
    COUT,
    KP,
    H,
    W,
    C,
    OW,
    OHW,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    HAS_BIAS: tl.constexpr,
    GATHER: tl.constexpr,
    WIDE_OFFSETS: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # Grouped tile order: GROUP_M row tiles share each weight tile while it is in L2.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(P, BLOCK_M)
    tiles_n = tl.cdiv(COUT, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < P
    col_ok = cols < COUT
    image = rows // OHW
    pixel = rows % OHW
    ih0 = (pixel // OW) * stride_h - pad_h
    iw0 = (pixel % OW) * stride_w - pad_w
    if WIDE_OFFSETS:
        row_base = ((image.to(tl.int64) * H + ih0) * W + iw0) * C
    else:
        row_base = ((image * H + ih0) * W + iw0) * C

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, KP, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < KP
        delta = tl.load(k_delta_ptr + ks, mask=k_ok, other=0)
        dh = tl.load(k_dh_ptr + ks, mask=k_ok, other=_PAD_SENTINEL)
        dw = tl.load(k_dw_ptr + ks, mask=k_ok, other=0)
        ih = ih0[:, None] + dh[None, :]
        iw = iw0[:, None] + dw[None, :]
        a_ok = row_ok[:, None] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        if GATHER:
            a = tl.load(x_ptr + (row_base[:, None] + delta[None, :]), mask=a_ok, other=0.0)
        else:  # diagnosis only: x is an operand compacted beforehand, [P, KP]
            a = tl.load(
                x_ptr + (rows[:, None] * KP + ks[None, :]),
                mask=row_ok[:, None] & k_ok[None, :],
                other=0.0,
            )
        b = tl.load(
            w_ptr + (cols[None, :] * KP + ks[:, None]),
            mask=col_ok[None, :] & k_ok[:, None],
            other=0.0,
        )
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if WIDE_OFFSETS:
        out_offsets = rows.to(tl.int64)[:, None] * COUT + cols[None, :]
    else:
        out_offsets = rows[:, None] * COUT + cols[None, :]
    tl.store(
        out_ptr + out_offsets,
        acc.to(out_ptr.dtype.element_ty),
        mask=row_ok[:, None] & col_ok[None, :],
    )


def tap_tables(group_idx, in_channels, kernel_size, dilation, width):
    """Per packed column: input offset (i*d*W + j*d)*C + c and the tap's (dh, dw)."""
    kh, kw = kernel_size
    taps = kh * kw
    group = group_idx.long()
    pad = group < 0
    group = group.clamp(min=0)
    c, tap = group // taps, group % taps
    dh, dw = (tap // kw) * dilation[0], (tap % kw) * dilation[1]
    delta = (dh * width + dw) * in_channels + c
    dh = torch.where(pad, torch.full_like(dh, PAD_SENTINEL), dh)
    return delta.masked_fill(pad, 0).int(), dh.int(), dw.int()


def _precision_name(dtype) -> str:
    if dtype != torch.float32:
        return "ieee"  # ignored for 16-bit operands
    return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"


def implicit_conv2d(x, packed, bias, stride, padding, dilation, tables=None):
    """channels_last x, weight packed for channels_last -> channels_last output."""
    n, c, h, w = x.shape
    kh, kw = packed.kernel_size
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cout, kp = packed.weight.shape
    if tables is None:
        tables = tap_tables(packed.group_idx, c, (kh, kw), dilation, w)
    out = torch.empty(
        (n, cout, oh, ow), device=x.device, dtype=x.dtype, memory_format=torch.channels_last
    )
    pixels = n * oh * ow
    wide = max(x.numel(), out.numel()) >= 2**31
    grid = lambda meta: (  # noqa: E731
        triton.cdiv(pixels, meta["BLOCK_M"]) * triton.cdiv(cout, meta["BLOCK_N"]),
    )
    _implicit_gemm_kernel[grid](
        x,
        packed.weight,
        bias if bias is not None else packed.weight,
        out,
        *tables,
        pixels,
        cout,
        kp,
        h,
        w,
        c,
        ow,
        oh * ow,
        stride[0],
        stride[1],
        padding[0],
        padding[1],
        HAS_BIAS=bias is not None,
        GATHER=True,
        WIDE_OFFSETS=wide,
        PRECISION=_precision_name(x.dtype),
    )
    return out


def implicit_linear(x, packed, bias, tables, gather=True):
    """x [M, in] -> [M, out]: the conv kernel on 1x1 images, one per row."""
    rows, features = x.shape
    cout, kp = packed.weight.shape
    out = torch.empty((rows, cout), device=x.device, dtype=x.dtype)
    grid = lambda meta: (  # noqa: E731
        triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(cout, meta["BLOCK_N"]),
    )
    precision = "ieee"
    if x.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        precision = "tf32"
    kernel = _implicit_gemm_kernel[grid](
        x,
        packed.weight,
        bias if bias is not None else packed.weight,
        out,
        *tables,
        rows,
        cout,
        kp,
        1,
        1,
        features,
        1,
        1,
        1,
        1,
        0,
        0,
        HAS_BIAS=bias is not None,
        GATHER=gather,
        WIDE_OFFSETS=max(x.numel(), out.numel()) >= 2**31,
        PRECISION=precision,
    )
    global last_kernel
    last_kernel = kernel
    return out


def linear_tables(feature_idx):
    pad = feature_idx < 0
    delta = feature_idx.clamp(min=0).int()
    dh = torch.where(pad, torch.full_like(delta, PAD_SENTINEL), torch.zeros_like(delta))
    return delta, dh.int(), torch.zeros_like(delta)


# ---- measurement -----------------------------------------------------------------------

PRECISIONS = {
    "tf32": (torch.float32, True),
    "fp16": (torch.float16, False),
    "bf16": (torch.bfloat16, False),
}
TOLERANCE = {"tf32": 5e-3, "fp16": 1e-2, "bf16": 1e-2}


def set_tf32(enabled: bool) -> None:
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled


def time_ms(fn) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def relative_error(out, ref) -> float:
    return float((out.double() - ref).norm() / ref.norm())


def check(out, ref, precision, what, failures):
    error = relative_error(out, ref)
    ok = error <= TOLERANCE[precision]
    if not ok:
        failures.append(f"{what}: relative error {error:.2e} over {TOLERANCE[precision]}")
    return error


CONV_LAYERS = {
    # name: N, Cin, Cout, H, W, kernel, stride, padding, dilation
    "seed-conv": (64, 512, 512, 28, 28, 3, 1, 1, 1),
    "resnet-128": (64, 128, 128, 28, 28, 3, 1, 1, 1),
    "small-batch": (1, 512, 512, 14, 14, 3, 1, 1, 1),
    "odd-s2d2": (3, 17, 33, 31, 23, 3, 2, 2, 2),
}


def conv_rows(name, precision, keeps, check_only, writer, failures):
    n, c, co, h, w, k, s, p, d = CONV_LAYERS[name]
    dtype, tf32 = PRECISIONS[precision]
    set_tf32(tf32)
    stride, padding, dilation = (s, s), (p, p), (d, d)
    x = torch.randn(n, c, h, w, device="cuda", dtype=dtype)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(co, c, k, k, device="cuda", dtype=dtype) / (c * k * k) ** 0.5
    bias = torch.randn(co, device="cuda", dtype=dtype)
    conv = partial(F.conv2d, stride=stride, padding=padding, dilation=dilation)
    dense = dense_cl = float("nan")
    if not check_only:
        dense = time_ms(lambda: conv(x, weight, bias))
        dense_cl = time_ms(lambda: conv(x_cl, weight, bias))
    for keep in keeps:
        keep_idx = torch.randperm(c * k * k, device="cuda")[: max(1, int(keep * c * k * k))]
        packed = gwprune.pack_conv2d_weight(weight, keep_idx, torch.channels_last)
        tables = tap_tables(packed.group_idx, c, (k, k), dilation, w)
        ref = conv(x.double(), gwprune.mask_weight(weight, keep_idx).double(), bias.double())
        implicit = partial(implicit_conv2d, x_cl, packed, bias, stride, padding, dilation, tables)
        explicit = partial(gwprune.ops.conv2d_packed, x_cl, packed, bias, stride, padding, dilation)
        out = implicit()
        assert out.is_contiguous(memory_format=torch.channels_last)
        err_implicit = check(out, ref, precision, f"implicit {name} {precision} {keep}", failures)
        err_explicit = check(
            explicit(), ref, precision, f"explicit {name} {precision} {keep}", failures
        )
        row = {
            "layer": name,
            "precision": precision,
            "keep": keep,
            "err_implicit": f"{err_implicit:.2e}",
            "err_explicit": f"{err_explicit:.2e}",
        }
        if not check_only:
            oh, ow = out.shape[2], out.shape[3]
            cols = torch.randn(n * oh * ow, packed.weight.shape[1], device="cuda", dtype=dtype)
            floor = time_ms(partial(torch.mm, cols, packed.weight.t()))
            del cols
            row.update(
                dense_nchw=dense,
                dense_cl=dense_cl,
                floor=floor,
                explicit_cl=time_ms(explicit),
                implicit_cl=time_ms(implicit),
                config=str(_implicit_gemm_kernel.best_config),
            )
        writer(row)


def linear_rows(precision, keeps, check_only, writer, failures):
    rows, features, out_features = 8192, 768, 3072
    dtype, tf32 = PRECISIONS[precision]
    set_tf32(tf32)
    x = torch.randn(rows, features, device="cuda", dtype=dtype)
    weight = torch.randn(out_features, features, device="cuda", dtype=dtype) / features**0.5
    bias = torch.randn(out_features, device="cuda", dtype=dtype)
    dense = float("nan") if check_only else time_ms(lambda: F.linear(x, weight, bias))
    for keep in keeps:
        keep_idx = torch.randperm(features, device="cuda")[: int(keep * features)]
        packed = gwprune.pack_linear_weight(weight, keep_idx)
        tables = linear_tables(packed.feature_idx)
        ref = F.linear(x.double(), gwprune.mask_weight(weight, keep_idx).double(), bias.double())
        implicit = partial(implicit_linear, x, packed, bias, tables)
        explicit = partial(gwprune.ops.linear_packed, x, packed, bias)
        err_implicit = check(
            implicit(), ref, precision, f"implicit bert-ffn {precision} {keep}", failures
        )
        err_explicit = check(
            explicit(), ref, precision, f"explicit bert-ffn {precision} {keep}", failures
        )
        row = {
            "layer": "bert-ffn",
            "precision": precision,
            "keep": keep,
            "err_implicit": f"{err_implicit:.2e}",
            "err_explicit": f"{err_explicit:.2e}",
        }
        if not check_only:
            xg = torch.randn(rows, packed.weight.shape[1], device="cuda", dtype=dtype)
            floor = time_ms(partial(torch.mm, xg, packed.weight.t()))
            row.update(
                dense_nchw=dense,
                dense_cl=dense,
                floor=floor,
                explicit_cl=time_ms(explicit),
                implicit_cl=time_ms(implicit),
                config=str(_implicit_gemm_kernel.best_config),
            )
        writer(row)


FIELDS = [
    "layer",
    "precision",
    "keep",
    "dense_nchw",
    "dense_cl",
    "floor",
    "explicit_cl",
    "implicit_cl",
    "err_implicit",
    "err_explicit",
    "config",
]


def ptx_facts(kernel) -> str:
    ptx = kernel.asm["ptx"]
    words = ("cp.async", "wgmma", "mma.sync", "ld.global", "ld.local", "st.local")
    return ", ".join(f"{word} x{ptx.count(word)}" for word in words)


def diagnose(precision):
    """Is the slowness the gather or the kernel? The same kernel on the BERT FFN shape
    with A gathered (x[:, feature_idx]) and with A an operand compacted beforehand."""
    dtype, tf32 = PRECISIONS[precision]
    set_tf32(tf32)
    x = torch.randn(8192, 768, device="cuda", dtype=dtype)
    weight = torch.randn(3072, 768, device="cuda", dtype=dtype)
    keep_idx = torch.randperm(768, device="cuda")[:384]
    packed = gwprune.pack_linear_weight(weight, keep_idx)
    tables = linear_tables(packed.feature_idx)
    compacted = x.index_select(1, packed.feature_idx.clamp(min=0).long()).contiguous()
    ref = compacted.double() @ packed.weight.double().t()
    for name, operand, gather in (("gathered", x, True), ("compacted", compacted, False)):
        fn = partial(implicit_linear, operand, packed, None, tables, gather)
        error = relative_error(fn(), ref)
        facts = ptx_facts(last_kernel)
        print(
            f"diagnose {precision} {name}: {time_ms(fn):.4f} ms, error {error:.1e}, "
            f"{_implicit_gemm_kernel.best_config}; ptx: {facts}",
            flush=True,
        )
    print(
        f"diagnose {precision} torch.mm compacted: "
        f"{time_ms(partial(torch.mm, compacted, packed.weight.t())):.4f} ms",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--check-only", action="store_true", help="correctness only, no timing")
    parser.add_argument("--precisions", default="tf32,fp16,bf16")
    parser.add_argument("--diagnose", action="store_true", help="gathered vs compacted A only")
    args = parser.parse_args()
    if args.diagnose:
        for precision in args.precisions.split(","):
            diagnose(precision)
        return 0
    os.makedirs(args.out, exist_ok=True)
    torch.backends.cudnn.benchmark = True
    failures: list[str] = []
    with open(os.path.join(args.out, "implicit.csv"), "w", newline="") as handle:
        table = csv.DictWriter(handle, FIELDS, restval="")
        table.writeheader()

        def writer(row):
            table.writerow(row)
            handle.flush()
            cells = [
                f"{row.get(f):.4g}" if isinstance(row.get(f), float) else str(row.get(f, ""))
                for f in FIELDS[:-1]
            ]
            print(" | ".join(cells), flush=True)

        print(" | ".join(FIELDS[:-1]))
        for precision in args.precisions.split(","):
            conv_rows("odd-s2d2", precision, (1.0, 0.5, 0.1), True, writer, failures)
            conv_rows("seed-conv", precision, (0.75, 0.5, 0.25), args.check_only, writer, failures)
            conv_rows("resnet-128", precision, (0.5,), args.check_only, writer, failures)
            conv_rows("small-batch", precision, (0.5,), args.check_only, writer, failures)
            linear_rows(precision, (0.5, 0.25), args.check_only, writer, failures)
    for failure in failures:
        print("FAILED", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
