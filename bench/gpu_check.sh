#!/usr/bin/env bash
# One GPU-machine run: build, CUDA tests, compute-sanitizer, layer benchmark.
#
#   bash bench/gpu_check.sh [STAGE ...]
#   stages: build test sanitize bench workspace (the default set), and on request
#           probe (C++ exception probe), sweep (bench/experiments/chunk_sweep.py),
#           layers (bench/experiments/model_layers.py: each converted layer vs dense),
#           models (gwprune bench --models) and paper (gwprune bench --paper)
#   TESTS="tests/test_x.py ..." limits the test stage to those files;
#   MODELS_MINUTES / PAPER_MINUTES bound the two long benchmarks (rerun resumes).
#
# Logs go to $LOGS (bench/results/gpu-check when $OUT is unset), results to
# bench/results/<kind>-<card>-<date>; with $OUT set (the device tool), everything is
# also packed into $OUT/gpu-check.tgz after every stage, so a run cut short still
# returns what it finished. Prints a short summary last. Builds in place
# (python/gwprune/_C*.so) so later calls on a warm machine rebuild only what changed.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${OUT:-}" ]; then LOGS=/tmp/gpu-check; else LOGS=bench/results/gpu-check; fi
mkdir -p "$LOGS"
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
STAGES=${*:-build test sanitize bench workspace}
PY=${PYTHON:-python3}
summary=()

card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '-' | tr -s '-')
card=${card%-}
today=$(date -u +%Y-%m-%d)
stage() { [[ " $STAGES " == *" $1 "* ]]; }
note() {
  summary+=("$1"); echo "== $1"
  printf '%s\n' "${summary[@]}" >"$LOGS/summary.txt"
  if [ -n "${OUT:-}" ]; then
    local results=()
    for dir in bench/results/*-"$card"-"$today"; do
      [ -d "$dir" ] && results+=(-C "$PWD/bench/results" "$(basename "$dir")")
    done
    tar czf "$OUT/gpu-check.tgz" -C /tmp gpu-check "${results[@]}" 2>/dev/null
  fi
}

{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  $PY -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'
} 2>&1 | tee "$LOGS/env.txt"

if stage build; then
  start=$SECONDS
  if MAX_JOBS=${MAX_JOBS:-16} $PY setup.py build_ext --inplace >"$LOGS/build.log" 2>&1; then
    note "build: ok ($((SECONDS - start)) s)"
  else
    tail -40 "$LOGS/build.log"; note "build: FAILED"; printf '%s\n' "${summary[@]}"; exit 1
  fi
  $PY -m gwprune info | tee -a "$LOGS/env.txt"
fi

if stage test; then
  start=$SECONDS
  $PY -m pytest ${TESTS:-tests} -q -ra -p no:cacheprovider >"$LOGS/pytest.log" 2>&1
  rc=$?
  note "pytest (all tests, CUDA included): rc=$rc, $(tail -1 "$LOGS/pytest.log") ($((SECONDS - start)) s)"
  grep -E "^(FAILED|ERROR)" "$LOGS/pytest.log" | head -20
fi

if stage sanitize; then
  # Sanitizers instrument every kernel, torch's included: a focused CUDA subset.
  subset=(tests/test_conv2d.py tests/test_linear.py tests/test_chunks_and_bias.py
          -k "cuda-fp32 or (chunked and (fp32 or bf16)) or epilogue")
  # The implicit kernel's NCHW producers (run, pair, line gathers) on shapes that take them.
  implicit=(tests/test_implicit_conv.py
            -k "nchw_gathers and fp16 and (n3-c64 or n2-c24 or n2-c64-o300 or o512 or o1000)")
  # The window kernel (csrc/cuda/implicit/windows/) on every geometry of its test grid.
  windows=(tests/test_implicit_conv.py -k "window_kernel and fp16 and (half or all)")
  for tool in memcheck racecheck initcheck synccheck; do
    for part in main implicit windows; do
      start=$SECONDS
      case $part in
        main) args=("${subset[@]}") ;;
        implicit) args=("${implicit[@]}") ;;
        *) args=("${windows[@]}") ;;
      esac
      log="$LOGS/sanitize-$tool-$part.log"
      timeout ${SANITIZE_TIMEOUT:-150} compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 \
        $PY -m pytest "${args[@]}" -q -p no:cacheprovider -x >"$log" 2>&1
      rc=$?
      errors=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$log" | tail -1)
      note "compute-sanitizer $tool ($part): rc=$rc; ${errors:-no summary}; $(grep -E 'passed|failed' "$log" | tail -1) ($((SECONDS - start)) s)"
    done
  done
fi

if stage bench; then
  start=$SECONDS
  dest=bench/results/quick-$card-$today
  $PY -m gwprune bench --quick --out "$dest" ${BENCH_ARGS:-} >"$LOGS/bench.log" 2>&1
  note "bench --quick: rc=$? ($((SECONDS - start)) s) -> $dest"
  [ -f "$dest/results.md" ] && head -80 "$dest/results.md"
fi

if stage probe; then
  bash bench/experiments/exception_probe.sh 2>&1 | tee "$LOGS/exception-probe.txt"
  note "exception probe: $(grep -c '^probe' "$LOGS/exception-probe.txt") probes (see exception-probe.txt)"
fi

if stage sweep; then
  start=$SECONDS
  $PY bench/experiments/chunk_sweep.py --out "$LOGS/sweep" ${SWEEP_ARGS:-} >"$LOGS/sweep.log" 2>&1
  note "chunk sweep: rc=$? ($((SECONDS - start)) s)"
  tail -5 "$LOGS/sweep.log"
fi

if stage layers; then
  start=$SECONDS
  $PY bench/experiments/model_layers.py --out "$LOGS/layers" ${LAYERS_ARGS:-} >"$LOGS/layers.log" 2>&1
  note "model layers: rc=$? ($((SECONDS - start)) s)"
  grep "^==" "$LOGS/layers.log"
fi

if stage workspace; then
  # The speed cost of the workspace cap: the seed conv at several caps, side by side.
  for mb in 64 256 1024; do
    $PY -m gwprune bench --layers seed-conv --providers dense,dense-cl,group-packed,group-packed-cl,floor-flat \
      --workspace-mb "$mb" --no-plots --out "$LOGS/workspace-$mb" >"$LOGS/workspace-$mb.log" 2>&1
    note "workspace ${mb} MiB: rc=$?"
    grep -E "^### |^\| group-packed" "$LOGS/workspace-$mb/results.md"
  done > "$LOGS/workspace.txt"
  cat "$LOGS/workspace.txt"
fi

# A long benchmark (gwprune bench --models / --paper) under a time limit, resumed from its
# results.csv when an earlier command left one.
long_bench() {
  local kind=$1 minutes=$2 start=$SECONDS
  local dest=bench/results/$kind-$card-$today resume=()
  [ -f "$dest/results.csv" ] && resume=(--resume)
  $PY -m gwprune bench "--$kind" --max-minutes "$minutes" --out "$dest" "${resume[@]}" \
    >"$LOGS/$kind.log" 2>&1
  note "bench --$kind: rc=$? ($((SECONDS - start)) s) -> $dest"
  [ -f "$dest/results.md" ] && head -60 "$dest/results.md"
}

stage models && long_bench models "${MODELS_MINUTES:-6}"
stage paper && long_bench paper "${PAPER_MINUTES:-6}"

echo
printf '%s\n' "${summary[@]}"
