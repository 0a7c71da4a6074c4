"""Full vector width for the hot loops, whatever the host CPU's tuning prefers.

LLVM's loop vectorizer picks its lane count from the subtarget's *preferred* vector width, not
its widest one. For Intel's AVX-512 server and client cores (Skylake-X through Sapphire Rapids,
reported as `icelake-server`, `rocketlake`, ...) the tuning flag `prefer-256-bit` is set, because
512-bit instructions there lower the clock of code that runs a little AVX-512 among much scalar
work. A SHA-256d loop is nothing but vector work, so 8 lanes of ymm leave a third of the speed
unused: measured 26.3 against 34.7 MH/s on one Intel core.

`full_width()`, called at the top of a jitted function, marks that one function
`"prefer-vector-width"="512"`, which is what clang's `-mprefer-vector-width=512` writes. It is a
function attribute, so other numba code in the process keeps the host's defaults, and it asks
for the widest registers the target has: 16 lanes with AVX-512F, 8 with AVX2 (LLVM never picks
a width the CPU lacks). The function is also marked `noinline`: LLVM's inliner does not carry
this attribute into a caller, so an inlined copy would be vectorized at the caller's width.

numba's on-disk cache is keyed by the CPU name and feature string it compiled for, so a 16-lane
build is never loaded on a CPU without AVX-512F.
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic


class _StringAttribute(str):
    """A `"key"="value"` function attribute. llvmlite's attribute set only accepts the enum
    attributes it lists, and writes its members as they are, so this one is added past that check."""


PREFER_WIDEST = _StringAttribute('"prefer-vector-width"="512"')


@intrinsic
def full_width(typingctx):
    """Mark the calling jitted function to be vectorized at the CPU's widest width (see above)."""

    def codegen(context, builder, signature, args):
        fn = builder.function
        set.add(fn.attributes, PREFER_WIDEST)
        fn.attributes.add("noinline")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def kept_apart(typingctx):
    """Mark the calling jitted function `noinline` and nothing else: a per-step piece of a kernel
    stays a function of its own, so `miner.bench.cpu_model` can read and count its assembly
    (one call a step costs nothing beside the hundreds of instructions in it)."""

    def codegen(context, builder, signature, args):
        builder.function.attributes.add("noinline")
        return context.get_dummy_value()

    return types.void(), codegen
