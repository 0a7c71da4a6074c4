"""The `miner` command as a user runs it: real subprocesses, real files, real signals."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from miner.bench.chain_verify import build_easy_chain
from support.cliproc import assert_one_line_error, run
from support.vectors import GENESIS_HASH, GENESIS_HEX, REAL_HEADERS

from miner.chain.chain import Chain
from miner.primitives.header import BlockHeader


def test_header_json_for_genesis():
    proc = run("header", GENESIS_HEX, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["hash"] == GENESIS_HASH and data["meets_target"] is True
    assert data["bits"] == "1d00ffff" and data["difficulty"] == 1.0


def test_header_json_reports_missed_target():
    hexstr = REAL_HEADERS[2][1]
    tampered = hexstr[:-8] + "00000000"  # nonce zeroed
    data = json.loads(run("header", tampered, "--json").stdout)
    assert data["meets_target"] is False


def test_header_text_output():
    proc = run("header", GENESIS_HEX)
    assert proc.returncode == 0 and GENESIS_HASH in proc.stdout and "meets_target" in proc.stdout


@pytest.mark.parametrize("args,fragment", [
    (["header", "xyz"], "neither hex digits nor a readable file"),
    (["header", "0"], "not valid hex"),
    (["header", GENESIS_HEX, "--pow-limit", "0"], "zero target"),
    (["header", GENESIS_HEX, "--preset", "nope"], "unknown chain preset"),
    (["header", GENESIS_HEX, "--preset", "regtest", "--pow-limit", "1d00ffff"], "not allowed with"),
    (["header", "00" * 79], "80 bytes"),
    (["mine", "--blocks", "-3"], "--blocks"),
    (["mine", "--blocks", "10000000000"], "--blocks"),
    (["mine", "--blocks", "many"], "--blocks"),
    (["mine", "--backend", "quantum"], "unknown backend"),
    (["mine", "--preset", "nope", "--backend", "ref"], "unknown chain preset"),
    (["mine", "--backend", "ref", "--chain", "/nonexistent-dir/x.sqlite"], "no such directory"),
    (["chain", "show", "-1"], "must not be negative"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors_are_one_line_exit_2(args, fragment):
    assert_one_line_error(run(*args), 2, fragment)


def test_invalid_bits_in_header_is_reported_not_crashed():
    raw = bytearray(bytes.fromhex(GENESIS_HEX))
    raw[72:76] = (0x04923456).to_bytes(4, "little")  # a negative compact target
    data = json.loads(run("header", raw.hex(), "--json").stdout)
    assert data["meets_target"] is False and "negative" in data["pow_error"]


def test_chain_commands_on_foreign_and_damaged_files(tmp_path):
    foreign = tmp_path / "foreign.sqlite"
    foreign.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    before = hashlib.sha256(foreign.read_bytes()).digest()
    for action in ("info", "verify"):
        proc = run("chain", action, "--chain", str(foreign))
        assert_one_line_error(proc, 1, "not a miner chain file")
    assert hashlib.sha256(foreign.read_bytes()).digest() == before
    proc = run("mine", "--blocks", "1", "--backend", "ref", "--chain", str(foreign))
    assert_one_line_error(proc, 1, "not a miner chain file")
    assert hashlib.sha256(foreign.read_bytes()).digest() == before


def test_chain_info_verify_show(tmp_path):
    path = tmp_path / "c.sqlite"
    build_easy_chain(path, 5).close()
    info = json.loads(run("chain", "info", "--chain", str(path), "--json").stdout)
    assert info["height"] == 5 and info["preset"] == "regtest"
    proc = run("chain", "verify", "--chain", str(path))
    assert proc.returncode == 0 and "6 blocks verified" in proc.stdout
    shown = json.loads(run("chain", "show", "3", "--chain", str(path), "--json").stdout)
    with Chain.open(path) as chain:
        assert shown["hash"] == chain.header(3).hash_hex()
    assert_one_line_error(run("chain", "show", "9", "--chain", str(path)), 2, "no block at height 9")


def test_verify_reports_bad_block_exit_1(tmp_path):
    import sqlite3
    path = tmp_path / "c.sqlite"
    build_easy_chain(path, 5).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE blocks SET body = X'0100' WHERE height = 3")
    conn.commit()
    conn.close()
    proc = run("chain", "verify", "--chain", str(path), "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["bad_height"] == 3


def test_a_preset_other_than_the_chains_is_refused_by_mine_and_node(tmp_path):
    """`--preset local-scrypt` on an existing regtest chain was ignored without a word (it mined
    SHA-256d, and a node served the regtest chain): both commands now refuse it in one line that
    names the chain's preset, before the chain is written or a cookie appears. The chain's own
    preset mines as before."""
    from miner.consensus.params import preset
    path = tmp_path / "r.sqlite"
    Chain.create(path, preset("regtest", int(time.time()) - 60)).close()
    mined = run("mine", "--chain", str(path), "--preset", "local-scrypt", "--backend", "ref", "--blocks", "1",
                "--quiet")
    assert_one_line_error(mined, 2, "is a 'regtest' chain")
    served = run("node", "--chain", str(path), "--preset", "local-scrypt", "--rpc-port", "0", "--backend", "ref",
                 timeout=30)  # a node that serves instead is killed by the timeout and the test fails
    assert_one_line_error(served, 2, "is a 'regtest' chain")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.sqlite"]  # no cookie, no lock, no journal
    with Chain.open(path, readonly=True) as chain:
        assert chain.height == 0
    proc = run("mine", "--chain", str(path), "--preset", "regtest", "--backend", "ref", "--blocks", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr  # (no --preset: every other test that mines an existing chain)
    with Chain.open(path, readonly=True) as chain:
        assert chain.height == 1 and chain.params.name == "regtest"


def test_mine_ref_backend_appends_verified_blocks(tmp_path):
    path = tmp_path / "m.sqlite"
    proc = run("mine", "--blocks", "3", "--backend", "ref", "--preset", "regtest", "--chain", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    blocks = [e for e in events if e["event"] == "block"]
    assert [b["height"] for b in blocks] == [1, 2, 3]
    assert events[-1]["event"] == "summary" and events[-1]["blocks"] == 3
    with Chain.open(path) as chain:
        assert chain.verify() == 3
        assert [chain.header(h).hash_hex() for h in (1, 2, 3)] == [b["hash_hex"] for b in blocks]


def test_plot_simulation_and_chain_plot(tmp_path):
    out = tmp_path / "sim.png"
    proc = run("chain", "plot", str(out), "--simulate", "--blocks", "240")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = tmp_path / "c.sqlite"
    build_easy_chain(path, 5).close()
    out2 = tmp_path / "chain.png"
    assert run("chain", "plot", str(out2), "--chain", str(path)).returncode == 0
    assert out2.stat().st_size > 1000


def test_chain_plot_blocks_draws_the_stored_chains_last_n_blocks(tmp_path):
    """--blocks on the stored chain is its last N blocks (it was silently ignored): the title
    says which, the axis starts there; a chain shorter than N is drawn whole."""
    import html
    import re
    path = tmp_path / "c.sqlite"
    build_easy_chain(path, 8).close()

    def svg_text(*args: str) -> str:
        out = tmp_path / "c.svg"
        proc = run("chain", "plot", str(out), "--chain", str(path), *args)
        assert proc.returncode == 0, proc.stderr
        return html.unescape(" ".join(re.findall(r"<text[^>]*>([^<]*)</text>", out.read_text())))

    whole = re.compile(r"c\.sqlite: \S+ rule(?!,)")
    assert whole.search(svg_text())
    last = svg_text("--blocks", "3")
    assert re.search(r"c\.sqlite: \S+ rule, blocks 6 to 8", last), last
    assert whole.search(svg_text("--blocks", "50"))


def test_the_chain_plots_dots_are_visible_and_clear_of_the_legend():
    """Each block's spacing is a dot a reader can see (not 4 pt at 35% opacity) and no legend
    box covers the spacing panel."""
    from miner.ui.plot import chain_figure
    times = [1_700_000_000 + 60 * h + (300 if h == 30 else 0) for h in range(60)]
    fig = chain_figure({"local": (times, [0x207FFFFF] * 60)}, 60, "t", first=100)
    ax1, ax2 = fig.axes
    (dots,) = ax1.collections
    assert dots.get_sizes()[0] >= 12 and dots.get_alpha() >= 0.7
    assert dots.get_offsets()[0][0] == 101  # heights from `first`
    renderer = fig.canvas.get_renderer()
    legend = ax1.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(ax1.get_window_extent(renderer))
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_sigkill_mid_run_leaves_a_valid_chain(tmp_path):
    """Kill `miner mine` with SIGKILL while it appends; every block it reported must be there."""
    path = tmp_path / "k.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "miner", "mine", "--blocks", "100000", "--backend", "ref",
                             "--preset", "regtest", "--chain", str(path), "--json", "--unit-seconds", "0.01"],
                            stdout=subprocess.PIPE, text=True)
    reported = []
    try:
        deadline = time.time() + 60
        while len(reported) < 25 and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            event = json.loads(line)
            if event["event"] == "block":
                reported.append(event)
    finally:  # killed here whatever happened above: the kill is the test, and nothing is left running
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    assert len(reported) >= 25, "the miner did not report blocks quickly enough"
    with Chain.open(path) as chain:
        assert chain.verify() >= reported[-1]["height"]
        for event in reported:
            assert chain.header(event["height"]).hash_hex() == event["hash_hex"]


def test_compare_backends_agree_and_plot(tmp_path):
    out = tmp_path / "cmp.png"
    proc = run("compare", "--count", "65536", "--json", "--plot", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["agree"] is True and [r["backend"] for r in data["rows"]][:2] == ["ref", "cpu"]
    assert data["rows"][0]["total"] == data["rows"][1]["total"] > 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_bench_json_reports_median_of_runs_and_job_switch_latency():
    proc = run("bench", "--backend", "ref", "--runs", "3", "--duration", "0.2", "--switches", "3",
               "--unit-seconds", "0.05", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    (row,) = data["results"]
    assert len(row["runs"]) == 3 and row["min"] <= row["median"] <= row["max"] and row["median"] > 1e4
    assert 0 < row["first_call_seconds"] < 1 and row["predicted"] is None  # no static model for hashlib
    switch = data["job_switch"]
    assert switch["backends"] == ["ref"] and switch["unit_seconds"] == 0.05
    assert len(switch["samples"]) == 3 and all(0 < s < 1.0 for s in switch["samples"])


def test_bench_text_table_and_no_switches():
    proc = run("bench", "--backend", "ref", "--runs", "2", "--duration", "0.1", "--switches", "0")
    assert proc.returncode == 0, proc.stderr
    assert "x hashlib" in proc.stdout and "first call" in proc.stdout
    assert "job switch" not in proc.stdout


@pytest.mark.parametrize("args,fragment", [
    (["bench", "--duration", "0"], "--duration"),
    (["bench", "--backend", "cuda:7"], "cuda"),
    (["bench", "--backend", "cpu", "--threads", "0"], "--threads"),
    (["bench", "--launch", "100x64"], "--launch"),
    (["bench", "--launch", "big"], "--launch"),
    (["bench", "--launch", "256x0"], "--launch"),
    (["bench", "--switches", "-1"], "--switches"),
    (["bench", "--unit-seconds", "0"], "--unit-seconds"),
    (["compare", "--backend", "nope"], "unknown backend"),
    (["mine", "--backend", "cuda:x"], "cuda:N"),
])
def test_bench_and_compare_usage_errors(args, fragment):
    assert_one_line_error(run(*args), 2, fragment)


@pytest.mark.parametrize("command,option,limit", [
    ("bench", "--duration", 600), ("bench", "--unit-seconds", 10), ("compare", "--seconds", 60)])
def test_a_length_out_of_range_is_said_as_the_help_says_it(command, option, limit):
    """0 and anything past the limit are refused in the words the help uses: "above 0 and at
    most N" (a "between 0 and N" message read as if 0 were allowed)."""
    allowed = f"above 0 and at most {limit}"
    assert allowed in " ".join(run(command, "--help").stdout.split())
    for given, said in (("0", "0"), ("-1", "-1"), (str(limit + 1), str(limit + 1))):
        assert_one_line_error(run(command, option, given), 2,
                              f"{option} must be {allowed} seconds, got {said}")


