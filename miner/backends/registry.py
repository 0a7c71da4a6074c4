"""Backend names on the command line -> backend objects.

Spec grammar: comma-separated items, each `auto`, `ref`, `cpu`, `cuda` (every GPU) or `cuda:N`.
`auto` picks the best present: every CUDA device if CuPy sees one, else the numba CPU backend,
else the hashlib reference.
"""

from __future__ import annotations

from miner.backends.base import Backend
from miner.errors import InvalidInput


def cuda_device_count() -> tuple[int, str]:
    """(number of CUDA devices CuPy sees, reason when zero)."""
    try:
        from miner.backends import cuda
    except ImportError as exc:  # pragma: no cover - depends on the machine
        return 0, f"CUDA backend unavailable: {exc}"
    return cuda.device_count()


def cpu_available() -> tuple[bool, str]:
    try:
        from miner.backends import cpu  # noqa: F401
    except ImportError as exc:
        return False, f"numba CPU backend unavailable: {exc}"
    return True, ""


def _make_cpu(threads: int | None, kernel: str) -> Backend:
    ok, why = cpu_available()
    if not ok:
        raise InvalidInput(f"backend 'cpu' is not available here: {why}")
    from miner.backends.cpu import CpuBackend
    return CpuBackend(threads=threads, kernel=kernel)


def _make_cuda(index: int | None) -> list[Backend]:
    count, why = cuda_device_count()
    if count == 0:
        raise InvalidInput(f"backend 'cuda' is not available here: {why}")
    from miner.backends.cuda import CudaBackend
    if index is None:
        return [CudaBackend(i) for i in range(count)]
    if not 0 <= index < count:
        raise InvalidInput(f"no CUDA device {index}: this machine has {count} "
                         f"(cuda:0..cuda:{count - 1})")
    return [CudaBackend(index)]


def make_backends(spec: str, threads: int | None = None, cpu_kernel: str = "auto",
                  pow: str = "sha256d", lookup_gap: int = 1) -> list[Backend]:
    """Build the backends named by `spec`; unknown names and missing devices are usage errors.
    `threads` and `cpu_kernel` (auto, simd, sha) configure the CPU backend. `pow`: the proof of
    work to mine; `auto` takes the best backend that computes it, and naming one that does not
    is a usage error."""
    if pow != "sha256d":
        return _make_for(spec, pow, threads, lookup_gap)
    items = [s.strip().lower() for s in spec.split(",") if s.strip()]
    if not items:
        raise InvalidInput("no backend named (use auto, ref, cpu, cuda or cuda:N)")
    out: list[Backend] = []
    for item in items:
        if item == "auto":
            if cuda_device_count()[0] > 0:
                out += _make_cuda(None)
            elif cpu_available()[0]:
                out.append(_make_cpu(threads, cpu_kernel))
            else:
                from miner.backends.ref import ReferenceBackend
                out.append(ReferenceBackend())
        elif item == "ref":
            from miner.backends.ref import ReferenceBackend
            out.append(ReferenceBackend())
        elif item == "cpu":
            out.append(_make_cpu(threads, cpu_kernel))
        elif item == "cuda":
            out += _make_cuda(None)
        elif item.startswith("cuda:"):
            index = item[5:]
            if not index.isdigit():
                raise InvalidInput(f"bad device in backend {item!r}: expected cuda:N with N >= 0")
            out += _make_cuda(int(index))
        else:
            raise InvalidInput(f"unknown backend {item!r} (use auto, ref, cpu, cuda or cuda:N)")
    return _unique(out)


def _make_for(spec: str, pow: str, threads: int | None, lookup_gap: int = 1) -> list[Backend]:
    """Backends for scrypt: the CUDA scrypt kernel on every GPU, the numba scrypt kernel, or the
    hashlib reference (`auto`: the GPUs where CuPy sees one, else numba, else hashlib)."""
    from miner.backends.ref import ReferenceBackend
    out: list[Backend] = []
    for item in (s.strip().lower() for s in spec.split(",") if s.strip()):
        if item == "auto" and cuda_device_count()[0] > 0:
            item = "cuda"
        if item == "cuda" or item.startswith("cuda:"):
            out += _scrypt_cuda(item, lookup_gap)
        elif item == "ref" or (item == "auto" and not cpu_available()[0]):
            out.append(ReferenceBackend())
        elif item in ("auto", "cpu"):
            out.append(_scrypt_cpu(threads))
        else:
            raise InvalidInput(f"unknown backend {item!r} (use auto, ref, cpu, cuda or cuda:N)")
    if not out:
        raise InvalidInput("no backend named (use auto, ref, cpu, cuda or cuda:N)")
    return _unique(out)


def _scrypt_cuda(item: str, lookup_gap: int) -> list[Backend]:
    """`cuda`: the scrypt kernel on every GPU; `cuda:N`: on GPU N."""
    count, why = cuda_device_count()
    if count == 0:
        raise InvalidInput(f"backend 'cuda' is not available here: {why}")
    from miner.backends.cuda_scrypt import CudaScryptBackend
    index = item[5:] if item.startswith("cuda:") else None
    if index is not None and not (index.isdigit() and int(index) < count):
        raise InvalidInput(f"no CUDA device {index!r}: this machine has {count}")
    return [CudaScryptBackend(i, lookup_gap=lookup_gap) for i in ([int(index)] if index is not None else range(count))]


def _scrypt_cpu(threads: int | None) -> Backend:
    ok, why = cpu_available()
    if not ok:
        raise InvalidInput(f"backend 'cpu' is not available here: {why}")
    from miner.backends.cpu_scrypt import CpuScryptBackend
    return CpuScryptBackend(threads=threads)


def _unique(out: list[Backend]) -> list[Backend]:
    names = [b.name for b in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInput(f"backend named twice: {', '.join(dupes)}")
    return out
