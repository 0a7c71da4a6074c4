// Host build of the CUDA kernel: includes sha256d.cu itself and launches it as a serial loop.
// Built by the tests with g++ into a shared library and called through ctypes: directly
// (host_launch) and by the CuPy simulator in tests/support/cupy_sim.py (host_symbol, host_run_blocks).
#include <setjmp.h>
#include <signal.h>
#include <string.h>

#include "sha256d.cu"

shim_dim3 blockIdx, threadIdx, blockDim, gridDim;

// An integer division by zero traps on a CPU (SIGFPE) but not on a GPU, where it silently gives
// a wrong quotient. The launch catches the trap and reports where it happened instead of letting
// it kill the process, so a test can name the fault.
static sigjmp_buf fpe_jump;
static void on_fpe(int) { siglongjmp(fpe_jump, 1); }

// Runs blocks [block_lo, block_hi) of a grid of `grid` blocks of `block` threads.
// Returns 0, or 1 after a division by zero, with its block and thread in fault[0..1].
extern "C" int host_run_blocks(uint32_t grid, uint32_t block, uint32_t block_lo, uint32_t block_hi,
                               uint32_t nonce_start, uint32_t count, uint32_t nonces_per_thread,
                               uint32_t* hits, uint32_t max_hits, uint32_t* fault) {
    struct sigaction on = {}, old = {};
    on.sa_handler = on_fpe;
    sigemptyset(&on.sa_mask);
    sigaction(SIGFPE, &on, &old);
    volatile uint32_t b = block_lo, t = 0;  // volatile: read after siglongjmp
    int rc = 0;
    if (sigsetjmp(fpe_jump, 1)) {
        fault[0] = b;
        fault[1] = t;
        rc = 1;
    } else {
        gridDim = {grid, 1, 1};
        blockDim = {block, 1, 1};
        for (b = block_lo; b < block_hi; b++) {
            blockIdx = {b, 0, 0};
            for (t = 0; t < block; t++) {
                threadIdx = {t, 0, 0};
                sha256d_search(nonce_start, count, nonces_per_thread, hits, max_hits);
            }
        }
    }
    sigaction(SIGFPE, &old, nullptr);
    return rc;
}

// The address and size of a __constant__ symbol, as cuModuleGetGlobal gives them.
extern "C" void* host_symbol(const char* name, size_t* size) {
    if (strcmp(name, "c_job") == 0) {
        *size = sizeof(c_job);
        return c_job;
    }
    return nullptr;
}

// The whole launch with its job, as the kernel tests call it.
extern "C" void host_launch(uint32_t grid, uint32_t block, const uint32_t* job, uint32_t nonce_start,
                            uint32_t count, uint32_t nonces_per_thread, uint32_t* hits,
                            uint32_t max_hits) {
    memcpy(c_job, job, sizeof(c_job));  // what the device backend does with cudaMemcpyToSymbol
    uint32_t fault[2];
    host_run_blocks(grid, block, 0, grid, nonce_start, count, nonces_per_thread, hits, max_hits, fault);
}
