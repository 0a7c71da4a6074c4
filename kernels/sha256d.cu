// SHA-256d nonce search for 80-byte Bitcoin headers.
//
// Compiled three ways from this one file: by NVRTC through CuPy (the product), by nvcc in the
// tests (register, spill and SASS checks), and as plain C++ with cuda_host_shim.h, run serially on
// the CPU and compared bit for bit with hashlib.
//
// The host (miner/backends/cuda.py, kernels/cuda_job.py) writes a job of JOB_WORDS words into the
// constant-memory array c_job before each launch (constant operands cost no load instruction):
//   [0..7]   midstate: SHA-256 state after the first 64 header bytes (same for every nonce)
//   [8..10]  W0..W2 of the second block: merkle-root tail, time, bits
//   [11..18] working variables a..h after rounds 0-2 of the second block: those rounds read only
//            W0..W2, not the nonce (W3), so they are done once per job on the host
//   [19..20] W16, W17: schedule words built only from W0..W2 and constant padding
//   [21..28] target as eight 32-bit limbs, least significant first
// Hits: hits[0] counts every hit (atomically); hits[1..max_hits] keep the first nonces reported.

#ifndef __CUDACC__
#include "cuda_host_shim.h"
#else
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
#endif

#define JOB_WORDS 29
#define JOB_MIDSTATE 0
#define JOB_TAIL 8
#define JOB_STATE3 11
#define JOB_W16 19
#define JOB_W17 20
#define JOB_TARGET 21

__constant__ uint32_t c_job[JOB_WORDS];

// The padding of the header's second block: 0x80 after the nonce, then the length, 640 bits.
#define PAD_WORD 0x80000000u
#define HEADER_BITS 640u
// The padding of the second hash's single block: 32 bytes of hash, 0x80, length 256 bits.
#define HASH_BITS 256u

// SHA-256 round constants. A switch rather than a __constant__ table: once the round loops are
// unrolled, t is a literal, so K[t] becomes an immediate that the compiler folds with constant
// schedule words (padding, zero words) and with the IV in the first rounds of the second hash.
__device__ __forceinline__ uint32_t round_constant(int t) {
    switch (t) {
        case 0: return 0x428a2f98u; case 1: return 0x71374491u; case 2: return 0xb5c0fbcfu; case 3: return 0xe9b5dba5u;
        case 4: return 0x3956c25bu; case 5: return 0x59f111f1u; case 6: return 0x923f82a4u; case 7: return 0xab1c5ed5u;
        case 8: return 0xd807aa98u; case 9: return 0x12835b01u; case 10: return 0x243185beu; case 11: return 0x550c7dc3u;
        case 12: return 0x72be5d74u; case 13: return 0x80deb1feu; case 14: return 0x9bdc06a7u; case 15: return 0xc19bf174u;
        case 16: return 0xe49b69c1u; case 17: return 0xefbe4786u; case 18: return 0x0fc19dc6u; case 19: return 0x240ca1ccu;
        case 20: return 0x2de92c6fu; case 21: return 0x4a7484aau; case 22: return 0x5cb0a9dcu; case 23: return 0x76f988dau;
        case 24: return 0x983e5152u; case 25: return 0xa831c66du; case 26: return 0xb00327c8u; case 27: return 0xbf597fc7u;
        case 28: return 0xc6e00bf3u; case 29: return 0xd5a79147u; case 30: return 0x06ca6351u; case 31: return 0x14292967u;
        case 32: return 0x27b70a85u; case 33: return 0x2e1b2138u; case 34: return 0x4d2c6dfcu; case 35: return 0x53380d13u;
        case 36: return 0x650a7354u; case 37: return 0x766a0abbu; case 38: return 0x81c2c92eu; case 39: return 0x92722c85u;
        case 40: return 0xa2bfe8a1u; case 41: return 0xa81a664bu; case 42: return 0xc24b8b70u; case 43: return 0xc76c51a3u;
        case 44: return 0xd192e819u; case 45: return 0xd6990624u; case 46: return 0xf40e3585u; case 47: return 0x106aa070u;
        case 48: return 0x19a4c116u; case 49: return 0x1e376c08u; case 50: return 0x2748774cu; case 51: return 0x34b0bcb5u;
        case 52: return 0x391c0cb3u; case 53: return 0x4ed8aa4au; case 54: return 0x5b9cca4fu; case 55: return 0x682e6ff3u;
        case 56: return 0x748f82eeu; case 57: return 0x78a5636fu; case 58: return 0x84c87814u; case 59: return 0x8cc70208u;
        case 60: return 0x90befffau; case 61: return 0xa4506cebu; case 62: return 0xbef9a3f7u; case 63: return 0xc67178f2u;
        default: return 0;
    }
}

