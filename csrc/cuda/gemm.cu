// cuBLAS calls for gwprune: layouts, precision and the math-mode guard.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/Exceptions.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/util/Exception.h>
#include <cublasLt.h>
#include <cublas_v2.h>

#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include "../error_message.h"
#include "bias_columns.h"
#include "gemm.h"

namespace gwprune::cuda {
namespace {

// PyTorch's handle carries the math mode of torch.backends.cuda.matmul.allow_tf32,
// but conv follows the cuDNN flag instead, so every call sets the mode it
// needs and restores the handle's mode afterwards; neither when the handle
// already has it (strict fp32 under PyTorch's default flags: two calls saved).
class MathModeGuard {
 public:
  MathModeGuard(cublasHandle_t handle, cublasMath_t mode) : handle_(handle) {
    TORCH_CUDABLAS_CHECK(cublasGetMathMode(handle_, &saved_));
    changed_ = saved_ != mode;
    if (changed_) TORCH_CUDABLAS_CHECK(cublasSetMathMode(handle_, mode));
  }
  ~MathModeGuard() {
    if (changed_) cublasSetMathMode(handle_, saved_);
  }
  MathModeGuard(const MathModeGuard&) = delete;
  MathModeGuard& operator=(const MathModeGuard&) = delete;

 private:
  cublasHandle_t handle_;
  cublasMath_t saved_;
  bool changed_;
};

int as_cublas_int(int64_t value, const char* what) {
  GWPRUNE_CHECK(value >= 0 && value <= std::numeric_limits<int>::max(), "GEMM ", what, " = ", value,
                " does not fit cuBLAS's 32-bit int (the caller must chunk)");
  return static_cast<int>(value);
}

cudaDataType_t cuda_data_type(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return CUDA_R_32F;
    case at::kHalf:
      return CUDA_R_16F;
    case at::kBFloat16:
      return CUDA_R_16BF;
    case at::kDouble:
      return CUDA_R_64F;
    default:
      GWPRUNE_CHECK(false, "no cuBLAS type for dtype ", dtype);
  }
}

// The inner dimension of out = a @ b, after checking that the shapes agree.
int64_t checked_inner_dim(const RowMajorOperand& a, const RowMajorOperand& b,
                          const RowMajorOutput& out) {
  const int64_t inner = a.transposed ? a.rows : a.cols;
  TORCH_CHECK(inner == (b.transposed ? b.cols : b.rows), "gwprune: GEMM inner dimensions differ");
  TORCH_CHECK(out.rows == (a.transposed ? a.cols : a.rows), "gwprune: GEMM output rows differ");
  TORCH_CHECK(out.cols == (b.transposed ? b.rows : b.cols), "gwprune: GEMM output cols differ");
  return inner;
}

cublasOperation_t cublas_op(const RowMajorOperand& operand) {
  return operand.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
}

// Largest power of two (capped at 256, cuBLASLt's default assumption) that
// divides the address: cuBLASLt must be told, or it may pick a kernel whose
// vector loads need more alignment than a chunk's offset pointer has.
uint32_t pointer_alignment(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// Owning wrappers so an early return or a failed check never leaks a descriptor.
template <typename T, cublasStatus_t (*destroy)(T)>
struct LtDeleter {
  void operator()(T handle) const { destroy(handle); }
};
using LtMatmulDesc = std::unique_ptr<std::remove_pointer_t<cublasLtMatmulDesc_t>,
                                     LtDeleter<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>>;
using LtLayout = std::unique_ptr<std::remove_pointer_t<cublasLtMatrixLayout_t>,
                                 LtDeleter<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>>;
using LtPreference =
    std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>,
                    LtDeleter<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>>;

// Column-major layout of a stored matrix: cuBLAS sees a row-major rows x cols
// operand as cols x rows column-major with the same leading dimension.
LtLayout column_major_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
  cublasLtMatrixLayout_t layout = nullptr;
  TORCH_CUDABLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, cols, rows, ld));
  return LtLayout(layout);
}

