"""The embedded chain: the block index in memory, the SQLite store, and the chain that adds,
reorganises and verifies."""
