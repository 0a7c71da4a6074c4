// Host build of the CUDA scrypt kernel: includes scrypt.cu itself and launches it as a serial
// loop over blocks and threads. Built by the tests with g++ (-DLOOKUP_GAP=g as NVRTC gets it)
// into a shared library and called through ctypes: directly (host_launch) and by the CuPy
// simulator in tests/support/cupy_sim.py (host_symbol, host_run_blocks), as cuda_host_launch.cpp is.
#include <string.h>

#include "scrypt.cu"

shim_dim3 blockIdx, threadIdx, blockDim, gridDim;

// Runs blocks [block_lo, block_hi) of a grid of `grid` blocks of `block` threads (the kernel
// divides by constants only, so there is no division fault to report: `fault` stays untouched).
extern "C" int host_run_blocks(uint32_t grid, uint32_t block, uint32_t block_lo, uint32_t block_hi,
                               uint32_t nonce_start, uint32_t count, uint32_t* pad, uint32_t* hits,
                               uint32_t max_hits, uint32_t* fault) {
    (void)fault;
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (uint32_t b = block_lo; b < block_hi; b++) {
        blockIdx = {b, 0, 0};
        for (uint32_t t = 0; t < block; t++) {
            threadIdx = {t, 0, 0};
            scrypt_search(nonce_start, count, pad, hits, max_hits);
        }
    }
    return 0;
}

// The address and size of a __constant__ symbol, as cuModuleGetGlobal gives them.
extern "C" void* host_symbol(const char* name, size_t* size) {
    if (strcmp(name, "c_job") == 0) {
        *size = sizeof(c_job);
        return c_job;
    }
    return nullptr;
}

// The whole launch with its job, as the kernel tests call it: `pad` holds grid * block * N /
// LOOKUP_GAP rows of 32 words.
extern "C" void host_launch(uint32_t grid, uint32_t block, const uint32_t* job, uint32_t nonce_start,
                            uint32_t count, uint32_t* pad, uint32_t* hits, uint32_t max_hits) {
    memcpy(c_job, job, sizeof(c_job));  // what the device backend does with cudaMemcpyToSymbol
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (uint32_t b = 0; b < grid; b++) {
        blockIdx = {b, 0, 0};
        for (uint32_t t = 0; t < block; t++) {
            threadIdx = {t, 0, 0};
            scrypt_search(nonce_start, count, pad, hits, max_hits);
        }
    }
}

extern "C" uint32_t host_lookup_gap() { return LOOKUP_GAP; }
