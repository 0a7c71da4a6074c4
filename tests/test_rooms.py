"""Each room owns its state (issue 34 items 2 and 3), read from the source with ast:

- SQL lives in the chain store alone: no SQL statement in a string, and no `execute`,
  `executemany`, `executescript` or `sqlite3.connect` call, in any product module but
  `miner/chain/store.py`;
- the chain's block tree is the chain room's: no module outside `miner/chain/` reads a `.tree`
  attribute or imports `BlockTree`/`NodeIndex`; the node asks `Chain`'s query methods;
- the Stratum session reads nothing through `server.service`: it asks its pool.

Each check is shown to fail on a planted violation.
"""

from __future__ import annotations

import ast
import re

import pytest
from support.source_tree import modules

STORE = "miner.chain.store"
SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|BEGIN|COMMIT|ROLLBACK|REPLACE)\b")
EXECUTE = {"execute", "executemany", "executescript"}
TREE_TYPES = {"BlockTree", "NodeIndex"}


def sources() -> dict[str, str]:
    return {name: path.read_text() for name, path in modules().items()}


def sql_outside_store(src: dict[str, str]) -> list[str]:
    out = []
    for name, text in sorted(src.items()):
        if name == STORE:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
                out.append(f"{name}:{node.lineno}: SQL statement {node.value[:30]!r}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                f = node.func
                if f.attr in EXECUTE or (f.attr == "connect" and isinstance(f.value, ast.Name)
                                         and f.value.id == "sqlite3"):
                    out.append(f"{name}:{node.lineno}: {f.attr}() call")
    return out


def tree_reach(src: dict[str, str]) -> list[str]:
    out = []
    for name, text in sorted(src.items()):
        if name.startswith("miner.chain"):
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and node.attr == "tree":
                out.append(f"{name}:{node.lineno}: reads .tree")
            elif isinstance(node, ast.ImportFrom) and any(a.name in TREE_TYPES for a in node.names):
                out.append(f"{name}:{node.lineno}: imports the block tree's types")
    return out


def session_reach(src: dict[str, str]) -> list[str]:
    text = src["miner.node.stratum.session"]
    return [f"session:{n.lineno}: reads .service" for n in ast.walk(ast.parse(text))
            if isinstance(n, ast.Attribute) and n.attr == "service"]


def test_sql_appears_only_in_the_chain_store():
    src = sources()
    assert STORE in src
    assert sql_outside_store(src) == []


@pytest.mark.parametrize("planted", [
    'def f(chain):\n    return chain.store.conn.execute("SELECT 1")\n',
    'ROWS = "SELECT hash FROM blocks"\n',
    'import sqlite3\nCONN = sqlite3.connect(":memory:")\n',
])
def test_planted_sql_outside_the_store_is_caught(planted):
    src = sources()
    src["miner.node.rpc.blockchain"] += "\n" + planted
    found = sql_outside_store(src)
    assert found and all(f.startswith("miner.node.rpc.blockchain:") for f in found), found


def test_no_module_outside_the_chain_touches_the_block_tree():
    assert tree_reach(sources()) == []


@pytest.mark.parametrize("planted", [
    "def f(chain):\n    return chain.tree.active[0]\n",
    "from miner.chain.index import BlockTree\n",
])
def test_planted_reach_into_the_tree_is_caught(planted):
    src = sources()
    src["miner.node.p2p.chain_queries"] += "\n" + planted
    found = tree_reach(src)
    assert len(found) == 1 and found[0].startswith("miner.node.p2p.chain_queries:"), found


def test_the_stratum_session_asks_its_pool_not_the_service():
    src = sources()
    assert session_reach(src) == []
    src["miner.node.stratum.session"] += "\ndef f(self):\n    return self.server.service.tip.hash\n"
    assert len(session_reach(src)) == 1
