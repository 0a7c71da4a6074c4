"""The repository's hygiene: ruff's rules (pyproject.toml, [tool.ruff]) hold over the product, the docs hook and
the tests, and no archive or wheel is tracked (one 10 MB wheel once made up nine tenths of a clone)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARCHIVES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".7z", ".egg", ".xz", ".bz2")


def _ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_ruff_is_clean_over_product_and_tests():
    out = _ruff("check", "--no-cache", "miner", "kernels", "bench", "tests", "docs")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_ruff_finds_a_planted_mistake(tmp_path):
    """The check can fail: an unused import and a late-bound loop variable under the same rules."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / "planted.py").write_text("import os\n\nfns = [lambda: i for i in range(3)]\n")
    out = _ruff("check", "--no-cache", "--output-format", "concise", "planted.py", cwd=tmp_path)
    assert out.returncode == 1
    assert "F401" in out.stdout and "B023" in out.stdout, out.stdout


def test_no_archive_is_tracked():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    archives = [f for f in files.splitlines() if f.lower().endswith(ARCHIVES)]
    assert archives == []