template <typename T>
void set_attribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute,
                   const T& value) {
  TORCH_CUDABLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)));
}

template <typename T>
void set_preference(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attribute,
                    const T& value) {
  TORCH_CUDABLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, attribute, &value, sizeof(value)));
}

// cuBLASLt's heuristic query costs more host time than a small layer's whole
// GEMM, and its answer depends only on what is in the key (shapes, leading
// dimensions, types, transposes, pointer alignments, workspace, epilogue,
// device), not on the pointers themselves: its result, including "no
// algorithm", is kept per key, process-wide, so every thread runs the same
// algorithm for the same key. Bounded: cleared when a workload cycles through
// many shapes.
using LtAlgoKey = std::array<int64_t, 19>;

struct LtAlgoKeyHash {
  size_t operator()(const LtAlgoKey& key) const {
    uint64_t hash = 1469598103934665603ull;  // FNV-1a over the fields
    for (const int64_t field : key) hash = (hash ^ static_cast<uint64_t>(field)) * 1099511628211ull;
    return static_cast<size_t>(hash);
  }
};

struct CachedLtAlgo {
  bool found;
  cublasLtMatmulAlgo_t algo;
};

constexpr size_t kMaxCachedLtAlgos = 4096;

class LtAlgoCache {
 public:
  bool lookup(const LtAlgoKey& key, CachedLtAlgo& result) {
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto it = entries_.find(key);
    if (it == entries_.end()) return false;
    result = it->second;
    return true;
  }
  void store(const LtAlgoKey& key, const CachedLtAlgo& value) {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (entries_.size() >= kMaxCachedLtAlgos) entries_.clear();
    entries_[key] = value;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<LtAlgoKey, CachedLtAlgo, LtAlgoKeyHash> entries_;
};

LtAlgoCache& lt_algo_cache() {
  static LtAlgoCache cache;
  return cache;
}

// Everything one cuBLASLt call needs besides its pointers: the matmul descriptor
// (transposes, epilogue), the three layouts and the algorithm. Creating and
// destroying four descriptors and setting their attributes cost every call host
// time though they depend only on the key; a repeated call now only sets the
// bias pointer (the one attribute that is a pointer).
struct LtPlan {
  CachedLtAlgo choice{};
  LtMatmulDesc desc;
  LtLayout b_layout;
  LtLayout a_layout;
  LtLayout out_layout;
};

// Per thread, not shared: a call writes its bias pointer into the plan's
// descriptor, and cublasLtMatmulDescSetAttribute on a descriptor that another
// thread is passing to cublasLtMatmul at the same time is a data race. A
// thread's own plans need no lock either (the hit path takes none). Bounded like
// LtAlgoCache; the unique_ptrs destroy the descriptors when the cache is cleared
// or its thread exits.
class LtPlanCache {
 public:
  LtPlan* find(const LtAlgoKey& key) {
    const auto it = plans_.find(key);
    return it == plans_.end() ? nullptr : &it->second;
  }
  LtPlan& insert(const LtAlgoKey& key, LtPlan plan) {
    if (plans_.size() >= kMaxCachedLtAlgos) plans_.clear();
    return plans_.insert_or_assign(key, std::move(plan)).first->second;
  }

 private:
  std::unordered_map<LtAlgoKey, LtPlan, LtAlgoKeyHash> plans_;
};

LtPlanCache& thread_lt_plans() {
  thread_local LtPlanCache plans;
  return plans;
}

}  // namespace

bool bias_epilogue_supported(at::ScalarType dtype, bool allow_tf32) {
  return dtype == at::kHalf || dtype == at::kBFloat16 || (dtype == at::kFloat && allow_tf32);
}

bool epilogue_fuses(Activation activation) {
  return activation == Activation::kRelu || activation == Activation::kGeluTanh;
}

