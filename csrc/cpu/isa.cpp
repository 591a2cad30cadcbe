// Run-time choice of the micro-kernel ISA (CPUID via the compiler's cpu_supports, which
// also checks that the OS saves the wider registers).
#include "cpu/isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace fusedmlp::cpu {

Isa best_isa() {
#if defined(__x86_64__) || defined(__i386__)
  static const Isa best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return Isa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
    return Isa::generic;
  }();
  return best;
#else
  return Isa::generic;
#endif
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::generic: return "generic";
  }
  return "unknown";
}

Isa parse_isa(const char* name) {
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512})
    if (std::strcmp(name, isa_name(isa)) == 0) return isa;
  throw std::invalid_argument(std::string("unknown CPU ISA '") + name +
                              "': expected one of generic, avx2, avx512");
}

namespace {

void check_supported(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(best_isa()))
    throw std::invalid_argument(std::string("this CPU cannot run the ") + isa_name(isa) +
                                " kernels; the best it supports is " + isa_name(best_isa()));
}

Isa initial_isa() {
  const char* env = std::getenv("FUSEDMLP_CPU_ISA");
  if (env == nullptr || *env == '\0') return best_isa();
  try {
    const Isa isa = parse_isa(env);
    check_supported(isa);
    return isa;
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("FUSEDMLP_CPU_ISA=") + env + ": " + e.what());
  }
}

std::atomic<int>& active_isa_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

}  // namespace

Isa active_isa() { return static_cast<Isa>(active_isa_slot().load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
  check_supported(isa);
  active_isa_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace fusedmlp::cpu
