// The elementwise activation factors of the double backward (activation_grad op):
// out = g * act'(s) or g * act''(s), in the accumulator type, one rounding per element.
#include "cuda/tile.cuh"

namespace fusedmlp::cuda {
namespace {

template <typename T>
__global__ void __launch_bounds__(256)
    activation_grad_kernel(Activation act, typename Scalar<T>::Acc slope, int order,
                           int64_t count, const T* g, const T* s, T* out) {
  using Acc = typename Scalar<T>::Acc;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    const Acc gv = Scalar<T>::to_acc(g[i]), sv = Scalar<T>::to_acc(s[i]);
    const Acc v = order == 1 ? activation_grad(act, gv, sv, slope)
                             : activation_grad2(act, gv, sv, slope);
    out[i] = Scalar<T>::from_acc(v);
  }
}

template <typename T>
void launch(Activation act, double slope, int order, int64_t count, const void* g,
            const void* s, void* out, cudaStream_t stream) {
  const int64_t blocks = std::min<int64_t>((count + 255) / 256, 8192);
  activation_grad_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      act, static_cast<typename Scalar<T>::Acc>(slope), order, count,
      static_cast<const T*>(g), static_cast<const T*>(s), static_cast<T*>(out));
}

}  // namespace

void launch_activation_grad(DType dtype, Activation act, double slope, int order,
                            int64_t count, const void* g, const void* s, void* out,
                            cudaStream_t stream) {
  switch (dtype) {
    case DType::f32: return launch<float>(act, slope, order, count, g, s, out, stream);
    case DType::f64: return launch<double>(act, slope, order, count, g, s, out, stream);
    case DType::f16: return launch<__half>(act, slope, order, count, g, s, out, stream);
    case DType::bf16: return launch<__nv_bfloat16>(act, slope, order, count, g, s, out, stream);
  }
  throw std::runtime_error("fusedmlp: unknown dtype");
}

}  // namespace fusedmlp::cuda
