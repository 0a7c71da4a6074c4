// Lets kernels/sha256d.cu compile as ordinary C++ so its logic runs on a CPU, serially.
//
// The launch is a plain loop over blocks and threads (see cuda_host_launch.cpp); atomics need no
// synchronisation because nothing runs concurrently. Only what sha256d.cu uses is mapped.
#pragma once
#include <stdint.h>

#define __global__
#define __device__
#define __constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict

struct shim_dim3 {
    uint32_t x, y, z;
};

// The launch loop sets these before each simulated thread runs.
extern shim_dim3 blockIdx, threadIdx, blockDim, gridDim;

static inline uint32_t __umulhi(uint32_t a, uint32_t b) {
    return (uint32_t)(((uint64_t)a * b) >> 32);
}

static inline uint32_t atomicAdd(uint32_t* address, uint32_t value) {
    uint32_t old = *address;
    *address = old + value;
    return old;
}