def test_launch_shapes_parse():
    from miner.bench.cli_commands import parse_launch_shapes
    assert parse_launch_shapes("tuned") is None
    assert parse_launch_shapes("256x16, 512x64") == [(256, 16), (512, 64)]
    grid = parse_launch_shapes("all")
    assert len(grid) == len(set(grid)) == 9 and (256, 64) in grid


def test_header_from_stdin_file_and_raw_bytes(tmp_path):
    via_stdin = subprocess.run([sys.executable, "-m", "miner", "header", "-", "--json"], input=GENESIS_HEX + "\n",
                               capture_output=True, text=True, timeout=60)
    assert via_stdin.returncode == 0 and json.loads(via_stdin.stdout)["hash"] == GENESIS_HASH
    text_file, raw_file = tmp_path / "genesis.hex", tmp_path / "genesis.bin"
    text_file.write_text(GENESIS_HEX[:80] + "\n" + GENESIS_HEX[80:] + "\n")
    raw_file.write_bytes(bytes.fromhex(GENESIS_HEX))
    for path in (text_file, raw_file):
        data = json.loads(run("header", str(path), "--json").stdout)
        assert data["hash"] == GENESIS_HASH and data["meets_target"] is True
    (tmp_path / "big").write_bytes(b"0" * 200_000)
    assert_one_line_error(run("header", str(tmp_path / "big")), 2, "more than")


