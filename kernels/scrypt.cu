// scrypt nonce search for 80-byte headers: Litecoin's scrypt(header, header, N=1024, r=1, p=1).
//
// Compiled three ways from this one file, as sha256d.cu is: by NVRTC (the product's path), by
// nvcc in the tests (for real GPU targets), and as plain C++ with cuda_host_shim.h, run serially
// on the CPU and compared bit for bit with hashlib.scrypt.
//
// One thread hashes one nonce at a time. Its scratchpad is its own slice of `pad` in global
// memory: N / LOOKUP_GAP rows of 32 words (128 bytes). With a lookup gap g only every g-th
// ROMix state is stored, and a read of row j recomputes it from the stored row below it with
// j mod g BlockMix steps: memory / g for about (g - 1) / 2 extra BlockMix per read on average
// (bench/scrypt_model.py weighs the two against a device's bandwidth and compute).
//
// The job (c_job, SCRYPT_JOB_WORDS words in constant memory):
//   [0..18]  the header's first 76 bytes as big-endian words
//   [19..26] target as eight 32-bit limbs, least significant first
// Hits: hits[0] counts every hit (atomically); hits[1..max_hits] keep the first nonces reported.

#ifndef __CUDACC__
#include "cuda_host_shim.h"
#else
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
#endif

#ifndef LOOKUP_GAP
#define LOOKUP_GAP 1
#endif
#define SCRYPT_N 1024u
#define SCRYPT_JOB_WORDS 27
#define SCRYPT_JOB_TARGET 19

__constant__ uint32_t c_job[SCRYPT_JOB_WORDS];

__device__ __forceinline__ uint32_t rotr32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
__device__ __forceinline__ uint32_t rotl32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }
__device__ __forceinline__ uint32_t bswap32(uint32_t x) {
    return (x >> 24) | ((x >> 8) & 0xff00u) | ((x << 8) & 0xff0000u) | (x << 24);
}

__device__ __forceinline__ uint32_t k256(int t) {
    const uint32_t k[64] = {
        0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
        0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
        0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
        0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
        0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
        0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
        0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
        0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u};
    return k[t];
}

// One SHA-256 compression of block (16 big-endian words) into state.
__device__ void sha256_block(uint32_t state[8], const uint32_t block[16]) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) w[i] = block[i];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr32(w[i - 15], 7) ^ rotr32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr32(w[i - 2], 17) ^ rotr32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25)) + ((e & f) ^ (~e & g)) + k256(i) + w[i];
        uint32_t t2 = (rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    state[0] += a; state[1] += b; state[2] += c; state[3] += d;
    state[4] += e; state[5] += f; state[6] += g; state[7] += h;
}

__device__ void sha256_iv(uint32_t s[8]) {
    s[0] = 0x6a09e667u; s[1] = 0xbb67ae85u; s[2] = 0x3c6ef372u; s[3] = 0xa54ff53au;
    s[4] = 0x510e527fu; s[5] = 0x9b05688cu; s[6] = 0x1f83d9abu; s[7] = 0x5be0cd19u;
}

// HMAC-SHA256 inner and outer states for the 80-byte key `header` (hashed first: longer than a block).
__device__ void hmac_states(const uint32_t header[20], uint32_t istate[8], uint32_t ostate[8]) {
    uint32_t key[8], block[16];
    sha256_iv(key);
    sha256_block(key, header);
    for (int i = 0; i < 4; i++) block[i] = header[16 + i];
    block[4] = 0x80000000u;
    for (int i = 5; i < 15; i++) block[i] = 0;
    block[15] = 640;
    sha256_block(key, block);
    for (int i = 0; i < 8; i++) block[i] = key[i] ^ 0x36363636u;
    for (int i = 8; i < 16; i++) block[i] = 0x36363636u;
    sha256_iv(istate);
    sha256_block(istate, block);
    for (int i = 0; i < 16; i++) block[i] ^= 0x36363636u ^ 0x5c5c5c5cu;
    sha256_iv(ostate);
    sha256_block(ostate, block);
}

// HMAC's outer hash of a 32-byte inner digest.
__device__ void hmac_outer(const uint32_t ostate[8], const uint32_t inner[8], uint32_t out[8]) {
    uint32_t block[16];
    for (int i = 0; i < 8; i++) { out[i] = ostate[i]; block[i] = inner[i]; }
    block[8] = 0x80000000u;
    for (int i = 9; i < 15; i++) block[i] = 0;
    block[15] = 768;
    sha256_block(out, block);
}

#define QR(a, b, c, n) a ^= rotl32(b + c, n)

