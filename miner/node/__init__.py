"""`miner node`: the chain served over JSON-RPC."""