def test_header_judged_against_mainnet_limit_unless_told():
    """Genesis meets mainnet's limit; a regtest-easy header (bits 207fffff) only regtest's."""
    raw = bytearray(bytes.fromhex(GENESIS_HEX))
    raw[72:76] = (0x207FFFFF).to_bytes(4, "little")
    header = BlockHeader.deserialize(bytes(raw))
    easy = next(header.with_nonce(n) for n in range(100) if header.with_nonce(n).meets_target(0x7FFFFF << 232))
    mainnet = json.loads(run("header", easy.hex(), "--json").stdout)
    assert mainnet["meets_target"] is False and "limit" in mainnet["pow_error"]
    for flags in (["--preset", "regtest"], ["--pow-limit", "207fffff"], ["--pow-limit", "7fffff" + "0" * 58]):
        data = json.loads(run("header", easy.hex(), "--json", *flags).stdout)
        assert data["meets_target"] is True and data["pow_limit"] == "7fffff" + "0" * 58, flags


def test_huge_argument_gives_a_short_error_line():
    proc = run("header", "g" * 100_000)
    assert_one_line_error(proc, 2, "neither hex")
    proc = run("chain", "show", "x" * 100_000)
    assert_one_line_error(proc, 2, "characters")
    assert len(proc.stderr) < 1000