// salsa20/8 on b (16 words, in place): four double rounds, then the input added back.
__device__ __forceinline__ void salsa8(uint32_t b[16]) {
    uint32_t x0 = b[0], x1 = b[1], x2 = b[2], x3 = b[3], x4 = b[4], x5 = b[5], x6 = b[6], x7 = b[7];
    uint32_t x8 = b[8], x9 = b[9], x10 = b[10], x11 = b[11], x12 = b[12], x13 = b[13], x14 = b[14], x15 = b[15];
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int i = 0; i < 4; i++) {
        QR(x4, x0, x12, 7);   QR(x8, x4, x0, 9);    QR(x12, x8, x4, 13);  QR(x0, x12, x8, 18);
        QR(x9, x5, x1, 7);    QR(x13, x9, x5, 9);   QR(x1, x13, x9, 13);  QR(x5, x1, x13, 18);
        QR(x14, x10, x6, 7);  QR(x2, x14, x10, 9);  QR(x6, x2, x14, 13);  QR(x10, x6, x2, 18);
        QR(x3, x15, x11, 7);  QR(x7, x3, x15, 9);   QR(x11, x7, x3, 13);  QR(x15, x11, x7, 18);
        QR(x1, x0, x3, 7);    QR(x2, x1, x0, 9);    QR(x3, x2, x1, 13);   QR(x0, x3, x2, 18);
        QR(x6, x5, x4, 7);    QR(x7, x6, x5, 9);    QR(x4, x7, x6, 13);   QR(x5, x4, x7, 18);
        QR(x11, x10, x9, 7);  QR(x8, x11, x10, 9);  QR(x9, x8, x11, 13);  QR(x10, x9, x8, 18);
        QR(x12, x15, x14, 7); QR(x13, x12, x15, 9); QR(x14, x13, x12, 13); QR(x15, x14, x13, 18);
    }
    b[0] += x0; b[1] += x1; b[2] += x2; b[3] += x3; b[4] += x4; b[5] += x5; b[6] += x6; b[7] += x7;
    b[8] += x8; b[9] += x9; b[10] += x10; b[11] += x11; b[12] += x12; b[13] += x13; b[14] += x14; b[15] += x15;
}

// BlockMix with r = 1: x0 ^= x1, salsa(x0); x1 ^= x0, salsa(x1).
__device__ __forceinline__ void block_mix(uint32_t x[32]) {
    for (int i = 0; i < 16; i++) x[i] ^= x[16 + i];
    salsa8(x);
    for (int i = 0; i < 16; i++) x[16 + i] ^= x[i];
    salsa8(x + 16);
}

// scrypt of one header (20 big-endian words) into out (8 big-endian words), pad: this thread's rows.
__device__ void scrypt_1024_1_1(const uint32_t header[20], uint32_t* __restrict__ pad, uint32_t out[8]) {
    uint32_t istate[8], ostate[8], salted[8], tmp[8], t[8], block[16], x[32];
    hmac_states(header, istate, ostate);
    for (int i = 0; i < 8; i++) salted[i] = istate[i];
    sha256_block(salted, header);  // the salt's first 64 bytes, shared by the four output blocks
    for (int i = 0; i < 4; i++) {
        for (int k = 0; k < 8; k++) tmp[k] = salted[k];
        for (int k = 0; k < 4; k++) block[k] = header[16 + k];
        block[4] = (uint32_t)(i + 1);
        block[5] = 0x80000000u;
        for (int k = 6; k < 15; k++) block[k] = 0;
        block[15] = 1184;
        sha256_block(tmp, block);
        hmac_outer(ostate, tmp, t);
        for (int k = 0; k < 8; k++) x[8 * i + k] = bswap32(t[k]);  // scrypt's words are little-endian
    }
    for (uint32_t i = 0; i < SCRYPT_N; i++) {
        if (i % LOOKUP_GAP == 0) {
            for (int k = 0; k < 32; k++) pad[(i / LOOKUP_GAP) * 32 + k] = x[k];
        }
        block_mix(x);
    }
    for (uint32_t i = 0; i < SCRYPT_N; i++) {
        uint32_t j = x[16] & (SCRYPT_N - 1);  // Integerify
        uint32_t v[32];
        for (int k = 0; k < 32; k++) v[k] = pad[(j / LOOKUP_GAP) * 32 + k];
        for (uint32_t step = 0; step < j % LOOKUP_GAP; step++) block_mix(v);  // recompute the skipped rows
        for (int k = 0; k < 32; k++) x[k] ^= v[k];
        block_mix(x);
    }
    for (int k = 0; k < 8; k++) tmp[k] = istate[k];
    for (int half = 0; half < 2; half++) {
        for (int k = 0; k < 16; k++) block[k] = bswap32(x[16 * half + k]);
        sha256_block(tmp, block);
    }
    block[0] = 1;
    block[1] = 0x80000000u;
    for (int k = 2; k < 15; k++) block[k] = 0;
    block[15] = 1568;
    sha256_block(tmp, block);
    hmac_outer(ostate, tmp, out);
}

// The hash (8 big-endian words) read as a little-endian 256-bit number, <= the target.
__device__ __forceinline__ bool meets_target(const uint32_t h[8]) {
    for (int i = 7; i >= 0; i--) {
        uint32_t limb = bswap32(h[i]);
        uint32_t t = c_job[SCRYPT_JOB_TARGET + i];
        if (limb < t) return true;
        if (limb > t) return false;
    }
    return true;
}

// Grid-stride over [nonce_start, nonce_start + count): thread g hashes nonces start + g,
// start + g + threads, ... using pad rows [g * N / LOOKUP_GAP, (g + 1) * N / LOOKUP_GAP).
extern "C" __global__ void scrypt_search(uint32_t nonce_start, uint32_t count, uint32_t* __restrict__ pad,
                                         uint32_t* __restrict__ hits, uint32_t max_hits) {
    uint32_t g = blockIdx.x * blockDim.x + threadIdx.x;
    uint32_t threads = gridDim.x * blockDim.x;
    uint32_t* mine = pad + (uint64_t)g * (SCRYPT_N / LOOKUP_GAP) * 32;
    uint32_t header[20], h[8];
    for (int i = 0; i < 19; i++) header[i] = c_job[i];
    for (uint32_t k = g; k < count; k += threads) {
        uint32_t nonce = nonce_start + k;
        header[19] = bswap32(nonce);
        scrypt_1024_1_1(header, mine, h);
        if (meets_target(h)) {
            uint32_t slot = atomicAdd(&hits[0], 1u);
            if (slot < max_hits) hits[1 + slot] = nonce;
        }
    }
}
