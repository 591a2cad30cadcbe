// NEON (Advanced SIMD) micro-kernels for 64-bit Arm: Graviton, Ampere, Grace, Jetson,
// Apple silicon. setup.py compiles this unit for aarch64 only, where NEON with fp32 and
// fp64 fused multiply-add is part of the base instruction set: no target pragma, and
// every aarch64 CPU runs it (isa.cpp).
#include <arm_neon.h>

#include "cpu/isa.h"
#include "cpu/microkernel.h"

namespace fusedmlp::cpu {
namespace {

struct F64x2;

struct F32x4 {
  using T = float;
  using Reg = float32x4_t;
  // Comparisons give all-ones / all-zero lanes; vbslq takes its first operand's bits
  // where the mask is set.
  using Mask = uint32x4_t;
  using Wide = F64x2;
  static constexpr int width = 4;
  static Reg zero() { return vdupq_n_f32(0.0f); }
  static Reg load(const T* p) { return vld1q_f32(p); }
  // NEON has no masked loads and stores: the edge lanes go one at a time, never past n.
  static Reg load_partial(const T* p, int n) {
    if (n >= width) return vld1q_f32(p);
    Reg v = zero();
    if (n > 0) v = vld1q_lane_f32(p, v, 0);
    if (n > 1) v = vld1q_lane_f32(p + 1, v, 1);
    if (n > 2) v = vld1q_lane_f32(p + 2, v, 2);
    return v;
  }
  static void store(T* p, Reg v) { vst1q_f32(p, v); }
  static void store_partial(T* p, Reg v, int n) {
    if (n >= width) return vst1q_f32(p, v);
    if (n > 0) vst1q_lane_f32(p, v, 0);
    if (n > 1) vst1q_lane_f32(p + 1, v, 1);
    if (n > 2) vst1q_lane_f32(p + 2, v, 2);
  }
  static Reg broadcast(const T* p) { return vld1q_dup_f32(p); }
  static Reg fma(Reg a, Reg b, Reg c) { return vfmaq_f32(c, a, b); }  // c + a * b, one rounding
  static Reg set1(T v) { return vdupq_n_f32(v); }
  static Reg add(Reg a, Reg b) { return vaddq_f32(a, b); }
  static Reg sub(Reg a, Reg b) { return vsubq_f32(a, b); }
  static Reg mul(Reg a, Reg b) { return vmulq_f32(a, b); }
  static Reg div(Reg a, Reg b) { return vdivq_f32(a, b); }
  // FMIN/FMAX return NaN when either operand is NaN (x86's return the second operand);
  // vec_activation.h only clamps with them and restores NaN inputs itself.
  static Reg min(Reg a, Reg b) { return vminq_f32(a, b); }
  static Reg max(Reg a, Reg b) { return vmaxq_f32(a, b); }
  // Ordered comparisons: false where either operand is NaN, as x86's _CMP_*_OQ.
  static Mask le(Reg a, Reg b) { return vcleq_f32(a, b); }
  static Mask lt(Reg a, Reg b) { return vcltq_f32(a, b); }
  static Mask gt(Reg a, Reg b) { return vcgtq_f32(a, b); }
  // Unordered: a or b is NaN, i.e. not (a == a and b == b).
  static Mask unord(Reg a, Reg b) { return vmvnq_u32(vandq_u32(vceqq_f32(a, a), vceqq_f32(b, b))); }
  static Reg select(Mask m, Reg a, Reg b) { return vbslq_f32(m, a, b); }
  static inline void widen(Reg v, float64x2_t& lo, float64x2_t& hi);
  static inline Reg narrow(float64x2_t lo, float64x2_t hi);
  static void sum4(const Reg r[4], T out[4]) {
    // Pairwise adds: (r0 01, r0 23, r1 01, r1 23), (r2 .., r3 ..), then one more round.
    store_sums(out, vpaddq_f32(vpaddq_f32(r[0], r[1]), vpaddq_f32(r[2], r[3])));
  }
  // Lane by lane, so that GCC sees out[] written (vst1q is opaque to its
  // maybe-uninitialized analysis of the caller); it emits one store all the same.
  static void store_sums(T out[4], Reg s) {
    out[0] = vgetq_lane_f32(s, 0);
    out[1] = vgetq_lane_f32(s, 1);
    out[2] = vgetq_lane_f32(s, 2);
    out[3] = vgetq_lane_f32(s, 3);
  }
};

struct F64x2 {
  using T = double;
  using Reg = float64x2_t;
  using Mask = uint64x2_t;
  static constexpr int width = 2;
  static Reg zero() { return vdupq_n_f64(0.0); }
  static Reg load(const T* p) { return vld1q_f64(p); }
  static Reg load_partial(const T* p, int n) {
    if (n >= width) return vld1q_f64(p);
    return n > 0 ? vld1q_lane_f64(p, zero(), 0) : zero();
  }
  static void store(T* p, Reg v) { vst1q_f64(p, v); }
  static void store_partial(T* p, Reg v, int n) {
    if (n >= width) return vst1q_f64(p, v);
    if (n > 0) vst1q_lane_f64(p, v, 0);
  }
  static Reg broadcast(const T* p) { return vld1q_dup_f64(p); }
  static Reg fma(Reg a, Reg b, Reg c) { return vfmaq_f64(c, a, b); }
  static Reg set1(T v) { return vdupq_n_f64(v); }
  static Reg add(Reg a, Reg b) { return vaddq_f64(a, b); }
  static Reg sub(Reg a, Reg b) { return vsubq_f64(a, b); }
  static Reg mul(Reg a, Reg b) { return vmulq_f64(a, b); }
  static Reg div(Reg a, Reg b) { return vdivq_f64(a, b); }
  static Reg min(Reg a, Reg b) { return vminq_f64(a, b); }  // NaN as in F32x4
  static Reg max(Reg a, Reg b) { return vmaxq_f64(a, b); }
  static Mask le(Reg a, Reg b) { return vcleq_f64(a, b); }
  static Mask lt(Reg a, Reg b) { return vcltq_f64(a, b); }
  static Mask gt(Reg a, Reg b) { return vcgtq_f64(a, b); }
  static Mask unord(Reg a, Reg b) {
    // No 64-bit vmvnq: complement through the 32-bit view (all-ones/zero lanes either way).
    return vreinterpretq_u64_u32(
        vmvnq_u32(vreinterpretq_u32_u64(vandq_u64(vceqq_f64(a, a), vceqq_f64(b, b)))));
  }
  static Reg select(Mask m, Reg a, Reg b) { return vbslq_f64(m, a, b); }
  static Reg round(Reg v) { return vrndnq_f64(v); }  // to nearest, ties to even
  // r * 2^n: n's exponent bits built directly (n integral, |n| <= 1022).
  static Reg scale2(Reg r, Reg n) {
    const int64x2_t e = vaddq_s64(vcvtq_s64_f64(n), vdupq_n_s64(1023));
    return vmulq_f64(r, vreinterpretq_f64_s64(vshlq_n_s64(e, 52)));
  }
  static void sum4(const Reg r[4], T out[4]) {
    const Reg s01 = vpaddq_f64(r[0], r[1]), s23 = vpaddq_f64(r[2], r[3]);
    out[0] = vgetq_lane_f64(s01, 0);  // lane by lane: see F32x4::store_sums
    out[1] = vgetq_lane_f64(s01, 1);
    out[2] = vgetq_lane_f64(s23, 0);
    out[3] = vgetq_lane_f64(s23, 1);
  }
};

// float32 lanes 0-1 and 2-3 to float64 and back (one rounding, to nearest).
void F32x4::widen(Reg v, float64x2_t& lo, float64x2_t& hi) {
  lo = vcvt_f64_f32(vget_low_f32(v));
  hi = vcvt_high_f64_f32(v);
}
F32x4::Reg F32x4::narrow(float64x2_t lo, float64x2_t hi) {
  return vcvt_high_f32_f64(vcvt_f32_f64(lo), hi);
}

}  // namespace

// 32 vector registers: the 8 x 3-vector tile keeps 24 accumulators + 3 B vectors + 1
// broadcast A value (fp32 8 x 12, fp64 8 x 6). Dot-product 4 x 4: 16 accumulators + 4 A
// vectors + 1 B vector. Packing uses the portable loops (no NEON transposes yet).
MicroKernels neon_microkernels() {
  return {make_microkernel<F32x4, 8, 3, 4>(), make_microkernel<F64x2, 8, 3, 4>()};
}

}  // namespace fusedmlp::cpu
