"""`python -m miner.backends.prewarm --kernel auto --threads N [--pow scrypt]`: compile the CPU
backend's kernel (SHA-256d, or scrypt's variant) into numba's on-disk cache, then exit. For `auto` with no
settled choice it compiles every kernel (or scrypt variant) this CPU runs and times none: the miner times them
itself once they load, with its stand-in stopped (a child timing them would share the cores with
the stand-in, and every first run's choice would be taken on a busy machine). Run by
`miner.backends.warmup` in a child process while the miner already hashes; a failure is one
line on standard error and exit 1."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miner.backends.prewarm")
    parser.add_argument("--kernel", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pow", default="sha256d", choices=("sha256d", "scrypt"))
    args = parser.parse_args(argv)
    try:
        from miner.kernels import cpu_select
        if args.pow == "scrypt":
            from miner.kernels import cpu_scrypt_select
            if cpu_scrypt_select.stored_choice() is None:  # every variant, timed by the miner itself
                cpu_scrypt_select.compile_variants()
                return 0
            from miner.backends.cpu_scrypt import CpuScryptBackend
            backend = CpuScryptBackend(threads=1)
        elif args.kernel == "auto" and cpu_select.stored_choice() is None:
            cpu_select.compile_kernels()
            return 0
        else:
            from miner.backends.cpu import CpuBackend
            backend = CpuBackend(threads=args.threads, kernel=args.kernel)
        backend.warm_up()
        backend.close()
    except Exception as exc:  # noqa: BLE001  (told to the parent in one line; it compiles itself)
        print(f"prewarm: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
