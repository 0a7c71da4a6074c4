"""The docs site builds as a reader gets it, and its reference pages say what the code does.

`mkdocs build --strict` runs here in every test run, so a broken link, a missing anchor or a page
left out of the navigation fails the suite instead of a reader. The reference pages are written
by a build hook from the argparse parser and the RPC registry (docs/hooks/reference.py); these
tests walk the parser and the registry themselves and look for every option and every method in
the built HTML, so a renderer that drops one is caught. The README stays a two-minute page.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import mkdocs  # noqa: F401  (in the test extra: a missing docs toolchain fails here, never skips)
import pytest

from miner.cli.main import build_parser
from miner.node.rpc.methods import METHODS

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 300


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """One strict build into a temporary folder, with every proxy pointing at a closed port on
    127.0.0.1, so a theme or plugin that tried to download something would fail the build."""
    out = tmp_path_factory.mktemp("site")
    closed = "http://127.0.0.1:9"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "NO_PROXY": "", "no_proxy": "",
           **{k: closed for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")}}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert not re.search(r"^(WARNING|ERROR)\b", log, re.M), log[-4000:]
    print(f"mkdocs build --strict: {time.monotonic() - started:.1f} s")
    return out


def test_the_docs_build_strictly_and_fetch_no_fonts(site):
    home = (site / "index.html").read_text()
    assert "fonts.googleapis" not in home and "fonts.gstatic" not in home
    for page in ("reference/cli", "reference/rpc", "guide/node", "design", "tests", "benchmarks/soak"):
        assert (site / page / "index.html").is_file(), page


# --------------------------------------------------------------------------- reading the built pages

class _Sections(HTMLParser):
    """The article's h2 sections: heading text -> the text of every <code> inside the section."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, set[str]] = {}
        self._heading: list[str] | None = None
        self._current: str | None = None
        self._code: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self._heading = []
        elif tag == "code" and self._current is not None and self._heading is None:
            self._code = []

    def handle_endtag(self, tag):
        if tag == "h2" and self._heading is not None:
            self._current = "".join(self._heading).replace("\u00b6", "").strip()
            self.sections[self._current] = set()
            self._heading = None
        elif tag == "code" and self._code is not None:
            self.sections[self._current].add("".join(self._code).strip())
            self._code = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading.append(data)
        elif self._code is not None:
            self._code.append(data)


def sections(html: str) -> dict[str, set[str]]:
    article = html[html.index("<article"):html.rindex("</article>")]
    reader = _Sections()
    reader.feed(article)
    return reader.sections


def cli_expected(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Every command's prog and the arguments its --help lists, walked here independently of the
    hook: option strings, and positionals by the name usage gives them."""
    found: dict[str, list[str]] = {}

    def walk(p: argparse.ArgumentParser) -> None:
        found[p.prog] = []
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            elif action.help != argparse.SUPPRESS:
                found[p.prog] += list(action.option_strings) or [action.metavar or action.dest]
    walk(parser)
    return found


def missing_from_cli(html: str, parser: argparse.ArgumentParser) -> list[str]:
    listed = sections(html)
    return [f"{prog}: {name}" for prog, names in cli_expected(parser).items()
            for name in (names if prog in listed else ["(no section)"])
            if prog not in listed or name not in listed[prog]]


def missing_from_rpc(html: str, methods: dict) -> list[str]:
    listed = sections(html)
    out = []
    for name, method in methods.items():
        if name not in listed:
            out.append(f"{name}: (no section)")
            continue
        out += [f"{name}: {p.name}" for p in method.params if p.name not in listed[name]]
        if method.usage not in listed[name]:
            out.append(f"{name}: usage {method.usage!r}")
    return out


def test_the_cli_reference_lists_every_option_of_every_command(site):
    html = (site / "reference" / "cli" / "index.html").read_text()
    expected = cli_expected(build_parser())
    assert {"miner", "miner mine", "miner node", "miner net up", "miner chain plot"} <= set(expected)
    assert missing_from_cli(html, build_parser()) == []


def test_the_rpc_reference_lists_every_registered_method_and_parameter(site):
    html = (site / "reference" / "rpc" / "index.html").read_text()
    assert {"getblocktemplate", "submitblock", "getstratuminfo", "addnode"} <= set(METHODS)
    assert missing_from_rpc(html, METHODS) == []


def test_a_reference_missing_an_option_or_a_method_is_named(site):
    """The checks can fail: the built pages with one option and one method taken out."""
    cli = (site / "reference" / "cli" / "index.html").read_text()
    node = cli.index('id="miner-node"')
    planted = cli[:node] + cli[node:].replace("<code>--rpc-rate</code>", "<code>--rpc-rat</code>", 1)
    assert missing_from_cli(planted, build_parser()) == ["miner node: --rpc-rate"]

    rpc = (site / "reference" / "rpc" / "index.html").read_text()
    planted = re.sub(r'(<h2 id="submitblock">)submitblock', r"\1submit", rpc)
    assert missing_from_rpc(planted, METHODS) == ["submitblock: (no section)"]


def test_the_reference_pages_are_generated_not_committed():
    """A committed copy would go stale the day an option is added (the hook refuses to build over one)."""
    committed = [p for p in ("docs/reference/cli.md", "docs/reference/rpc.md") if (ROOT / p).exists()]
    assert committed == []


# --------------------------------------------------------------------------- the README

def test_the_readme_is_a_short_page_whose_links_lead_somewhere():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    links = re.findall(r"\]\((?!https?:)([^)#]+)", readme)
    assert any(link.startswith("docs/") for link in links)
    assert [link for link in links if not (ROOT / link).exists()] == []
