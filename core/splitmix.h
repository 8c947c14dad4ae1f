/* splitmix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
 * generators", OOPSLA 2014): output j of the sequence started at s is
 * ql_splitmix64_mix(s + (j + 1)·γ). One copy for core/rng.c, which seeds
 * xoshiro with it, and for kernels/dropout.h, which uses it as a
 * counter-based generator in C and CUDA code alike. */
#ifndef QL_SPLITMIX_H
#define QL_SPLITMIX_H

#include <stdint.h>

#ifndef QL_HD
#if defined(__CUDACC__)
#define QL_HD static __host__ __device__ __forceinline__
#else
#define QL_HD static inline
#endif
#endif

#define QL_SPLITMIX_GAMMA 0x9e3779b97f4a7c15ull

QL_HD uint64_t ql_splitmix64_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#endif
