"""The package's layers, read from the source: every module's imports (ast), checked against the
order in docs/design.md, and no import cycle anywhere.

    errors, stopping < primitives < kernels < consensus < chain < backends < mining < node, ui < localnet
    < bench < cli

A module may import its own package and any lower layer, never a higher one nor a sibling of the
same rank; `kernels` (the compute kernels, installed as miner.kernels) may import only
`primitives` and `errors`. Imports under `if TYPE_CHECKING:` count like any other: an annotation
that names a module is a dependency on it, and a cycle through one is still a cycle (a module
that needs only part of another's interface says so with a Protocol of its own).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
from support.source_tree import SOURCES, modules

GENERATED = {"miner.kernels.cpu_sha256d"}  # written by kernels/gen_cpu_kernel.py
RANK = {
    "miner": 0, "miner.errors": 0, "miner.stopping": 0,
    "miner.primitives": 1,
    "miner.kernels": 2,
    "miner.consensus": 3,
    "miner.chain": 4,
    "miner.backends": 5,
    "miner.mining": 6,
    "miner.node": 7, "miner.ui": 7,
    "miner.localnet": 8,
    "miner.bench": 9,
    "miner.cli": 10, "miner.__main__": 11,
}
ONLY = {"miner.kernels": {"miner", "miner.errors", "miner.primitives", "miner.kernels"}}
MAX_LINES = 400


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (the module itself for `from pkg import module`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.split(".")[0] == "miner")
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")
                    up = up[:len(up) - (child.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                if base.split(".")[0] != "miner":
                    continue
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in known else base)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in found if m != name}


@functools.cache
def _read_graph() -> dict[str, frozenset[str]]:
    mods = modules()
    known = set(mods)
    return {name: frozenset(imports_of(name, path, known)) for name, path in mods.items()}


def graph() -> dict[str, set[str]]:
    """Every module's imports, read once a run (the sources do not change under the tests); a copy
    each call, so a test may plant an import in it."""
    return {name: set(targets) for name, targets in _read_graph().items()}


def layer(module: str) -> str:
    """The layer a module belongs to: the longest entry of RANK it falls under."""
    best = "miner"
    for key in RANK:
        if (module == key or module.startswith(key + ".")) and len(key) > len(best):
            best = key
    return best


def violations(g: dict[str, set[str]]) -> list[str]:
    """Every import that points up, sideways to a sibling layer, or outside what a layer may
    import; then every cycle."""
    out = []
    for mod, targets in sorted(g.items()):
        src = layer(mod)
        for target in sorted(targets):
            dst = layer(target)
            if dst == src:
                continue
            if src in ONLY and dst not in ONLY[src]:
                out.append(f"{mod} -> {target}: {src} imports only {sorted(ONLY[src])}")
            elif RANK[dst] >= RANK[src]:
                out.append(f"{mod} -> {target}: {src} (rank {RANK[src]}) imports {dst} (rank {RANK[dst]})")
    out += [f"cycle: {' -> '.join(c)}" for c in cycles(g)]
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in g:
                continue
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component) + [sorted(component)[0]])

    for v in sorted(g):
        if v not in index:
            strongconnect(v)
    return found


def test_every_module_has_a_layer():
    assert all(layer(m) in RANK for m in modules())
    assert {layer(m) for m in modules()} >= {"miner.primitives", "miner.consensus", "miner.chain",
                                              "miner.mining", "miner.backends", "miner.node",
                                              "miner.cli", "miner.ui", "miner.kernels", "miner.bench",
                                              "miner.localnet"}


def test_imports_point_down_through_the_layers_without_a_cycle():
    assert violations(graph()) == []


@pytest.mark.parametrize("source,target,why", [
    ("miner.primitives.header", "miner.chain.chain", "rank 1) imports miner.chain"),
    ("miner.consensus.checks", "miner.mining.work", "rank 3) imports miner.mining"),
    ("miner.kernels.cuda_job", "miner.backends.work", "imports only"),
    ("miner.kernels.cpu_select", "miner.consensus.pow", "imports only"),
    ("miner.node.service", "miner.ui.reporting", "rank 7) imports miner.ui (rank 7)"),
    ("miner.node.run", "miner.localnet", "rank 7) imports miner.localnet (rank 8)"),
    ("miner.localnet", "miner.bench.soak", "rank 8) imports miner.bench (rank 9)"),
])
def test_a_planted_upward_import_is_caught(source, target, why):
    g = graph()
    g[source] = g[source] | {target}
    found = violations(g)
    assert any(v.startswith(f"{source} -> {target}") and why in v for v in found), found


def test_a_planted_cycle_is_caught():
    g = graph()
    g["miner.chain.index"] = g["miner.chain.index"] | {"miner.chain.diagnose"}  # diagnose imports index
    assert any(v.startswith("cycle:") and "miner.chain.index" in v and "miner.chain.diagnose" in v
               for v in violations(g))


def test_relative_lazy_and_type_only_imports_are_read(tmp_path):
    """The reader sees imports inside functions, relative ones, and those under TYPE_CHECKING
    (a type-only import is a dependency too: chain.verify once reached chain.chain that way, and
    the Stratum session its server, each a cycle the test did not see)."""
    known = set(modules())
    verify = imports_of("miner.chain.verify", SOURCES["miner"] / "chain" / "verify.py", known)
    assert "miner.chain.chain" not in verify  # verify states what it reads as a Protocol of its own
    assert "miner.consensus.checks" in verify
    planted = tmp_path / "verify.py"
    planted.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                       "    from miner.chain.chain import Chain\n")
    assert imports_of("miner.chain.verify", planted, known) == {"miner.chain.chain"}
    g = graph()
    g["miner.chain.verify"] = g["miner.chain.verify"] | {"miner.chain.chain"}
    assert any(v.startswith("cycle:") and "miner.chain.verify" in v for v in violations(g))
    generated = imports_of("miner.kernels.cpu_sha256d", SOURCES["miner.kernels"] / "cpu_sha256d.py", known)
    assert "miner.kernels.cpu_width" in generated  # `from .cpu_width import full_width`
    select = imports_of("miner.kernels.cpu_select", SOURCES["miner.kernels"] / "cpu_select.py", known)
    assert "miner.kernels.cpu" in select  # `from miner.kernels import cpu` inside a function


def test_no_module_is_over_the_size_limit():
    """Small modules with one job each; the generated numba kernel is the one exception."""
    long = {name: n for name, path in modules().items()
            if name not in GENERATED and (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
