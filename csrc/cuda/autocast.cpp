// Autocast for the forward ops: under torch.autocast("cuda") linear_relu, linear,
// linear_act and mlp run in the autocast dtype (float16 unless set otherwise), as F.linear does: floating CUDA
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

// The whole MLP: x, every weight and every bias cast alike.
std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> autocast_mlp(
    const at::Tensor& x, at::TensorList weights,
    const c10::List<std::optional<at::Tensor>>& biases, c10::ArrayRef<std::string> activations,
    c10::ArrayRef<double> negative_slopes) {
  using Sig = std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>>(
      const at::Tensor&, at::TensorList, const c10::List<std::optional<at::Tensor>>&,
      c10::ArrayRef<std::string>, c10::ArrayRef<double>);
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("fusedmlp::mlp", "").typed<Sig>();
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCUDA);
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(at::kCUDA);
  std::vector<at::Tensor> cast_weights;
  for (const at::Tensor& w : weights)
    cast_weights.push_back(at::autocast::cached_cast(dtype, w, c10::DeviceType::CUDA));
  c10::List<std::optional<at::Tensor>> cast_biases;
  for (size_t l = 0; l < biases.size(); ++l)
    cast_biases.push_back(at::autocast::cached_cast(dtype, biases.get(l), c10::DeviceType::CUDA));
  return op.call(at::autocast::cached_cast(dtype, x, c10::DeviceType::CUDA), cast_weights,
                 cast_biases, activations, negative_slopes);
}

constexpr char kLinearReLU[] = "fusedmlp::linear_relu";
constexpr char kLinear[] = "fusedmlp::linear";

}  // namespace

TORCH_LIBRARY_IMPL(fusedmlp, AutocastCUDA, m) {
  m.impl("linear_relu", &autocast_forward<kLinearReLU>);
  m.impl("linear", &autocast_forward<kLinear>);
  m.impl("linear_act", &autocast_linear_act);
  m.impl("mlp", &autocast_mlp);
}

}  // namespace fusedmlp::cuda