namespace {

cublasLtEpilogue_t lt_epilogue(bool has_bias, Activation activation) {
  if (activation == Activation::kRelu)
    return has_bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
  if (activation == Activation::kGeluTanh)
    return has_bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
  return has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
}

// What one cuBLASLt call is asked for, beyond its pointers (the plan's key).
struct LtCall {
  cudaDataType_t type;
  cublasComputeType_t compute;
  cublasOperation_t op_a;
  cublasOperation_t op_b;
  cublasLtEpilogue_t epilogue;
  uint64_t workspace_size;
  uint32_t align_a;
  uint32_t align_b;
  uint32_t align_out;
};

LtAlgoKey lt_plan_key(const LtCall& call, const RowMajorOperand& a, const RowMajorOperand& b,
                      const RowMajorOutput& out) {
  return {at::cuda::current_device(),
          static_cast<int64_t>(call.type),
          static_cast<int64_t>(call.compute),
          static_cast<int64_t>(call.op_a),
          static_cast<int64_t>(call.op_b),
          a.rows,
          a.cols,
          a.ld,
          b.rows,
          b.cols,
          b.ld,
          out.rows,
          out.cols,
          out.ld,
          call.align_a,
          call.align_b,
          call.align_out,
          static_cast<int64_t>(call.workspace_size),
          static_cast<int64_t>(call.epilogue)};
}

// The algorithm for a new plan: LtAlgoCache's answer when another thread (or an
// evicted plan) already asked, else cuBLASLt's heuristic, stored there.
CachedLtAlgo choose_lt_algo(const LtAlgoKey& key, const LtCall& call, const LtPlan& plan,
                            cublasLtHandle_t handle) {
  CachedLtAlgo choice{};
  if (lt_algo_cache().lookup(key, choice)) return choice;
  cublasLtMatmulPreference_t raw_pref = nullptr;
  TORCH_CUDABLAS_CHECK(cublasLtMatmulPreferenceCreate(&raw_pref));
  const LtPreference pref(raw_pref);
  set_preference(pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, call.workspace_size);
  set_preference(pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, call.align_b);
  set_preference(pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, call.align_a);
  set_preference(pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, call.align_out);
  set_preference(pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, call.align_out);
  // Split-K partial sums stay in fp32: reducing them in bf16/fp16 (out of
  // place in the output type, or in place in the output buffer) cost a bf16
  // channels_last conv 7x the error of F.conv2d.
  const auto fp32_reductions = static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE);
  set_preference(pref.get(), CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, fp32_reductions);

  cublasLtMatmulHeuristicResult_t heuristic = {};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      handle, plan.desc.get(), plan.b_layout.get(), plan.a_layout.get(), plan.out_layout.get(),
      plan.out_layout.get(), pref.get(), 1, &heuristic, &found);
  choice.found = status == CUBLAS_STATUS_SUCCESS && found > 0;
  choice.algo = heuristic.algo;
  lt_algo_cache().store(key, choice);
  return choice;
}

// A new plan: descriptor and layouts for `call`, then its algorithm. The bias
// pointer is set before the heuristic runs, as every call sets it before its matmul.
LtPlan make_lt_plan(const LtAlgoKey& key, const LtCall& call, const RowMajorOperand& a,
                    const RowMajorOperand& b, const RowMajorOutput& out, const void* bias,
                    cublasLtHandle_t handle) {
  cublasLtMatmulDesc_t raw_desc = nullptr;
  TORCH_CUDABLAS_CHECK(cublasLtMatmulDescCreate(&raw_desc, call.compute, CUDA_R_32F));
  LtPlan plan;
  plan.desc.reset(raw_desc);
  set_attribute(plan.desc.get(), CUBLASLT_MATMUL_DESC_TRANSA, call.op_b);
  set_attribute(plan.desc.get(), CUBLASLT_MATMUL_DESC_TRANSB, call.op_a);
  set_attribute(plan.desc.get(), CUBLASLT_MATMUL_DESC_EPILOGUE, call.epilogue);
  if (bias != nullptr) set_attribute(plan.desc.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  plan.b_layout = column_major_layout(call.type, b.rows, b.cols, b.ld);
  plan.a_layout = column_major_layout(call.type, a.rows, a.cols, a.ld);
  plan.out_layout = column_major_layout(call.type, out.rows, out.cols, out.ld);
  plan.choice = choose_lt_algo(key, call, plan, handle);
  return plan;
}

}  // namespace