// SHA-256 initial state; the second hash starts from it.
#define IV0 0x6a09e667u
#define IV1 0xbb67ae85u
#define IV2 0x3c6ef372u
#define IV3 0xa54ff53au
#define IV4 0x510e527fu
#define IV5 0x9b05688cu
#define IV6 0x1f83d9abu
#define IV7 0x5be0cd19u

// A plain shift pair: nvcc emits one SHF (funnel shift) for it. Not __funnelshift_r: in CUDA 13
// that is an asm volatile, which stops the compiler hoisting nonce-independent work.
#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define BSIG0(x) (ROTR(x, 2) ^ ROTR(x, 13) ^ ROTR(x, 22))
#define BSIG1(x) (ROTR(x, 6) ^ ROTR(x, 11) ^ ROTR(x, 25))
// The schedule's plain right shifts as a multiply-high by 2^(32-n): the same bits, but ptxas
// emits IMAD.HI on the FMA pipe instead of a shift on the integer ALU pipe, which carries every
// rotation and logic op and sets the kernel's speed (156 instructions per nonce moved; words the
// compiler knows still fold to constants).
#define SHR(x, n) __umulhi((x), 1u << (32 - (n)))
#define SSIG0(x) (ROTR(x, 7) ^ ROTR(x, 18) ^ SHR(x, 3))
#define SSIG1(x) (ROTR(x, 17) ^ ROTR(x, 19) ^ SHR(x, 10))
// Choose and majority as single 3-input functions: each becomes one LOP3.
#define CH(e, f, g) ((g) ^ ((e) & ((f) ^ (g))))
#define MAJ(a, b, c) (((a) & (b)) | ((c) & ((a) | (b))))

// The one round macro: round t with schedule word w updates the eight working variables.
#define ROUND(a, b, c, d, e, f, g, h, t, w)                        \
    do {                                                           \
        uint32_t t1_ = (h) + BSIG1(e) + CH(e, f, g) + round_constant(t) + (w);  \
        uint32_t t2_ = BSIG0(a) + MAJ(a, b, c);                    \
        (h) = (g); (g) = (f); (f) = (e); (e) = (d) + t1_;          \
        (d) = (c); (c) = (b); (b) = (a); (a) = t1_ + t2_;          \
    } while (0)

// Message schedule word t (t >= 16) from the previous sixteen.
#define EXPAND(w, t) ((w)[t] = SSIG1((w)[(t) - 2]) + (w)[(t) - 7] + SSIG0((w)[(t) - 15]) + (w)[(t) - 16])

__device__ __forceinline__ uint32_t bswap32(uint32_t x) {
    return (x >> 24) | ((x >> 8) & 0x0000ff00u) | ((x << 8) & 0x00ff0000u) | (x << 24);
}

// First hash, second block, for one nonce: returns the eight words of the first SHA-256.
__device__ __forceinline__ void first_hash(uint32_t nonce_word, uint32_t out[8]) {
    const uint32_t* job = c_job;
    uint32_t w[64];
    w[0] = job[JOB_TAIL + 0];
    w[1] = job[JOB_TAIL + 1];
    w[2] = job[JOB_TAIL + 2];
    w[3] = nonce_word;
    w[4] = PAD_WORD;
#pragma unroll
    for (int t = 5; t < 15; t++) w[t] = 0;
    w[15] = HEADER_BITS;
    w[16] = job[JOB_W16];  // sigma0(W1) + W0: no nonce in it
    w[17] = job[JOB_W17];  // sigma1(640) + sigma0(W2) + W1: no nonce in it
#pragma unroll
    for (int t = 18; t < 64; t++) EXPAND(w, t);

    uint32_t a = job[JOB_STATE3 + 0], b = job[JOB_STATE3 + 1], c = job[JOB_STATE3 + 2], d = job[JOB_STATE3 + 3];
    uint32_t e = job[JOB_STATE3 + 4], f = job[JOB_STATE3 + 5], g = job[JOB_STATE3 + 6], h = job[JOB_STATE3 + 7];
#pragma unroll
    for (int t = 3; t < 64; t++) ROUND(a, b, c, d, e, f, g, h, t, w[t]);

    out[0] = job[JOB_MIDSTATE + 0] + a;
    out[1] = job[JOB_MIDSTATE + 1] + b;
    out[2] = job[JOB_MIDSTATE + 2] + c;
    out[3] = job[JOB_MIDSTATE + 3] + d;
    out[4] = job[JOB_MIDSTATE + 4] + e;
    out[5] = job[JOB_MIDSTATE + 5] + f;
    out[6] = job[JOB_MIDSTATE + 6] + g;
    out[7] = job[JOB_MIDSTATE + 7] + h;
}

