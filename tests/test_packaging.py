"""The installable package: one top-level import name, with the kernels' sources inside it.

`kernels` and `bench` are names other distributions on the package index install too, so the
wheel must put nothing at the top level but `miner` (the repository's kernels/ and bench/ folders
install as `miner.kernels` and `miner.bench`).
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy, so setuptools' build/ folder never lands in the checkout; no build
    # isolation, since the test extra brings a setuptools that builds wheels without a download.
    src = out / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".benchmarks", "*.sqlite*"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = out.glob("pow_miner-*.whl")
    return path


def test_wheel_installs_only_the_miner_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert top == {"miner"}
    for needed in ("miner/kernels/sha256d.cu", "miner/kernels/cuda_host_shim.h",
                   "miner/kernels/cuda_host_launch.cpp", "miner/kernels/cpu_sha256d.py",
                   "miner/bench/engine.py", "miner/bench/cli_commands.py", "miner/backends/cuda.py"):
        assert needed in names, needed


def test_the_wheel_holds_no_tests(wheel):
    """Tests stay in the repository: a test module or conftest inside the package would be
    installed with it and collected by a user's pytest (bench/test_throughput.py once was)."""
    names = [n.rsplit("/", 1)[-1] for n in zipfile.ZipFile(wheel).namelist()]
    found = [n for n in names if n == "conftest.py" or (n.endswith(".py") and (n.startswith("test_")
                                                                               or n.endswith("_test.py")))]
    assert not found, found


def test_the_wheel_holds_every_module_of_the_checkout(wheel):
    """setuptools' package list is written out by hand (kernels/ and bench/ are renamed into
    miner): a new subpackage missing from it would be missing from every non-editable install."""
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = [("miner/" + str(p.relative_to(ROOT / "miner")), p) for p in (ROOT / "miner").rglob("*.py")]
    sources += [(f"miner/{folder}/" + str(p.relative_to(ROOT / folder)), p)
                for folder in ("kernels", "bench") for p in (ROOT / folder).rglob("*.py")]
    missing = [name for name, _ in sources if "__pycache__" not in name and name not in names]
    assert not missing, missing


def test_installed_wheel_imports_from_outside_the_checkout(wheel, tmp_path):
    """Unpacked on its own (no checkout on the path), the package finds its kernel sources and
    its bench engine under `miner`, and puts no `kernels` or `bench` module on the path."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    code = ("import importlib.util, sys\n"
            f"sys.path = [{str(target)!r}] + [p for p in sys.path if p not in ('', {str(ROOT)!r})]\n"
            "import miner.kernels.cuda_job as job, miner.bench.cli_commands, miner.cli\n"
            f"assert job.SOURCE.is_file() and job.SOURCE.is_relative_to({str(target)!r}), job.SOURCE\n"
            "assert job.HOST_LAUNCH.is_file() and job.SHIM.is_file()\n"
            f"for name in ('kernels', 'bench'):\n"
            f"    spec = importlib.util.find_spec(name)\n"
            f"    assert spec is None or not spec.origin.startswith({str(target)!r}), spec\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_ci_runs_exactly_the_readmes_test_command():
    import re
    root = Path(__file__).resolve().parent.parent
    blocks = re.findall(r"```sh\n(.*?)\n```", (root / "README.md").read_text(), re.S)
    test_command = next(b for b in blocks if "pytest" in b)
    ci_lines = [line for line in (root / ".ci" / "run").read_text().splitlines()
                if line and not line.startswith(("#", "set ", "cd "))]
    assert ci_lines == [test_command]


def test_tests_keep_their_caches_to_themselves():
    """What tests choose and measure stays out of the user's cache folder (conftest.py)."""
    import os

    from miner.kernels.tuning_cache import cache_dir
    home = Path.home() / ".cache" / "pow-miner"
    assert cache_dir() != home and "miner-test-cache-" in str(cache_dir())
    assert os.environ["NUMBA_CACHE_DIR"].endswith(os.path.join(".pytest_cache", "numba"))


def test_cache_folder_follows_xdg_cache_home(tmp_path):
    """MINER_CACHE first, then $XDG_CACHE_HOME/pow-miner, then ~/.cache/pow-miner, in a real process.

    The CUDA tuning file is named at import, so a child process shows what a user's run would see.
    """
    import os
    import subprocess
    import sys

    probe = ("from miner.kernels.tuning_cache import cache_dir; from miner.kernels import cpu_select;"
             "from miner.backends import cuda; print(cache_dir()); print(cpu_select._choice_file());"
             "print(cuda.TUNING_FILE)")

    def folders(**env):
        base = {k: v for k, v in os.environ.items() if k not in ("MINER_CACHE", "XDG_CACHE_HOME")}
        base["HOME"] = str(tmp_path / "home")
        out = subprocess.run([sys.executable, "-c", probe], env={**base, **env}, capture_output=True,
                             text=True, check=True).stdout.split()
        return [Path(line) for line in out]

    xdg = tmp_path / "xdg"
    assert folders(XDG_CACHE_HOME=str(xdg)) == [xdg / "pow-miner", xdg / "pow-miner" / "cpu-kernel.json",
                                                 xdg / "pow-miner" / "cuda-launch.json"]
    home_cache = tmp_path / "home" / ".cache" / "pow-miner"
    assert folders()[0] == home_cache
    assert folders(XDG_CACHE_HOME="relative/cache")[0] == home_cache  # relative: invalid, ignored
    assert folders(XDG_CACHE_HOME="")[0] == home_cache
    assert folders(XDG_CACHE_HOME=str(xdg), MINER_CACHE=str(tmp_path / "m"))[0] == tmp_path / "m"
