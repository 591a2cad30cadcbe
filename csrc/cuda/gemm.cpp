// plan_gemm() / gemm(): pick the kernel and its tiling for a dtype on the current device
// (plain C++, no torch).
#include "cuda/gemm.h"

#include <stdexcept>
#include <string>

namespace fusedmlp::cuda {
namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("fusedmlp: ") + what + ": " + cudaGetErrorString(status));
  }
}

struct DeviceFacts {
  int sm_count, major, minor;
};

// Cheap driver attribute queries (no context work), done per call so that the device
// guard of the caller decides which GPU is asked.
DeviceFacts current_device() {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  DeviceFacts facts{};
  check(cudaDeviceGetAttribute(&facts.sm_count, cudaDevAttrMultiProcessorCount, device),
        "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&facts.major, cudaDevAttrComputeCapabilityMajor, device),
        "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&facts.minor, cudaDevAttrComputeCapabilityMinor, device),
        "cudaDeviceGetAttribute");
  return facts;
}

}  // namespace

GemmPlan plan_gemm(DType dtype, const GemmArgs& args) {
  const DeviceFacts device = current_device();
  switch (dtype) {
    case DType::f32:
    case DType::f64:
      return plan_simt_gemm(dtype, args, device.sm_count);
    case DType::f16:
    case DType::bf16:
      if (device.major < 8) {
        throw std::runtime_error(
            "fusedmlp: the float16/bfloat16 CUDA kernels use mma.sync tensor-core "
            "instructions, which need compute capability 8.0 or newer; this GPU is sm_" +
            std::to_string(device.major * 10 + device.minor));
      }
      return plan_mma_gemm(dtype, args, device.sm_count);
  }
  throw std::runtime_error("fusedmlp: unknown dtype");
}

void gemm(DType dtype, const GemmArgs& args, const GemmPlan& plan, void* workspace,
          cudaStream_t stream) {
  if (dtype == DType::f32 || dtype == DType::f64) {
    launch_simt_gemm(dtype, args, plan, workspace, stream);
  } else {
    launch_mma_gemm(dtype, args, plan, workspace, stream);
  }
}

}  // namespace fusedmlp::cuda
