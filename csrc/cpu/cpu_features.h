// Run-time ISA dispatch shared by the CPU ops. setup.py passes no -march, so the hot loops are
// compiled twice: for AVX2 + FMA (picked at run time when the CPU has them) and for the baseline ISA.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#define EF_HAVE_AVX2_CLONE 1
#endif

static inline bool cpu_has_avx2_fma() {
#ifdef EF_HAVE_AVX2_CLONE
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}
