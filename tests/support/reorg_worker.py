"""Worker for the SIGKILL test: forever extend the branch that is not active until it takes over,
so every few blocks the chain reorganises. Prints 'ready' once the chain is open."""

import sys

from miner.chain.chain import Chain

from .blockmaker import NOW, make_block


def main(path: str, salt: str) -> None:
    with Chain.open(path) as chain:
        print("ready", flush=True)
        n = 0
        while True:
            side = next(t for t in chain.tips() if t.status == "valid-fork")
            block = make_block(chain, side.hash, 10, f"{salt}-{n}".encode())
            chain.add_block(block, now=NOW)
            n += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
