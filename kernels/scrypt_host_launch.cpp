// Host build of the CUDA scrypt kernel: includes scrypt.cu itself and launches it as a serial
// loop over blocks and threads. Built by the tests with g++ (-DLOOKUP_GAP=g as NVRTC gets it)
// into a shared library and called through ctypes.
#include <string.h>

#include "scrypt.cu"

shim_dim3 blockIdx, threadIdx, blockDim, gridDim;

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
