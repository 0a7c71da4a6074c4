// Host build of the CUDA kernel: includes sha256d.cu itself and launches it as a serial loop.
// Built by the tests with g++ into a shared library and called through ctypes.
#include <string.h>

#include "sha256d.cu"

shim_dim3 blockIdx, threadIdx, blockDim, gridDim;

extern "C" void host_launch(uint32_t grid, uint32_t block, const uint32_t* job, uint32_t nonce_start,
                            uint32_t count, uint32_t nonces_per_thread, uint32_t* hits,
                            uint32_t max_hits) {
    memcpy(c_job, job, sizeof(c_job));  // what the device backend does with cudaMemcpyToSymbol
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (uint32_t b = 0; b < grid; b++) {
        blockIdx = {b, 0, 0};
        for (uint32_t t = 0; t < block; t++) {
            threadIdx = {t, 0, 0};
            sha256d_search(nonce_start, count, nonces_per_thread, hits, max_hits);
        }
    }
}
