// Cache and CPU model detection (see cache_info.h).
#include "cpu/cache_info.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <stdexcept>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define FUSEDMLP_X86 1
#endif

namespace fusedmlp::cpu {
namespace {

// Sizes of the machine the blocking constants were first tuned on (an AMD Zen 4 VM):
// used only when neither CPUID nor sysfs says anything.
constexpr CacheSizes kFallback{32 << 10, 1 << 20, 32 << 20, "default (nothing detected)"};

#ifdef FUSEDMLP_X86
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned subleaf = 0) {
  Regs r;
  __cpuid_count(leaf, subleaf, r.a, r.b, r.c, r.d);
  return r;
}

// Leaf 4 (Intel) and leaf 0x8000001D (AMD) share one layout: subleaf i describes one
// cache: type (1 data, 2 instruction, 3 unified; 0 ends the list), level, and
// ways x partitions x line size x sets = its size in bytes.
bool read_cache_leaf(unsigned leaf, CacheSizes& out) {
  bool found = false;
  for (unsigned i = 0; i < 16; ++i) {
    const Regs r = cpuid(leaf, i);
    const unsigned type = r.a & 0x1f, level = (r.a >> 5) & 0x7;
    if (type == 0) break;
    if (type == 2) continue;  // instruction cache
    const int64_t line = (r.b & 0xfff) + 1, partitions = ((r.b >> 12) & 0x3ff) + 1;
    const int64_t ways = ((r.b >> 22) & 0x3ff) + 1, sets = int64_t(r.c) + 1;
    const int64_t bytes = line * partitions * ways * sets;
    if (level == 1) out.l1d = bytes;
    if (level == 2) out.l2 = bytes;
    if (level == 3) out.l3 = bytes;
    found = found || bytes > 0;
  }
  return found && out.l1d > 0 && out.l2 > 0;
}

bool detect_cpuid(CacheSizes& out) {
  const CpuModel& cpu = cpu_model();
  const unsigned max_basic = cpuid(0).a, max_ext = cpuid(0x80000000).a;
  if (cpu.vendor == "AuthenticAMD" || cpu.vendor == "HygonGenuine") {
    // 0x8000001D exists when CPUID 0x80000001 reports TopologyExtensions (ECX bit 22).
    if (max_ext >= 0x8000001D && (cpuid(0x80000001).c >> 22 & 1) &&
        read_cache_leaf(0x8000001D, out)) {
      out.source = "cpuid 0x8000001D";
      return true;
    }
  } else if (max_basic >= 4 && read_cache_leaf(4, out)) {
    out.source = "cpuid 4";
    return true;
  }
  return false;
}
#endif

// "48K" -> 49152 as sysfs writes it (and "1024" plain bytes); 0 when unreadable.
int64_t parse_size(const std::string& text) {
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (end == text.c_str() || value <= 0) return 0;
  std::string unit(end);
  while (!unit.empty() && (unit.back() == '\n' || unit.back() == ' ')) unit.pop_back();
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  if (unit.size() >= 2 && (unit.back() == 'i')) unit.pop_back();  // KiB, MiB
  if (unit.empty()) return value;
  if (unit.size() != 1) return 0;
  switch (unit[0]) {
    case 'K': case 'k': return value << 10;
    case 'M': case 'm': return value << 20;
    case 'G': case 'g': return value << 30;
  }
  return 0;
}

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

bool detect_sysfs(CacheSizes& out) {
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    const std::string level = read_line(dir + "level"), type = read_line(dir + "type");
    if (level.empty()) break;
    if (type == "Instruction") continue;
    const int64_t bytes = parse_size(read_line(dir + "size"));
    if (level == "1") out.l1d = bytes;
    if (level == "2") out.l2 = bytes;
    if (level == "3") out.l3 = bytes;
  }
  if (out.l1d <= 0 || out.l2 <= 0) return false;
  out.source = "sysfs";
  return true;
}