def test_header_exit_status_says_whether_the_proof_of_work_holds():
    """Scripts can test it: 0 when the proof of work holds, 1 when it fails (2 stays for bad input)."""
    tampered = REAL_HEADERS[2][1][:-8] + "00000000"  # nonce zeroed
    for extra in ([], ["--json"]):
        assert run("header", GENESIS_HEX, *extra).returncode == 0
        proc = run("header", tampered, *extra)
        assert proc.returncode == 1 and "meets_target" in proc.stdout and not proc.stderr
    assert run("header", "0").returncode == 2


def test_cuda_without_a_gpu_says_no_gpu_was_found_and_how_it_looked(tmp_path):
    """The CUDA runtime says "driver version is insufficient" when there is no driver at all;
    the miner says what that means."""
    from miner.backends.cuda import _driver_present, device_count
    if device_count()[0] > 0:
        pytest.skip("a GPU is present: the backend is available")
    proc = run("mine", "--backend", "cuda", "--chain", str(tmp_path / "c.sqlite"), "--blocks", "1")
    assert_one_line_error(proc, 2, "backend 'cuda' is not available here")
    assert "cudaGetDeviceCount" in proc.stderr
    if not _driver_present():
        assert "no GPU found" in proc.stderr and "no NVIDIA driver is installed" in proc.stderr


