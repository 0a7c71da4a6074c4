"""A bandwidth-and-compute model of the CUDA scrypt kernel (kernels/scrypt.cu): bytes moved and
integer operations per hash, against a device's memory bandwidth and integer throughput, giving
the predicted hash rate and which of the two bounds it.

    python -m miner.bench.scrypt_model [--device H200] [--lookup-gap 1,2,4,8] [--json]

Per hash (N = 1024, r = 1): ROMix writes N / g rows of 128 bytes and reads N of them (each read
loads one stored row), so 128 KiB / g + 128 KiB cross the memory bus (the PBKDF2 passes live in
registers). Compute: 2N BlockMix (two salsa20/8 each: 4 double rounds of 32 add-rotate-xor
steps, 16 final adds, and the 32 xors of the block input), the N xors of the stored row into
the state, about (g - 1) / 2 BlockMix a read to recompute skipped rows, and PBKDF2-HMAC-SHA256's
compressions. An operation is one 32-bit integer instruction; a rotate is one (a funnel shift).
The device figures are NVIDIA's published specifications; the model ignores latency hiding,
occupancy and caches, so it is an upper bound and a guide to the lookup gap, not a promise.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass

N = 1024
ROW = 128  # bytes in one ROMix state
SALSA_OPS = 4 * 32 * 3 + 16  # four double rounds of add, rotate, xor; the final adds
BLOCKMIX_OPS = 2 * SALSA_OPS + 32  # two salsa20/8 and the input xors
SHA256_OPS = 64 * 30 + 48 * 10  # per compression: rounds and message schedule
PBKDF2_COMPRESSIONS = 2 + 2 + 1 + 4 * 2 + 3 + 1  # key, pads, salt block, 4 blocks, final pass


@dataclass(frozen=True)
class Device:
    name: str
    bandwidth: float  # bytes/s
    int_ops: float  # 32-bit integer instructions/s: SMs x INT32 lanes per SM x boost clock
    memory: float  # bytes


# NVIDIA's data sheets: H200 SXM (4.8 TB/s HBM3e, 141 GB), H100 SXM (3.35 TB/s, 80 GB), both 132
# SMs at 1.98 GHz boost with 64 INT32 lanes per SM; RTX 4090 (1,008 GB/s, 24 GB), 128 SMs at
# 2.52 GHz with 64 INT32-capable lanes per SM.
DEVICES = {
    "H200": Device("H200", 4.8e12, 132 * 64 * 1.98e9, 141e9),
    "H100": Device("H100", 3.35e12, 132 * 64 * 1.98e9, 80e9),
    "RTX 4090": Device("RTX 4090", 1.008e12, 128 * 64 * 2.52e9, 24e9),
}


@dataclass(frozen=True)
class Prediction:
    device: str
    lookup_gap: int
    bytes_per_hash: int
    ops_per_hash: int
    memory_bound_hps: float
    compute_bound_hps: float
    predicted_hps: float
    bound: str
    pad_bytes_per_thread: int


def predict(device: Device, lookup_gap: int = 1) -> Prediction:
    moved = N * ROW // lookup_gap + N * ROW
    recompute = N * (lookup_gap - 1) // 2 * BLOCKMIX_OPS
    ops = 2 * N * BLOCKMIX_OPS + N * 32 + recompute + PBKDF2_COMPRESSIONS * SHA256_OPS
    memory_bound = device.bandwidth / moved
    compute_bound = device.int_ops / ops
    return Prediction(device.name, lookup_gap, moved, ops, memory_bound, compute_bound,
                      min(memory_bound, compute_bound), "memory" if memory_bound < compute_bound else "compute",
                      N * ROW // lookup_gap)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m miner.bench.scrypt_model", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="H200", choices=sorted(DEVICES))
    ap.add_argument("--lookup-gap", default="1,2,4,8")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        gaps = [int(g) for g in args.lookup_gap.split(",")]
    except ValueError:
        print(f"error: --lookup-gap wants numbers like 1,2,4, got {args.lookup_gap!r}", file=sys.stderr)
        return 2
    rows = [predict(DEVICES[args.device], g) for g in gaps]
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    print(f"{args.device}: scrypt N=1024 r=1 p=1, per hash and predicted rate")
    print(f"{'gap':>4} {'KiB moved':>10} {'int ops':>10} {'memory bound':>14} {'compute bound':>14} "
          f"{'predicted':>12}  bound")
    for r in rows:
        print(f"{r.lookup_gap:>4} {r.bytes_per_hash / 1024:>10.0f} {r.ops_per_hash:>10,} "
              f"{r.memory_bound_hps / 1e6:>10.2f} MH/s {r.compute_bound_hps / 1e6:>10.2f} MH/s "
              f"{r.predicted_hps / 1e6:>8.2f} MH/s  {r.bound}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
