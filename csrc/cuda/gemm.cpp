// gemm(): picks the kernel for a dtype on the current device (plain C++, no torch).
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

void gemm(DType dtype, const GemmArgs& args, cudaStream_t stream) {
  const DeviceFacts device = current_device();
  switch (dtype) {
    case DType::f32:
    case DType::f64:
      return launch_simt_gemm(dtype, args, device.sm_count, stream);
    case DType::f16:
    case DType::bf16:
      if (device.major < 8) {
        throw std::runtime_error(
            "fusedmlp: the float16/bfloat16 CUDA kernels use mma.sync tensor-core "
            "instructions, which need compute capability 8.0 or newer; this GPU is sm_" +
            std::to_string(device.major * 10 + device.minor));
      }
      return launch_mma_gemm(dtype, args, device.sm_count, stream);
  }
  throw std::runtime_error("fusedmlp: unknown dtype");
}

}  // namespace fusedmlp::cuda