def test_every_option_of_every_command_has_help():
    import argparse

    from miner.cli.main import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, (argparse._HelpAction,)) and not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "miner")
    assert not missing, missing


def test_the_bench_tables_fit_80_columns_with_every_number_whole():
    """80 columns, nothing cut, and every rate readable: hashlib's MH/s beside a GPU's GH/s (one
    unit for the whole table wrote hashlib as 0.00 GH/s). Two cpu rows (the SIMD and the SHA
    kernel) each keep their device line."""
    import io

    from miner.bench.cli_commands import bench_report
    from miner.bench.engine import BenchResult
    from rich.console import Console

    results = [
        BenchResult("ref", "hashlib (1 thread)", "threads=1", [1.16e6, 1.03e6, 1.17e6], None, 3e-5),
        BenchResult("cpu", "numba SHA-256d, SIMD 16 lanes (AVX-512), 2 thread(s)", "kernel=simd threads=2",
                    [62.38e6, 60.0e6, 66.98e6], 81.25, 2.8e-4),
        BenchResult("cpu", "numba SHA-256d, SHA extensions, 2 thread(s)", "kernel=sha threads=2",
                    [98.76e6, 97.5e6, 99.1e6], 12.5, 2.1e-4),
        BenchResult("cuda:0", "NVIDIA H200 (132 SMs, compute 9.0, 1980 MHz), an unusually long device name",
                    "block=256 npt=256 (tuned for this device)", [21.74e9, 21.70e9, 21.80e9], 4.11, 1.2e-3, 22.9e9),
        BenchResult("cuda:0", "NVIDIA H200 (132 SMs, compute 9.0, 1980 MHz), an unusually long device name",
                    "block=256 npt=16", [19.5e9, 19.4e9, 19.6e9], 4.11, 1.2e-3, 22.9e9),
    ]
    console = Console(file=io.StringIO(), width=80, color_system=None)
    for renderable in bench_report(results, "AMD EPYC (znver4), 2 cores", 5, 2.0):
        console.print(renderable)
    text = console.file.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "…" not in text, text  # nothing cut
    rows: dict[str, list[list[str]]] = {}
    for line in text[text.index("hash rate"):text.index("start-up")].splitlines():
        words = line.split()
        if words and words[0] in ("ref", "cpu", "cuda:0"):
            rows.setdefault(words[0], []).append(words)
    # each rate row: median, min and max in the row's own unit, then the speed-up over hashlib
    ref, cuda = rows["ref"][0], rows["cuda:0"][0]
    assert ref[-5:] == ["1.16", "1.03", "1.17", "MH/s", "1.0"], ref
    assert cuda[-5:] == ["21.74", "21.70", "21.80", "GH/s", "18741.4"], cuda
    assert [r[-5:-1] for r in rows["cpu"][:2]] == [["62.38", "60.00", "66.98", "MH/s"],
                                                     ["98.76", "97.50", "99.10", "MH/s"]]
    for number in ("81.25", "4.11", "0.28 ms", "1.20 ms", "22.90 GH/s"):
        assert number in text, (number, text)
    flat = " ".join(text.split())
    assert "cuda:0: NVIDIA H200 (132 SMs, compute 9.0, 1980 MHz), an unusually long device name" in flat
    assert flat.count("NVIDIA H200") == 1  # one line per device, not per launch shape
    for device in ("numba SHA-256d, SIMD 16 lanes (AVX-512), 2 thread(s)",
                   "numba SHA-256d, SHA extensions, 2 thread(s)"):
        assert f"cpu: {device}" in flat, flat


