"""`miner compare`'s speed figures and chart, and the peer benchmark's parsing of cpuminer-opt."""

import json
import os
import stat
import subprocess
import sys

from miner.bench.compare import CompareRow, plot
from miner.bench.peers import parse_peer_rates


def _row(name, rate):
    return CompareRow(name, f"{name} device", rate, [rate] * 3, [1, 2], 2, 0.1)


def test_chart_labels_each_bar_with_rate_and_speedup(tmp_path):
    out = tmp_path / "c.png"
    texts = plot([_row("ref", 1.2e6), _row("cpu", 60e6), _row("cuda:0", 8e9)], str(out))
    # ratios with their significant digits (format_ratio), as the compare table prints them
    assert texts == ["1.20 MH/s  (1.0x ref)", "60.00 MH/s  (50x ref)", "8.00 GH/s  (6,667x ref)"]
    assert out.read_bytes()[:4] == b"\x89PNG"


def _svg_text(path) -> str:
    import html
    import re
    return html.unescape(" ".join(re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text())))


def test_the_chart_names_the_proof_of_work_and_its_axis_unit_fits_the_bars(tmp_path):
    """scrypt's chart says scrypt, and its axis is in kH/s under kH/s bars; one backend is "1
    backend"; SHA-256d with a GPU keeps MH/s; hits that differ are said in the title."""
    one = tmp_path / "one.svg"
    plot([_row("ref", 9.5e3)], str(one), pow="scrypt")
    text = _svg_text(one)
    assert "scrypt (N=1024, r=1, p=1) on the same job and nonces: 1 backend, same hits" in text, text
    assert "kH/s on a hard target" in text and "MH/s" not in text and "SHA-256d" not in text, text
    two = tmp_path / "two.svg"
    plot([_row("ref", 9.5e3), _row("cpu", 180e3)], str(two), pow="scrypt")
    assert "2 backends, same hits" in _svg_text(two)
    sha = tmp_path / "sha.svg"
    rows = [_row("ref", 1.2e6), _row("cpu", 60e6), _row("cuda:0", 8e9)]
    rows[2].hits = [1]
    plot(rows, str(sha))
    text = _svg_text(sha)
    assert "SHA-256d on the same job and nonces: 3 backends, hits differ on cuda:0" in text, text
    assert "MH/s on a hard target" in text and "8.00 GH/s" in text, text


def test_compare_times_a_hard_target_not_the_hit_check():
    """The speed is the median of timed runs on a hard target, separate from the hit check."""
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "miner", "compare", "--backend", "ref,cpu", "--count", "30000",
                           "--seconds", "0.2", "--runs", "3", "--cpu-kernel", "simd", "--json"],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert data["agree"] and data["speed"]["target"].startswith("hard")
    ref, cpu = data["rows"]
    assert len(cpu["runs"]) == 3 and cpu["rate"] == sorted(cpu["runs"])[1]
    assert ref["total"] == cpu["total"] > 0
    # The hit check rescans candidate chunks on the exact path: a far lower "rate" than the kernel's.
    assert 30000 / cpu["check_seconds"] < cpu["rate"]
    assert "SIMD" in cpu["device"]


# What cpuminer-opt 26.1 prints in `--benchmark -a sha256d` mode (lines of its log, our machine).
PEER_LOG = """\
[2026-11-22 05:57:50] 1 of 2 miner threads started using 'sha256d' algorithm
[2026-11-22 05:57:55] Total: 23.41 MH/s, Temp: 0C, Freq: 0.000/0.000 GHz
[2026-11-22 05:57:59] Total: 25.63 MH/s, Temp: 0C, Freq: 0.000/0.000 GHz
[2026-11-22 05:58:05] Total: 980.5 kH/s, Temp: 0C
[2026-11-22 05:58:09] Total: 1.25 GH/s
"""


def test_peer_rates_are_parsed_in_hashes_per_second():
    assert parse_peer_rates(PEER_LOG) == [23.41e6, 25.63e6, 980.5e3, 1.25e9]


