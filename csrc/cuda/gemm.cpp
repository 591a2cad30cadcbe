// plan_gemm() / gemm(): pick the kernel and its tiling for a dtype on the current device
// (plain C++, no torch).
#include "cuda/gemm.h"

#include <array>
#include <atomic>
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
  int device, sm_count, major, minor;
};

// Cheap driver attribute queries (no context work), done per call so that the device
// guard of the caller decides which GPU is asked.
DeviceFacts current_device() {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  DeviceFacts facts{};
  facts.device = device;
  check(cudaDeviceGetAttribute(&facts.sm_count, cudaDevAttrMultiProcessorCount, device),
        "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&facts.major, cudaDevAttrComputeCapabilityMajor, device),
        "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&facts.minor, cudaDevAttrComputeCapabilityMinor, device),
        "cudaDeviceGetAttribute");
  return facts;
}

// The mma kernels are chosen by the device's compute capability, but what runs is the
// image the driver loaded: a build whose only code for this card is PTX older than
// compute_80 would be JIT-compiled into the kernels' __trap() bodies. Refuse that with a
// clear error instead. Checked once per device and dtype (the answer cannot change).
void check_mma_image(DType dtype, const DeviceFacts& device) {
  constexpr int kMaxDevices = 64;
  static std::array<std::atomic<bool>, 2 * kMaxDevices> checked{};
  const int slot = 2 * device.device + (dtype == DType::bf16 ? 1 : 0);
  if (device.device < kMaxDevices && checked[slot].load(std::memory_order_acquire)) return;
  const KernelImage image = mma_kernel_image(dtype);
  if (image.ptx < 80 || image.binary < 80) {
    throw std::runtime_error(
        "fusedmlp: the float16/bfloat16 CUDA kernels need code compiled for sm_80 or newer, "
        "but this GPU (sm_" + std::to_string(device.major * 10 + device.minor) +
        ") loaded an image compiled for compute_" + std::to_string(image.ptx) + " (machine "
        "code sm_" + std::to_string(image.binary) + "); rebuild with TORCH_CUDA_ARCH_LIST=\"" +
        std::to_string(device.major) + "." + std::to_string(device.minor) + "\"");
  }
  if (device.device < kMaxDevices) checked[slot].store(true, std::memory_order_release);
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
      check_mma_image(dtype, device);
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
