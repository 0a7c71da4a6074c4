"""Human-readable hash rates."""


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