bool gemm_bias_epilogue(const RowMajorOperand& a, const RowMajorOperand& b,
                        const RowMajorOutput& out, const void* bias, at::ScalarType dtype,
                        bool allow_tf32, Activation activation) {
  if (!bias_epilogue_supported(dtype, allow_tf32)) return false;
  // The epilogue reads the bias with vector loads; an odd offset view of a
  // bias tensor takes the prefill path instead.
  if (bias != nullptr && pointer_alignment(bias) < 16) return false;
  checked_inner_dim(a, b, out);
  if (out.rows == 0 || out.cols == 0) return true;

  // Same mapping as gemm(): column-major out^T = B^T @ A^T, B passed first.
  // The bias then runs along cuBLAS's m (= out.cols), which is what
  // CUBLASLT_EPILOGUE_BIAS broadcasts.
  const bool tf32 = dtype == at::kFloat;
  const LtCall call{cuda_data_type(dtype),
                    tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
                    cublas_op(a),
                    cublas_op(b),
                    lt_epilogue(bias != nullptr, activation),
                    static_cast<uint64_t>(at::cuda::getCUDABlasLtWorkspaceSize()),
                    pointer_alignment(a.data),
                    pointer_alignment(b.data),
                    pointer_alignment(out.data)};
  const LtAlgoKey key = lt_plan_key(call, a, b, out);

  cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
  LtPlanCache& plans = thread_lt_plans();
  LtPlan* plan = plans.find(key);
  if (plan == nullptr) {
    plan = &plans.insert(key, make_lt_plan(key, call, a, b, out, bias, handle));
  } else if (bias != nullptr && plan->choice.found) {
    set_attribute(plan->desc.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  }
  if (!plan->choice.found) return false;

  const float alpha = 1.0f;
  const float beta = 0.0f;
  TORCH_CUDABLAS_CHECK(cublasLtMatmul(
      handle, plan->desc.get(), &alpha, b.data, plan->b_layout.get(), a.data, plan->a_layout.get(),
      &beta, out.data, plan->out_layout.get(), out.data, plan->out_layout.get(), &plan->choice.algo,
      at::cuda::getCUDABlasLtWorkspace(), call.workspace_size, at::cuda::getCurrentCUDAStream()));
  return true;
}

void gemm(const RowMajorOperand& a, const RowMajorOperand& b, const RowMajorOutput& out,
          int64_t batch, at::ScalarType dtype, bool allow_tf32, float beta) {
  const int64_t inner = checked_inner_dim(a, b, out);
  if (batch == 0 || out.rows == 0 || out.cols == 0) return;

  // Row-major out = A @ B is column-major out^T = B^T @ A^T, and a row-major
  // matrix read column-major is already its transpose: pass B first, A second.
  const cublasOperation_t op_b = cublas_op(b);
  const cublasOperation_t op_a = cublas_op(a);
  const int m = as_cublas_int(out.cols, "m");
  const int n = as_cublas_int(out.rows, "n");
  const int k = as_cublas_int(inner, "k");
  const int ld_b = as_cublas_int(b.ld, "ld of B");
  const int ld_a = as_cublas_int(a.ld, "ld of A");
  const int ld_out = as_cublas_int(out.ld, "ld of C");
  const int batch_count = as_cublas_int(batch, "batch");

  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();

  if (dtype == at::kFloat && !allow_tf32) {
    // Strict fp32 is plain SGEMM with tensor-core down-conversion switched off.
    MathModeGuard mode(handle, CUBLAS_DEFAULT_MATH);
    const float alpha_f = 1.0f;
    if (batch_count == 1) {
      TORCH_CUDABLAS_CHECK(cublasSgemm(
          handle, op_b, op_a, m, n, k, &alpha_f, static_cast<const float*>(b.data), ld_b,
          static_cast<const float*>(a.data), ld_a, &beta, static_cast<float*>(out.data), ld_out));
    } else {
      TORCH_CUDABLAS_CHECK(cublasSgemmStridedBatched(
          handle, op_b, op_a, m, n, k, &alpha_f, static_cast<const float*>(b.data), ld_b,
          b.batch_stride, static_cast<const float*>(a.data), ld_a, a.batch_stride, &beta,
          static_cast<float*>(out.data), ld_out, out.batch_stride, batch_count));
    }
    return;
  }

  if (dtype == at::kDouble) {
    MathModeGuard mode(handle, CUBLAS_DEFAULT_MATH);
    const double alpha_d = 1.0;
    const double beta_d = beta;
    TORCH_CUDABLAS_CHECK(cublasDgemmStridedBatched(
        handle, op_b, op_a, m, n, k, &alpha_d, static_cast<const double*>(b.data), ld_b,
        b.batch_stride, static_cast<const double*>(a.data), ld_a, a.batch_stride, &beta_d,
        static_cast<double*>(out.data), ld_out, out.batch_stride, batch_count));
    return;
  }

  // TF32, fp16 and bf16: tensor cores with fp32 accumulation and fp32 alpha/beta.
  const bool tf32 = dtype == at::kFloat;
  // fp16/bf16: no reduced-precision split-K reductions, as in gemm_bias_epilogue.
  const auto half_mode = static_cast<cublasMath_t>(
      CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  MathModeGuard mode(handle, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : half_mode);
  const cublasComputeType_t compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const cudaDataType_t type = cuda_data_type(dtype);
  const float alpha_f = 1.0f;
  if (batch_count == 1) {
    TORCH_CUDABLAS_CHECK(cublasGemmEx(handle, op_b, op_a, m, n, k, &alpha_f, b.data, type, ld_b,
                                      a.data, type, ld_a, &beta, out.data, type, ld_out, compute,
                                      CUBLAS_GEMM_DEFAULT));
  } else {
    TORCH_CUDABLAS_CHECK(cublasGemmStridedBatchedEx(
        handle, op_b, op_a, m, n, k, &alpha_f, b.data, type, ld_b, b.batch_stride, a.data, type,
        ld_a, a.batch_stride, &beta, out.data, type, ld_out, out.batch_stride, batch_count, compute,
        CUBLAS_GEMM_DEFAULT));
  }
}

void gemm_rows(const RowMajorOperand& a, const RowMajorOperand& b, const RowMajorOutput& out,
               const at::Tensor& epilogue_bias, float beta, at::ScalarType dtype, bool allow_tf32,
               Activation activation) {
  const bool fused = epilogue_fuses(activation);
  if (!epilogue_bias.defined()) {
    // No bias for the epilogue (none, in extra reduction columns, or prefilled:
    // beta = 1, which the epilogue path does not accumulate onto).
    if (fused && beta == 0.0f &&
        gemm_bias_epilogue(a, b, out, nullptr, dtype, allow_tf32, activation))
      return;
    gemm(a, b, out, 1, dtype, allow_tf32, beta);
  } else if (gemm_bias_epilogue(a, b, out, epilogue_bias.data_ptr(), dtype, allow_tf32,
                                activation)) {
    if (fused) return;
  } else {
    TORCH_CHECK(out.ld == out.cols, "gwprune: the bias prefill needs contiguous output rows");
    fill_with_bias(out.data, dtype, out.rows * out.cols, epilogue_bias, 1);
    gemm(a, b, out, 1, dtype, allow_tf32, 1.0f);
  }
  if (activation == Activation::kNone || out.rows == 0) return;
  // The chunk's rows as a tensor only when a pass over them is needed.
  at::Tensor rows = at::from_blob(
      out.data, {out.rows, out.cols}, {out.ld, 1},
      epilogue_bias.defined()
          ? epilogue_bias.options()
          : at::TensorOptions().dtype(dtype).device(at::kCUDA, c10::cuda::current_device()));
  apply_activation_(rows, activation);
}

}  // namespace gwprune::cuda
