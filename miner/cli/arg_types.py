"""argparse types for the command line's numbers and names: each refuses what it cannot take
with one line in the user's words (the parser turns it into `miner: error: ...`, exit 2)."""

from __future__ import annotations

import argparse


def positive_int(limit: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not 1 <= value <= limit:
            raise argparse.ArgumentTypeError(f"must be between 1 and {limit:,}, got {value}")
        return value
    return parse


def chain_name(text: str) -> str:
    """An empty --chain (or MINER_CHAIN) would become '.', the current folder."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty: give a chain file path")
    return text


def float_in(accept, not_a_number: str, out_of_range: str):
    """An argparse type for a float that `accept` takes, with the two messages for the rest."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{not_a_number}: {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{out_of_range}, got {text}")
        return value
    return parse


positive_float = float_in(lambda v: 0 < v < float("inf"), "not a number", "must be a positive number")
positive_seconds = float_in(lambda v: 0.1 <= v <= 86_400, "not a number of seconds",
                              "must be between 0.1 and 86400 seconds")
stall_factor = float_in(lambda v: 0 <= v <= 1_000_000, "not a number", "must be between 0 and 1,000,000")


def retries(text: str) -> int:
    """-1 (never give up, cpuminer's default) or a count of retries."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not -1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be -1 (never give up) or between 0 and 1,000,000, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value