def test_peer_benchmark_against_a_stand_in_binary(tmp_path):
    """The whole `python -m miner.bench.peers` run, with a script standing in for cpuminer-opt
    (the project never ships or downloads the peer): alternation, medians and the ratio."""
    fake = tmp_path / "cpuminer"
    fake.write_text("#!/bin/sh\necho 'Total: 1.00 MH/s'\necho 'Total: 2.00 MH/s'\necho 'Total: 4.00 MH/s'\n"
                    "echo \"$@\" > " + str(tmp_path / "args") + "\nexec sleep 30\n")  # exec: the kill reaches it
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    proc = subprocess.run([sys.executable, "-m", "miner.bench.peers", "--cpuminer", str(fake), "--threads", "1",
                           "--rounds", "2", "--seconds", "5", "--cpu-kernel", "simd", "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(proc.stdout)["rows"]
    assert row["peer_rounds"] == {"cpuminer-opt": [3e6, 3e6]}  # the first report is start-up; median of 2 and 4
    assert row["ours"] > 0 and abs(row["ratio"] - row["ours"] / 3e6) < 1e-9  # how fast is the CPU's business
    assert (tmp_path / "args").read_text().split() == ["--benchmark", "-a", "sha256d", "-t", "1", "--no-color"]
    bad = subprocess.run([sys.executable, "-m", "miner.bench.peers", "--cpuminer", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not an executable file" in bad.stderr


def test_scrypt_side_by_side_with_both_peers_against_stand_in_binaries(tmp_path, scrypt_variants):
    """--algo scrypt with cpuminer-opt and pooler's cpuminer (whose reports say khash/s and
    who takes no --no-color); ours is the numba scrypt kernel, measured between them."""
    for name, unit, rates in (("cpuminer", "kH/s", "10.00 20.00 40.00"), ("minerd", "khash/s", "1 60 80")):
        fake = tmp_path / name
        fake.write_text("#!/bin/sh\n" + "".join(f"echo 'Total: {r} {unit}'\n" for r in rates.split())
                        + "echo \"$@\" > " + str(tmp_path / f"{name}.args") + "\nexec sleep 30\n")
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    proc = subprocess.run([sys.executable, "-m", "miner.bench.peers", "--cpuminer", str(tmp_path / "cpuminer"),
                           "--pooler", str(tmp_path / "minerd"), "--algo", "scrypt", "--threads", "1",
                           "--rounds", "1", "--seconds", "5", "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(proc.stdout)["rows"]
    assert row["kernel"] == "scrypt" and row["peers"] == {"cpuminer-opt": 30e3, "cpuminer": 70e3}
    assert row["peer"] == 70e3 and abs(row["ratio"] - row["ours"] / 70e3) < 1e-9 and row["ours"] > 0
    assert (tmp_path / "cpuminer.args").read_text().split() == ["--benchmark", "-a", "scrypt", "-t", "1", "--no-color"]
    assert (tmp_path / "minerd.args").read_text().split() == ["--benchmark", "-a", "scrypt", "-t", "1"]


def test_bench_reports_each_cpu_kernel_by_name():
    from miner.kernels import cpu_select
    proc = subprocess.run([sys.executable, "-m", "miner", "bench", "--backend", "cpu", "--threads", "1",
                           "--runs", "2", "--duration", "0.2", "--switches", "0", "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)["results"]
    assert [r["setting"] for r in rows] == [f"kernel={k} threads=1" for k in cpu_select.available()]
    assert "SIMD" in rows[0]["device"] and all(r["median"] > 0 for r in rows)  # speeds belong to bench/
    if len(rows) > 1:
        assert "SHA extensions" in rows[1]["device"]


# ----------------------------------------------------------------- timings others disturbed

def test_busy_notes_name_only_the_disturbed_timings():
    from miner.bench.engine import busy_notes
    assert busy_notes([("ref", 0.1), ("cpu", None)]) == []
    assert busy_notes([("ref", 0.1), ("cpu kernel=simd threads=2", 0.5)]) == [
        "other programs were busy during these timings (their rates are understated):",
        "  cpu kernel=simd threads=2: 50% of the CPU"]


def _spinning(n: int):
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_bench_and_compare_say_when_other_programs_took_the_cpu():
    """Two programs spinning on this 2-core machine's cores while `bench` and `compare` time
    hashlib: both say the timing was shared (before, 2 threads timed no faster than 1 without a
    word), and bench's JSON gives the share."""
    spinners = _spinning(max(2, os.cpu_count() or 1))
    try:
        bench = subprocess.run([sys.executable, "-m", "miner", "bench", "--backend", "ref", "--runs", "2",
                                "--duration", "0.3", "--switches", "0"], capture_output=True, text=True, timeout=120)
        data = json.loads(subprocess.run([sys.executable, "-m", "miner", "bench", "--backend", "ref", "--runs", "2",
                                          "--duration", "0.3", "--switches", "0", "--json"], capture_output=True,
                                         text=True, timeout=120).stdout)
        cmp = subprocess.run([sys.executable, "-m", "miner", "compare", "--backend", "ref", "--count", "4096",
                              "--seconds", "0.3", "--runs", "1"], capture_output=True, text=True, timeout=120)
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    assert bench.returncode == 0, bench.stderr
    assert "other programs were busy during these timings" in bench.stdout, bench.stdout
    assert any(line.startswith("  ref: ") and line.endswith("% of the CPU") for line in bench.stdout.splitlines())
    assert data["results"][0]["others_busy"] >= 0.25, data["results"][0]
    assert cmp.returncode == 0, cmp.stderr
    assert "other programs were busy during these timings" in cmp.stdout, cmp.stdout


# ----------------------------------------------------------------- a peer that printed too little

def _peer_script(path, reports_by_run: list[int], log):
    """A stand-in peer (a real process) that prints `reports_by_run[i]` rate reports on its i-th
    run (the last count for later runs), then keeps running until the benchmark's time is up."""
    counter = path.with_suffix(".runs")
    path.write_text(f"""#!/bin/sh
n=$(cat {counter} 2>/dev/null || echo 0); echo $((n + 1)) > {counter}
set -- {' '.join(map(str, reports_by_run))}
i=0; for c in "$@"; do count=$c; [ $i -eq $n ] && break; i=$((i + 1)); done
k=0; while [ $k -lt $count ]; do echo "Total: $((k + 1)).00 MH/s"; k=$((k + 1)); done
echo run >> {log}
exec sleep 30
""")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_a_peer_run_with_too_few_reports_is_run_once_more_then_reported_missing(tmp_path, capfd):
    """cpuminer-opt printed one rate report in 12 s on a loaded machine and the whole comparison
    ended in a traceback: such a run is now run once more, and if that also falls short, None
    (reported as missing by the caller)."""
    from miner.bench.peers import run_peer_retrying

    flaky = _peer_script(tmp_path / "flaky", [1, 3], tmp_path / "flaky.log")
    assert run_peer_retrying(str(flaky), 1, 1.0) == [2e6, 3e6]  # the second run's reports after its first
    assert (tmp_path / "flaky.log").read_text().count("run") == 2
    assert "printed 1 rate report(s) in 1 s" in capfd.readouterr().err
    silent = _peer_script(tmp_path / "silent", [1], tmp_path / "silent.log")
    assert run_peer_retrying(str(silent), 1, 1.0) is None
    assert (tmp_path / "silent.log").read_text().count("run") == 2  # once more, and no more
    err = capfd.readouterr().err
    assert "running it once more" in err and "reported as missing" in err


def test_a_peer_that_never_reports_enough_is_missing_from_the_table_not_a_traceback(tmp_path):
    silent = _peer_script(tmp_path / "cpuminer", [1], tmp_path / "silent.log")
    good = _peer_script(tmp_path / "minerd", [3], tmp_path / "good.log")
    base = [sys.executable, "-m", "miner.bench.peers", "--cpuminer", str(silent), "--pooler", str(good),
            "--threads", "1", "--rounds", "1", "--seconds", "5", "--cpu-kernel", "simd"]
    proc = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (row,) = json.loads(proc.stdout)["rows"]
    assert row["peers"] == {"cpuminer-opt": None, "cpuminer": 2.5e6} and row["missing"] == {"cpuminer-opt": 1,
                                                                                          "cpuminer": 0}
    assert row["peer"] == 2.5e6 and row["ours"] > 0
    text = subprocess.run(base, capture_output=True, text=True, timeout=900)
    assert text.returncode == 0 and "missing" in text.stdout
    assert "cpuminer-opt at 1 thread(s): 1 of 1 run(s) missing" in text.stdout, text.stdout
