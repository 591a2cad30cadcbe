// Autocast for the forward ops: under torch.autocast("cuda") linear_relu, linear and
// linear_act run
// in the autocast dtype (float16 unless set otherwise), as F.linear does: floating CUDA
// inputs other than float64 are cast (through autocast's weight cache), then the op is
// dispatched again below the autocast key. The backward ops need no autocast kernel:
// autograd calls them with the dtypes the forward ran in.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace fusedmlp::cuda {
namespace {

using ForwardSig = at::Tensor(const at::Tensor&, const at::Tensor&,
                              const std::optional<at::Tensor>&);

template <const char* kOpName>
at::Tensor autocast_forward(const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow(kOpName, "").typed<ForwardSig>();
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCUDA);
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(at::kCUDA);
  return op.call(at::autocast::cached_cast(dtype, x, c10::DeviceType::CUDA),
                 at::autocast::cached_cast(dtype, weight, c10::DeviceType::CUDA),
                 at::autocast::cached_cast(dtype, bias, c10::DeviceType::CUDA));
}

at::Tensor autocast_linear_act(const at::Tensor& x, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias,
                               c10::string_view activation, double negative_slope) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusedmlp::linear_act", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                            const std::optional<at::Tensor>&, c10::string_view, double)>();
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCUDA);
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(at::kCUDA);
  return op.call(at::autocast::cached_cast(dtype, x, c10::DeviceType::CUDA),
                 at::autocast::cached_cast(dtype, weight, c10::DeviceType::CUDA),
                 at::autocast::cached_cast(dtype, bias, c10::DeviceType::CUDA), activation,
                 negative_slope);
}

constexpr char kLinearReLU[] = "fusedmlp::linear_relu";
constexpr char kLinear[] = "fusedmlp::linear";

}  // namespace

TORCH_LIBRARY_IMPL(fusedmlp, AutocastCUDA, m) {
  m.impl("linear_relu", &autocast_forward<kLinearReLU>);
  m.impl("linear", &autocast_forward<kLinear>);
  m.impl("linear_act", &autocast_linear_act);
}

}  // namespace fusedmlp::cuda
