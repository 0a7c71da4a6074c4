"""Bitcoin's data as bytes and numbers: hashes, compact targets, headers, transactions, blocks,
merkle trees and the coinbase. No rules of any chain live here (those are `consensus`), and
nothing here does I/O."""