CacheSizes detect() {
  CacheSizes sizes;
#ifdef FUSEDMLP_X86
  if (detect_cpuid(sizes)) return sizes;
#endif
  sizes = CacheSizes{};
  if (detect_sysfs(sizes)) return sizes;
  return kFallback;
}

// The sizes in use, behind a mutex: GEMMs read them on every call, set_cache_sizes may
// change them from another thread.
struct Current {
  std::mutex mutex;
  CacheSizes sizes;
};

CacheSizes parse_spec(const std::string& spec, const char* source) {
  CacheSizes sizes = detected_cache_sizes();
  sizes.source = source;
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t comma = spec.find(',', pos);
    if (comma == std::string::npos) comma = spec.size();
    const std::string item = spec.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq);
    const int64_t bytes = eq == std::string::npos ? 0 : parse_size(item.substr(eq + 1));
    int64_t* slot = key == "l1d" ? &sizes.l1d : key == "l2" ? &sizes.l2 : key == "l3" ? &sizes.l3
                                                                                    : nullptr;
    if (slot == nullptr || bytes < 1024 || bytes > (int64_t(1) << 36))
      throw std::invalid_argument(
          "cache sizes '" + spec + "': bad item '" + item +
          "'; expected a comma list of l1d=SIZE, l2=SIZE, l3=SIZE with SIZE from 1K to 64G "
          "(K, M or G suffix, or bytes), e.g. l1d=32K,l2=1M,l3=32M");
    *slot = bytes;
  }
  return sizes;
}

Current& current() {
  static Current* state = [] {
    auto* s = new Current;  // never destroyed: GEMMs may run during static destruction
    const char* env = std::getenv("FUSEDMLP_CPU_CACHES");
    if (env == nullptr || *env == '\0') {
      s->sizes = detected_cache_sizes();
    } else {
      try {
        s->sizes = parse_spec(env, "FUSEDMLP_CPU_CACHES");
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string("FUSEDMLP_CPU_CACHES: ") + e.what());
      }
    }
    return s;
  }();
  return *state;
}

}  // namespace

const CpuModel& cpu_model() {
  static const CpuModel model = [] {
    CpuModel m;
#ifdef FUSEDMLP_X86
    const Regs v = cpuid(0);
    char vendor[13] = {};
    std::memcpy(vendor, &v.b, 4);
    std::memcpy(vendor + 4, &v.d, 4);
    std::memcpy(vendor + 8, &v.c, 4);
    m.vendor = vendor;
    const unsigned sig = cpuid(1).a;
    const int base_family = (sig >> 8) & 0xf, base_model = (sig >> 4) & 0xf;
    m.family = base_family == 0xf ? base_family + int((sig >> 20) & 0xff) : base_family;
    m.model = (base_family == 0x6 || base_family == 0xf)
                  ? base_model + int(((sig >> 16) & 0xf) << 4) : base_model;
    m.stepping = sig & 0xf;
    if (cpuid(0x80000000).a >= 0x80000004) {
      char brand[49] = {};
      for (unsigned i = 0; i < 3; ++i) {
        const Regs r = cpuid(0x80000002 + i);
        std::memcpy(brand + 16 * i, &r, 16);
      }
      std::string text(brand);
      while (!text.empty() && text.back() == ' ') text.pop_back();
      while (!text.empty() && text.front() == ' ') text.erase(0, 1);
      m.brand = text;
    }
#endif
    return m;
  }();
  return model;
}

const CacheSizes& detected_cache_sizes() {
  static const CacheSizes detected = detect();
  return detected;
}

CacheSizes cache_sizes() {
  Current& state = current();
  std::lock_guard<std::mutex> lock(state.mutex);
  return state.sizes;
}

void set_cache_sizes(const std::string& spec) {
  const CacheSizes sizes = spec.empty() ? detected_cache_sizes() : parse_spec(spec, "override");
  Current& state = current();
  std::lock_guard<std::mutex> lock(state.mutex);
  state.sizes = sizes;
}

}  // namespace fusedmlp::cpu
