// Run-time choice of the micro-kernel ISA. x86: CPUID via the compiler's cpu_supports,
// which also checks that the OS saves the wider registers. 64-bit Arm: NEON (Advanced
// SIMD, with fused multiply-add in fp32 and fp64) is part of the base architecture, so
// every aarch64 CPU runs it.
#include "cpu/isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#define FUSEDMLP_ISA_X86 1
#elif defined(__aarch64__)
#define FUSEDMLP_ISA_ARM64 1
#endif

namespace fusedmlp::cpu {
namespace {

// The ISAs this build has kernels for, best first (setup.py compiles the same split).
constexpr Isa kBuiltIsas[] = {
#if defined(FUSEDMLP_ISA_X86)
    Isa::avx512, Isa::avx2,
#elif defined(FUSEDMLP_ISA_ARM64)
    Isa::neon,
#endif
    Isa::generic};

// Whether the CPU runs a built ISA.
bool cpu_runs(Isa isa) {
#if defined(FUSEDMLP_ISA_X86)
  static const bool avx2 = (__builtin_cpu_init(), __builtin_cpu_supports("avx2") &&
                                                      __builtin_cpu_supports("fma"));
  static const bool avx512 = (__builtin_cpu_init(), __builtin_cpu_supports("avx512f"));
  if (isa == Isa::avx2) return avx2;
  if (isa == Isa::avx512) return avx512;
#endif
  return true;  // generic, and neon where it is built
}

}  // namespace

bool isa_supported(Isa isa) {
  for (Isa built : kBuiltIsas)
    if (built == isa) return cpu_runs(isa);
  return false;
}

Isa best_isa() {
  static const Isa best = [] {
    for (Isa isa : kBuiltIsas)
      if (cpu_runs(isa)) return isa;
    return Isa::generic;
  }();
  return best;
}

// Each table is made on first use only: an ISA unit's code may use its instructions
// anywhere, so it is never entered on a CPU without them.
const MicroKernels& microkernels(Isa isa) {
  switch (isa) {
#if defined(FUSEDMLP_ISA_X86)
    case Isa::avx512: {
      static const MicroKernels k = avx512_microkernels();
      return k;
    }
    case Isa::avx2: {
      static const MicroKernels k = avx2_microkernels();
      return k;
    }
#elif defined(FUSEDMLP_ISA_ARM64)
    case Isa::neon: {
      static const MicroKernels k = neon_microkernels();
      return k;
    }
#endif
    default:
      break;
  }
  static const MicroKernels generic = generic_microkernels();
  return generic;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::neon: return "neon";
    case Isa::generic: return "generic";
  }
  return "unknown";
}

Isa parse_isa(const char* name) {
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512, Isa::neon})
    if (std::strcmp(name, isa_name(isa)) == 0) return isa;
  throw std::invalid_argument(std::string("unknown CPU ISA '") + name +
                              "': expected one of generic, avx2, avx512, neon");
}

namespace {

void check_supported(Isa isa) {
  if (!isa_supported(isa))
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
