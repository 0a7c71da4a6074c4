"""Human-readable hash rates."""


def format_rate(hps: float) -> str:
    """`61.68 MH/s` style, picking the unit by magnitude."""
    for unit, scale in (("GH/s", 1e9), ("MH/s", 1e6), ("kH/s", 1e3)):
        if hps >= scale:
            return f"{hps / scale:.2f} {unit}"
    return f"{hps:.0f} H/s"