// Second hash schedule: the first hash, then constant padding.
__device__ __forceinline__ void second_schedule(const uint32_t h1[8], uint32_t w[64], int upto) {
#pragma unroll
    for (int t = 0; t < 8; t++) w[t] = h1[t];
    w[8] = PAD_WORD;
#pragma unroll
    for (int t = 9; t < 15; t++) w[t] = 0;
    w[15] = HASH_BITS;
#pragma unroll
    for (int t = 16; t < 64; t++)
        if (t < upto) EXPAND(w, t);
}

// Only the last output word of the second hash, for the early test. H7 = IV7 + h after round 63,
// and h after round 63 is the `e` made in round 60 (it moves e -> f -> g -> h), so rounds 61-63
// are skipped and round 60 only needs its `e`; the compiler removes the unused `a` work.
__device__ __forceinline__ uint32_t second_hash_h7(const uint32_t h1[8]) {
    uint32_t w[64];
    second_schedule(h1, w, 61);
    uint32_t a = IV0, b = IV1, c = IV2, d = IV3, e = IV4, f = IV5, g = IV6, h = IV7;
#pragma unroll
    for (int t = 0; t < 61; t++) ROUND(a, b, c, d, e, f, g, h, t, w[t]);
    return IV7 + e;
}

// The full second hash and 256-bit comparison, for the rare nonces that pass the early test.
// Not inlined, to keep the hot loop small; the first hash comes by value, because an array
// argument would have to live in a stack frame.
__device__ __noinline__ int meets_target(uint32_t h0, uint32_t h1, uint32_t h2, uint32_t h3, uint32_t h4,
                                         uint32_t h5, uint32_t h6, uint32_t h7) {
    const uint32_t first[8] = {h0, h1, h2, h3, h4, h5, h6, h7};
    uint32_t w[64];
    second_schedule(first, w, 64);
    uint32_t a = IV0, b = IV1, c = IV2, d = IV3, e = IV4, f = IV5, g = IV6, h = IV7;
#pragma unroll
    for (int t = 0; t < 64; t++) ROUND(a, b, c, d, e, f, g, h, t, w[t]);
    uint32_t out[8] = {IV0 + a, IV1 + b, IV2 + c, IV3 + d, IV4 + e, IV5 + f, IV6 + g, IV7 + h};
    // The hash is compared as a little-endian number: limb i is byte-swapped state word i,
    // most significant limb (7) first.
    for (int i = 7; i >= 0; i--) {
        uint32_t limb = bswap32(out[i]);
        uint32_t target = c_job[JOB_TARGET + i];
        if (limb != target) return limb < target;
    }
    return 1;  // equal to the target: a hit (hash <= target)
}

extern "C" __global__ void sha256d_search(uint32_t nonce_start, uint32_t count, uint32_t nonces_per_thread,
                                          uint32_t* __restrict__ hits, uint32_t max_hits) {
    const uint32_t threads = gridDim.x * blockDim.x;
    const uint32_t gid = blockIdx.x * blockDim.x + threadIdx.x;
    const uint32_t top_target = c_job[JOB_TARGET + 7];
    if (gid >= count) return;
    // This thread hashes nonce_start + gid + i * threads for i < n. n is computed once, in 32 bits
    // and without overflow (count may be 2^32 - 1), so the loop carries one counter and the nonce.
    uint32_t n = (count - gid - 1) / threads + 1;
    if (n > nonces_per_thread) n = nonces_per_thread;
    uint32_t nonce = nonce_start + gid;
    for (uint32_t i = 0; i < n; i++, nonce += threads) {
        uint32_t h1[8];
        // SHA-256 reads message words big-endian; the header stores the nonce little-endian.
        first_hash(bswap32(nonce), h1);
        // Early test on the most significant limb only: rare survivors get the full comparison.
        if (bswap32(second_hash_h7(h1)) <= top_target &&
            meets_target(h1[0], h1[1], h1[2], h1[3], h1[4], h1[5], h1[6], h1[7])) {
            uint32_t slot = atomicAdd(&hits[0], 1u);
            if (slot < max_hits) hits[1 + slot] = nonce;  // never past the buffer
        }
    }
}
