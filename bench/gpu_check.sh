#!/usr/bin/env bash
# One GPU-machine run: build, CUDA tests, compute-sanitizer, layer benchmark.
#
#   bash bench/gpu_check.sh [STAGE ...]
#   stages: build test sanitize bench workspace (the default set), and on request
#           probe (C++ exception probe) and sweep (bench/experiments/pipeline_sweep.py)
#   TESTS="tests/test_x.py ..." limits the test stage to those files.
#
# Writes logs and results under $OUT (or bench/results/gpu-check when unset) and
# prints a short summary last. Builds in place (python/gwprune/_C*.so) so later
# calls on a warm machine rebuild only what changed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
STAGES=${*:-build test sanitize bench workspace}
PY=${PYTHON:-python3}
summary=()

stage() { [[ " $STAGES " == *" $1 "* ]]; }
note() { summary+=("$1"); echo "== $1"; }

{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  $PY -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'
} 2>&1 | tee "$OUT/env.txt"

if stage build; then
  start=$SECONDS
  if MAX_JOBS=${MAX_JOBS:-16} $PY setup.py build_ext --inplace >"$OUT/build.log" 2>&1; then
    note "build: ok ($((SECONDS - start)) s)"
  else
    tail -40 "$OUT/build.log"; note "build: FAILED"; printf '%s\n' "${summary[@]}"; exit 1
  fi
  $PY -m gwprune info | tee -a "$OUT/env.txt"
fi

if stage test; then
  start=$SECONDS
  $PY -m pytest ${TESTS:-tests} -q -ra -p no:cacheprovider >"$OUT/pytest.log" 2>&1
  rc=$?
  note "pytest (all tests, CUDA included): rc=$rc, $(tail -1 "$OUT/pytest.log") ($((SECONDS - start)) s)"
  grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -20
fi

if stage sanitize; then
  # Sanitizers instrument every kernel, torch's included: a focused CUDA subset.
  subset=(tests/test_conv2d.py tests/test_linear.py tests/test_cuda_integration.py
          -k "cuda-fp32 or workspace or chunked or empty")
  for tool in memcheck racecheck initcheck synccheck; do
    start=$SECONDS
    timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 \
      $PY -m pytest "${subset[@]}" -q -p no:cacheprovider -x >"$OUT/sanitize-$tool.log" 2>&1
    rc=$?
    errors=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitize-$tool.log" | tail -1)
    note "compute-sanitizer $tool: rc=$rc; ${errors:-no summary}; $(grep -E 'passed|failed' "$OUT/sanitize-$tool.log" | tail -1) ($((SECONDS - start)) s)"
  done
fi

if stage bench; then
  start=$SECONDS
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '-' | tr -s '-')
  dest=bench/results/quick-${card%-}
  $PY -m gwprune bench --quick --out "$dest" ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1
  note "bench --quick: rc=$? ($((SECONDS - start)) s) -> $dest"
  tar czf "$OUT/bench-quick.tgz" -C bench/results "$(basename "$dest")"
  [ -f "$dest/results.md" ] && head -80 "$dest/results.md"
fi

if stage probe; then
  bash bench/experiments/exception_probe.sh 2>&1 | tee "$OUT/exception-probe.txt"
  note "exception probe: $(grep -c '^probe' "$OUT/exception-probe.txt") probes (see exception-probe.txt)"
fi

if stage sweep; then
  start=$SECONDS
  $PY bench/experiments/pipeline_sweep.py --out "$OUT/sweep" ${SWEEP_ARGS:-} >"$OUT/sweep.log" 2>&1
  note "pipeline sweep: rc=$? ($((SECONDS - start)) s)"
  tail -5 "$OUT/sweep.log"
fi

if stage workspace; then
  # The speed cost of the workspace cap: the seed conv at several caps, side by side.
  for mb in 64 256 1024; do
    $PY -m gwprune bench --layers seed-conv --providers dense,dense-cl,group-packed,group-packed-cl,floor-flat \
      --workspace-mb "$mb" --no-plots --out "bench/results/workspace-$mb" >"$OUT/workspace-$mb.log" 2>&1
    note "workspace ${mb} MiB: rc=$?"
    grep -E "^### |^\| group-packed" "bench/results/workspace-$mb/results.md"
  done > "$OUT/workspace.txt"
  cat "$OUT/workspace.txt"
fi

echo
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
