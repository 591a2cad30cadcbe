// The Python module fusedmlp._C: loading it loads the library, whose static initialisers
// register the ops (schemas in fusedmlp.cpp); its few functions report build facts and
// choose the CPU micro-kernels. Bound with pybind11 (torch ships its headers); only
// <pybind11/pybind11.h> is included, not torch/extension.h, so this unit compiles quickly.
// Errors: the std::invalid_argument our functions throw become ValueError (pybind11's
// standard translation), with the C++ message.
#include <pybind11/pybind11.h>

#include <string>

#include "activation_names.h"
#include "cpu/cache_info.h"
#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "python_entry.h"

namespace {

namespace cpu = fusedmlp::cpu;

constexpr bool kCudaBuilt =
#ifdef FUSEDMLP_WITH_CUDA
    true;
#else
    false;
#endif

// The GPU code in this build, e.g. "sm_80,sm_90,compute_90" (setup.py passes the words
// unquoted; a variadic macro keeps the commas); empty without CUDA kernels.
#define FUSEDMLP_STRINGIFY(...) #__VA_ARGS__
#define FUSEDMLP_STRING_OF(...) FUSEDMLP_STRINGIFY(__VA_ARGS__)
#ifdef FUSEDMLP_CUDA_TARGETS
constexpr const char* kCudaTargets = FUSEDMLP_STRING_OF(FUSEDMLP_CUDA_TARGETS);
#else
constexpr const char* kCudaTargets = "";
#endif

pybind11::dict block_limits_dict(const cpu::BlockLimits& limits, int mr, int nr) {
  pybind11::dict d;
  d["mr"] = mr;
  d["nr"] = nr;
  d["mc"] = limits.mc;
  d["kc"] = limits.kc;
  d["nc"] = limits.nc;
  return d;
}

// The register tiles and block limits of the active ISA for T (fusedmlp.info()).
template <typename T>
pybind11::dict dtype_blocking() {
  const cpu::BlockingInfo info = cpu::blocking_info<T>();
  pybind11::dict d;
  d["packed"] = block_limits_dict(info.packed, info.mr, info.nr);
  d["dot"] = block_limits_dict(info.dot, info.dot_mr, cpu::kDotNR);
  d["dot_max_rows"] = info.dot_max_rows;
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fusedmlp's compiled kernels; importing it registers the ops.";
  fusedmlp::add_python_entry(m);
  m.def(
      "cpu_isa", [] { return cpu::isa_name(cpu::active_isa()); },
      "The ISA of the CPU micro-kernels in use (ValueError if FUSEDMLP_CPU_ISA names one "
      "this build or CPU cannot run).");
  m.def(
      "best_cpu_isa", [] { return cpu::isa_name(cpu::best_isa()); },
      "The best ISA this build and CPU support.");
  m.def(
      "set_cpu_isa",
      [](const std::string& name) { cpu::set_active_isa(cpu::parse_isa(name.c_str())); },
      pybind11::arg("name"),
      "Use the 'generic', 'avx2' or 'avx512' (x86) or 'neon' (64-bit Arm) CPU micro-kernels "
      "(ValueError if the name is unknown or this build or CPU cannot run them).");
  m.def(
      "cuda_built", [] { return kCudaBuilt; }, "Whether the CUDA kernels were compiled in.");
  m.def(
      "cuda_targets", [] { return std::string(kCudaTargets); },
      "The GPU code compiled in, comma separated: sm_XX machine code, compute_XX PTX.");
  m.def("activation_names", &fusedmlp::activation_names,
        "The activations of csrc/activation.h, comma separated, in enum order.");
  // The probe runs for a while on every torch thread: other Python threads may run meanwhile.
  m.def("fma_peak_gflops", &cpu::fma_peak_gflops,
        pybind11::call_guard<pybind11::gil_scoped_release>(),
        "float32 FMA peak (GF/s) of the active CPU ISA on all torch threads, measured now.");
  m.def(
      "cpu_caches",
      [] {
        const cpu::CpuModel& model = cpu::cpu_model();
        const cpu::CacheSizes caches = cpu::cache_sizes();
        pybind11::dict d;
        d["vendor"] = model.vendor;
        d["brand"] = model.brand;
        d["family"] = model.family;
        d["model"] = model.model;
        d["stepping"] = model.stepping;
        d["l1d"] = caches.l1d;
        d["l2"] = caches.l2;
        d["l3"] = caches.l3;
        d["source"] = caches.source;
        return d;
      },
      "The CPU model and the cache sizes the blocking uses (and where they came from).");
  m.def(
      "set_cpu_caches", [](const std::string& spec) { cpu::set_cache_sizes(spec); },
      pybind11::arg("spec"),
      "Force cache sizes, e.g. 'l1d=32K,l2=1M,l3=32M'; '' restores the detected ones "
      "(ValueError naming what is wrong).");
  m.def(
      "cpu_blocking",
      [] {
        pybind11::dict d;
        d["float32"] = dtype_blocking<float>();
        d["float64"] = dtype_blocking<double>();
        d["min_work_per_thread"] = cpu::kMinWorkPerThread;
        d["row_panel_max_k"] = cpu::kRowPanelMaxK;
        return d;
      },
      "The GEMM block sizes of the active CPU ISA with the current cache sizes.");
  m.def(
      "cpu_gemm_path_counts",
      [] {
        const cpu::GemmPathCounts counts = cpu::gemm_path_counts();
        pybind11::dict d;
        d["dot"] = counts.dot;
        d["packed"] = counts.packed;
        d["row_panels"] = counts.row_panels;
        d["backward_sweeps"] = counts.backward_sweeps;
        return d;
      },
      "How many CPU GEMMs took each path (dot, packed, row_panels) since start-up, and how "
      "many backward pairs (grad_x and grad_w) one pass over W solved (backward_sweeps).");
}
