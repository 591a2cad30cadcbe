// What the CPU is and how big its data caches are, detected once at run time, so that the
// GEMM's blocking (blocking.h) follows the machine instead of constants tuned on one CPU.
//
// Sources, in order: FUSEDMLP_CPU_CACHES (an override, e.g. "l1d=32K,l2=1M,l3=32M", any
// subset), CPUID (leaf 0x8000001D on AMD, leaf 4 on Intel: the deterministic cache
// parameters), Linux sysfs (/sys/devices/system/cpu/cpu0/cache), and finally the sizes of
// the machine the constants were first tuned on (32 KiB / 1 MiB / 32 MiB). This file is
// free of torch headers.
#pragma once

#include <cstdint>
#include <string>

namespace fusedmlp::cpu {

struct CpuModel {
  std::string vendor;      // "AuthenticAMD", "GenuineIntel", ... ("" off x86)
  std::string brand;       // CPUID brand string, e.g. "AMD EPYC 9B45"
  int family = 0, model = 0, stepping = 0;  // display family/model (extended fields folded in)
};

struct CacheSizes {
  int64_t l1d = 0;  // bytes per core
  int64_t l2 = 0;   // bytes per core (what one core's blocks may fill)
  int64_t l3 = 0;   // bytes of one L3 instance (shared by its cores)
  const char* source = "";  // where the sizes came from (see above); a string literal
};

// The CPU this process runs on (CPUID; empty fields where it has none).
const CpuModel& cpu_model();

// The sizes the blocking uses now: the detected ones, or an override.
CacheSizes cache_sizes();
// The detected sizes, ignoring any override.
const CacheSizes& detected_cache_sizes();

// Parses "l1d=48K,l2=1M,l3=32M" (K/M/G suffixes or plain bytes; keys may be omitted and
// keep the detected value) and uses the result from the next GEMM on; "" goes back to the
// detected sizes. Throws std::invalid_argument naming what is wrong. Tests and the
// FUSEDMLP_CPU_CACHES variable (read at start-up) use it to force small or large caches.
void set_cache_sizes(const std::string& spec);

}  // namespace fusedmlp::cpu
