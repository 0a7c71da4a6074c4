"""pow-miner: a GPU-accelerated Bitcoin-exact SHA-256d proof-of-work miner."""

__version__ = "0.1.0"
