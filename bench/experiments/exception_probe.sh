#!/usr/bin/env bash
# Why does a C++ exception leaving gwprune._C crash some torch builds (seen with
# torch 2.11.0+cu130)? Each probe raises one error from inside the extension in
# its own process and reports how the process ended; under cuda-gdb (when
# present) the crashing one also prints a backtrace.
set -u
PY=${PYTHON:-python3}
probe() {
  local name=$1 code=$2
  $PY -X faulthandler -c "import torch, gwprune; from gwprune._extension import _C
$code" >"/tmp/probe-$name.log" 2>&1
  local rc=$?
  echo "probe $name: rc=$rc :: $(grep -E 'Error|error|Fatal' "/tmp/probe-$name.log" | head -3 | tr '\n' ' ')"
  if [ $rc -ge 128 ] && command -v cuda-gdb >/dev/null; then
    timeout 180 cuda-gdb -q -batch -ex run -ex bt -ex quit --args $PY -c "import torch, gwprune; from gwprune._extension import _C
$code" 2>&1 | grep -E "^#|signal|SIG" | head -40
  fi
}
probe value-error-cpu "_C.linear_packed(torch.randn(2, 3), torch.randn(4, 5), torch.zeros(5, dtype=torch.int32), None, 1024)"
probe value-error-cuda "_C.linear_packed(torch.randn(2, 3, device='cuda'), torch.randn(4, 5, device='cuda'), torch.zeros(5, dtype=torch.int32, device='cuda'), None, 1024)"
probe type-error-cuda "_C.linear_packed(torch.randn(2, 5, device='cuda'), torch.randn(4, 5, device='cuda'), torch.zeros(5, device='cuda'), None, 1024)"
# The calls of tests/test_validation.py::test_compiled_entry_points_validate_too, one each.
W="w = torch.randn(6, 8); i = torch.zeros(8, dtype=torch.int32); a = ([1, 1], [1, 1], [0, 0], [1, 1], 1 << 20)"
probe dim-check "$W; _C.conv2d_packed(torch.randn(4, 8, 8), w, i, None, *a)"
probe index-dtype "$W; _C.conv2d_packed(torch.randn(1, 4, 8, 8), w, i.long(), None, *a)"
probe index-count "$W; _C.conv2d_packed(torch.randn(1, 4, 8, 8), w, i[:7], None, *a)"
probe stride "$W; _C.conv2d_packed(torch.randn(1, 4, 8, 8), w, i, None, [1, 1], [0, 1], [0, 0], [1, 1], 1)"
probe cpu-only "$W; _C.conv2d_packed(torch.randn(1, 4, 8, 8), w, i, None, *a)"
probe linear-index-dtype "$W; _C.linear_packed(torch.randn(2, 8), w, i.long(), None, 1 << 20)"
probe all-in-pytest "import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests/test_validation.py', '-k', 'compiled_entry_points']))"
probe device-mismatch "_C.linear_packed(torch.randn(2, 8, device='cuda'), torch.randn(4, 8), torch.zeros(8, dtype=torch.int32, device='cuda'), None, 1024)"
probe torch-op-error "torch.ops.aten.mm(torch.randn(2, 3), torch.randn(4, 5))"
