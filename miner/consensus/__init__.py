"""The rules a block must pass: chain parameters, retarget rules, proof of work and the block
checks, in one place for the miner, the node's RPC, a peer and `verify` alike."""