def _help(*command: str, columns: int = 80) -> str:
    return subprocess.run([sys.executable, "-m", "miner", *command, "--help"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": str(columns)}, check=True).stdout


@pytest.mark.parametrize("command", [("mine",), ("node",), ("net", "up"), ("header",)])
def test_help_lists_every_preset_and_never_breaks_a_name(command):
    """Help named "local, local-windowed, regtest, mainnet, ..." and broke the default file as
    "miner-" / "chain.sqlite": every preset in the code is listed, each name whole on one line."""
    from miner.consensus.params import PRESETS
    for columns in (60, 80, 120):
        words = {w.strip(",;.()") for w in _help(*command, columns=columns).split()}
        assert set(PRESETS) <= words, (columns, set(PRESETS) - words)
        if command != ("header",) and command != ("net", "up"):
            assert "miner-chain.sqlite" in words, columns


@pytest.mark.parametrize("command", [("mine",), ("node",), ("net", "up", "2"), ("bench",)])
def test_threads_out_of_range_is_said_alike_by_every_command(command):
    """bench said "between 1 and 1024", the others "between 1 and 1,024"."""
    from miner.backends.base import MAX_THREADS
    for given in ("0", str(MAX_THREADS + 1)):
        assert_one_line_error(run(*command, "--threads", given), 2,
                              f"argument --threads: must be between 1 and {MAX_THREADS:,}, got {given}")


def test_a_url_of_neither_kind_names_both_kinds():
    proc = run("mine", "--url", "htp://127.0.0.1:1", "--blocks", "1")
    assert_one_line_error(proc, 2, "http://")
    assert "stratum+tcp://" in proc.stderr


def test_verify_gives_a_rate_only_for_a_time_long_enough_to_measure(tmp_path):
    """A 6-block chain verified in a few milliseconds printed "in 0.00 s (18,297 blocks/s)"."""
    from miner.cli.chain import took_words
    assert took_words(31, 0.0017) == "in under 0.01 s"
    assert took_words(31, 0.04) == "in 0.04 s"
    assert took_words(1000, 0.5) == "in 0.50 s (2,000 blocks/s)"
    path = tmp_path / "c.sqlite"
    build_easy_chain(path, 5).close()
    line = run("chain", "verify", "--chain", str(path)).stdout.strip()
    assert re.fullmatch(r"chain OK: 6 blocks verified in (under 0\.01 s|0\.0\d s); active chain to height 5",
                        line), line


def test_ratios_keep_their_significant_digits():
    from miner.ui.units import format_ratio
    assert [format_ratio(x) for x in (0.0234, 0.0156, 0.52, 1.0, 4.34, 68.3, 1234.5)] == [
        "0.023x", "0.016x", "0.52x", "1.0x", "4.3x", "68x", "1,234x"]


def test_compare_without_cupy_says_so_once_and_shows_hashlibs_ratio(tmp_path):
    """With CuPy missing, stderr read "no GPU here (CuPy is not installed (cupy); ...)", and the
    hashlib row said "0.0x cpu" for about 0.02x."""
    fake = tmp_path / "site"
    fake.mkdir()
    (fake / "cupy.py").write_text("raise ModuleNotFoundError(\"No module named 'cupy'\", name='cupy')\n")
    proc = subprocess.run([sys.executable, "-m", "miner", "compare", "--count", "4096", "--seconds", "0.2",
                           "--runs", "1"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(fake), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 0, proc.stderr
    assert "no GPU here: CuPy is not installed; pip install" in proc.stderr, proc.stderr
    assert "(cupy)" not in proc.stderr
    ref = next(line for line in proc.stdout.splitlines() if line.startswith("ref "))
    x_cpu = float(re.search(r"([\d.,]+)x cpu", ref).group(1))
    assert 0 < x_cpu < 1, ref


def test_a_fresh_default_chain_gives_hashlib_its_first_blocks_in_seconds(tmp_path):
    """The default `local` preset starts at 2^17 hashes a block: hashlib alone (what mines while
    the CPU kernel compiles on a first run) finds three blocks in seconds, where at the old 2^26
    start one took minutes; the blocks carry the rising bits the chain's rule demands and verify."""
    path = tmp_path / "fresh.sqlite"
    proc = run("mine", "--backend", "ref", "--blocks", "3", "--chain", str(path), "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    jobs = [e for e in events if e["event"] == "job"]
    assert jobs[0]["bits"] == "1f008000" and events[-1]["seconds"] < 30, events[-1]
    assert int(jobs[-1]["bits"], 16) <= 0x1F008000  # the rule never eases while blocks come fast
    assert "chain OK: 4 blocks" in run("chain", "verify", "--chain", str(path)).stdout
