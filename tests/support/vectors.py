"""Real Bitcoin mainnet data used across the tests (public block data; hashes as explorers show them),
and Litecoin's for scrypt."""

import struct

GENESIS_HEX = (
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e"
    "67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c"
)
GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"

# (height, header hex, block hash)
REAL_HEADERS = [
    (0, GENESIS_HEX, GENESIS_HASH),
    (1, "010000006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000982051fd1e4ba744bbbe"
        "680e1fee14677ba1a3c3540bf7b1cdb606e857233e0e61bc6649ffff001d01e36299",
     "00000000839a8e6886ab5951d76f411475428afc90947ee320161bbf18eb6048"),
    (100000, "0100000050120119172a610421a6c3011dd330d9df07b63616c2cc1f1cd00200000000006657a9252aacd5"
             "c0b2940996ecff952228c3067cc38d4885efb5a4ac4247e9f337221b4d4c86041b0f2b5710",
     "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506"),
    (125552, "0100000081cd02ab7e569e8bcd9317e2fe99f2de44d49ab2b8851ba4a308000000000000e320b6c2fffc8d"
             "750423db8b1eb942ae710e951ed797f7affc8892b0f1fc122bc7f5d74df2b9441a42a14695",
     "00000000000000001e8d6829a8a21adc5d38d0a473b144b6765798e61f98bd1d"),
]

# Block 100000's transaction ids and merkle root.
BLOCK_100000_TXIDS = [
    "8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87",
    "fff2525b8931402dd09222c50775608f75787bd2b87e56995a7bdd30f79702c4",
    "6359f0868171b1d194cbee1af2f16ea598ae8fad666d9b012c8ed2b79a236ec4",
    "e9a66845e05d5abc0ad04ec80f774a7e585c6e8db975962d069a522137b80c1d",
]
BLOCK_100000_MERKLE = "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766"

# Mainnet retarget boundaries, as used by Bitcoin Core's src/test/pow_tests.cpp:
# (first block time of the window, last block height, last block time, last bits, expected next bits)
RETARGETS = [
    (1261130161, 32255, 1262152739, 0x1D00FFFF, 0x1D00D86A),  # unclamped
    (1231006505, 2015, 1233061996, 0x1D00FFFF, 0x1D00FFFF),  # capped at the pow limit
    (1279008237, 68543, 1279297671, 0x1C05A3F4, 0x1C0168FD),  # clamped: 4x harder at most
    (1263163443, 46367, 1269211443, 0x1C387F6F, 0x1D00E1FD),  # clamped: 4x easier at most
]


# Litecoin mainnet headers with their published block ids: genesis (Litecoin's chainparams:
# time 1317972665, nonce 2084524493, bits 0x1e0ffff0, merkle root 97ddfbba...), block 1 and block
# 400,000 (2013, version 2, bits 0x1b4fbbc7: difficulty 822, a target that needs the full
# comparison), as a Litecoin library's block tests record them (bitcore-lib-ltc test/block).
LITECOIN = {
    "genesis": (struct.pack("<I", 1) + bytes(32)
                + bytes.fromhex("97ddfbbae6be97fd6cdf3e7ca13232a3afff2353e29badfab7f73011edd4ced9")[::-1]
                + struct.pack("<III", 1317972665, 0x1E0FFFF0, 2084524493),
                "12a765e31ffd4059bada1e25190f6e98c99d9714d334efa41a195a7e7e04bfe2"),
    "block 1": (bytes.fromhex(
        "01000000e2bf047e7e5a191aa4ef34d314979dc9986e0f19251edaba5940fd1fe365a712f6509b1757baa71bc746e17c"
        "b4d0ed22e8935f71e2d0724336789021a40639fabfed8f4ef0ff0f1e7f270400"),
        "80ca095ed10b02e53d769eb6eaf92cd04e9e0759e5be4a8477b42911ba49c78f"),
    "block 400,000": (bytes.fromhex(
        "020000009112eb62792ea01f5ae9b4179b5c94713709e98acc0918255f8499dc85a57236150a28f1e83ad2da82bf9aad"
        "3f0a6a06c6e6e4e8ac84a93ea5365a21363de0381744fd51c7bb4f1b007b177a"),
        "1950dad9ef32cf5635202ccd9edd78b58a4cb3a945aa0a88e1960f9f9b7616d8"),
}
