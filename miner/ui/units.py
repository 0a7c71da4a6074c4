"""Human-readable hash rates and speed ratios."""

import math


def rate_unit(hps: float) -> tuple[str, float]:
    """The unit a rate is written in, by its magnitude, and what it divides by."""
    for unit, scale in (("GH/s", 1e9), ("MH/s", 1e6), ("kH/s", 1e3)):
        if hps >= scale:
            return unit, scale
    return "H/s", 1.0


def format_rate(hps: float) -> str:
    """`61.68 MH/s` style, picking the unit by magnitude."""
    unit, scale = rate_unit(hps)
    return f"{hps / scale:.2f} {unit}" if scale > 1 else f"{hps:.0f} H/s"


def format_ratio(x: float) -> str:
    """A speed ratio with the digits that say something: 68x, 4.3x, 1.0x, 0.52x, 0.015x.

    One fixed decimal made hashlib's 0.015 of the CPU kernel "0.0x"; below 1 two significant
    digits are kept, above 10 none after the point."""
    if not x > 0 or x == float("inf"):
        return f"{x:g}x"
    if x >= 10:
        return f"{x:,.0f}x"
    if x >= 1:
        return f"{x:.1f}x"
    return f"{x:.{1 - math.floor(math.log10(x))}f}x"
