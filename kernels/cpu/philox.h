// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) and
// the per-element transforms of the random ops. Header-only and free of std:: so that a
// CUDA kernel compiles the same functions and reproduces the CPU numbers bit for bit.
#pragma once
#if !defined(__CUDACC_RTC__)
#include <math.h>
#include <stdint.h>
#endif

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define MF_PHILOX_FN __host__ __device__ __forceinline__
#else
#define MF_PHILOX_FN inline
#endif

namespace microflex::philox {

#if defined(__CUDACC_RTC__)
// NVRTC (the fused flex_attention kernels embed this header) has no <stdint.h>.
using uint32_t = unsigned int;
using uint64_t = unsigned long long;
#endif

// Note [Random element layout]
// Every random op call has a (seed, offset) pair taken from the generator (its op
// attributes). Element i of its output (row-major index) is a function of (seed, offset,
// i) only: one Philox block with key = {seed_lo, seed_hi} and counter = {i_lo, i_hi,
// offset_lo, offset_hi}. Work can be split any way (threads, CUDA blocks, shapes) and the
// numbers stay the same; distinct offsets give disjoint counter ranges. One block per
// element uses at most 4 of its 32-bit words (uniform: 1 or 2, normal: 4, randint: 2) and
// trades a little speed for that simplicity.

struct Block {
  uint32_t x[4];
};

MF_PHILOX_FN void mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// The Philox4x32 bijection with 10 rounds (Random123's philox4x32_10).
MF_PHILOX_FN Block philox4x32_10(Block ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kM0, ctr.x[0], &hi0, &lo0);
    mulhilo(kM1, ctr.x[2], &hi1, &lo1);
    ctr = Block{{hi1 ^ ctr.x[1] ^ k0, lo1, hi0 ^ ctr.x[3] ^ k1, lo0}};
  }
  return ctr;
}

// The block for element i of the call (seed, offset) (Note [Random element layout]).
MF_PHILOX_FN Block element_block(uint64_t seed, uint64_t offset, uint64_t i) {
  const Block ctr{{static_cast<uint32_t>(i), static_cast<uint32_t>(i >> 32),
                   static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)}};
  return philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Uniform on [0, 1) with `bits` random mantissa bits (1..24) from one word: exact in
// float, and a multiple of 2^-bits, so it never rounds up to 1.
MF_PHILOX_FN float uniform_float(uint32_t w, int bits) {
  return static_cast<float>(w >> (32 - bits)) * (1.0f / static_cast<float>(1u << bits));
}

// Uniform on [0, 1) with 53 random bits from two words.
MF_PHILOX_FN double uniform_double(uint32_t lo, uint32_t hi) {
  const uint64_t v = ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;
  return static_cast<double>(v) * (1.0 / 9007199254740992.0);  // 2^-53
}

// A standard normal by Box-Muller in double from all four words (the cosine branch only,
// so element i needs nothing but its own block). log and cos differ by a few ulps between
// glibc and CUDA's libdevice, so the double result can differ in its last bits (~1e-16);
// rounded to float32 or narrower it agreed on all 2^20 elements of an H100 check, which
// is why every dtype goes through this double path.
MF_PHILOX_FN double normal_double(const Block& b) {
  const double u1 = 1.0 - uniform_double(b.x[0], b.x[1]);  // (0, 1]: log(u1) is finite
  const double u2 = uniform_double(b.x[2], b.x[3]);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// An integer in [0, range) from 64 random bits by modulo. The bias is at most
// range / 2^64 (below 1e-9 for any range under 2^34), far under what tests can see.
MF_PHILOX_FN uint64_t below(const Block& b, uint64_t range) {
  const uint64_t v = (static_cast<uint64_t>(b.x[1]) << 32) | b.x[0];
  return v % range;
}

// Dropout keeps element i iff its 53-bit uniform is >= p: P(keep) = 1 - p up to 2^-53,
// p = 0 keeps everything and p = 1 nothing.
MF_PHILOX_FN bool dropout_keep(uint64_t seed, uint64_t offset, uint64_t i, double p) {
  const Block b = element_block(seed, offset, i);
  return uniform_double(b.x[0], b.x[1]) >= p;
}

}  // namespace microflex::philox
