"""Stratum v1, the pool protocol every CPU, GPU and ASIC miner speaks: the node's third face."""
