"""`miner node`: the one process that owns a chain file and serves it on its faces: JSON-RPC as
Bitcoin Core speaks it, a Stratum v1 pool server, Bitcoin's peer-to-peer protocol and metrics."""
