"""The floors plugin (tests/support/floors.py) on a suite of its own, run by pytest in a child: each
test is marked by what its code does, `-m` selects by those marks, and a test that does more than
its floors say fails, naming the marker it needs."""

from __future__ import annotations

import pytest
from support import TESTS

pytest_plugins = ["pytester"]

SUITE = '''
import socket
import subprocess
import sys

import pytest


def starts_miner():
    return subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_objects_only():
    assert sorted([3, 1, 2]) == [1, 2, 3]


def test_through_a_helper():
    starts_miner()


@pytest.fixture
def listening():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s


def test_through_a_fixture(listening):
    assert listening.getsockname()[0] == "127.0.0.1"


def test_hidden_from_the_reader():
    run = getattr(__import__("subprocess"), "run")
    run([sys.executable, "-c", "pass"], check=True)


@pytest.mark.process
def test_hidden_but_marked():
    run = getattr(__import__("subprocess"), "run")
    run([sys.executable, "-c", "pass"], check=True)
'''


@pytest.fixture
def suite(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeini("[pytest]\nmarkers =\n" + "".join(f"    {m}: -\n" for m in ("process", "compile", "integration",
                                                                           "unit", "slow")))
    return pytester


def _selected(suite, expression: str) -> set[str]:
    result = suite.runpytest_subprocess("-p", "support.floors", "-m", expression, "--collect-only", "-q")
    return {line.split("::")[1] for line in result.outlines if "::" in line}


@pytest.mark.process
def test_each_test_is_marked_by_what_its_code_does(suite):
    assert _selected(suite, "unit") == {"test_objects_only", "test_hidden_from_the_reader"}
    assert _selected(suite, "process") == {"test_through_a_helper", "test_hidden_but_marked"}
    assert _selected(suite, "integration") == {"test_through_a_fixture"}
    assert _selected(suite, "not slow") == {"test_objects_only", "test_through_a_fixture",
                                            "test_hidden_from_the_reader"}


@pytest.mark.process
def test_a_test_that_does_more_than_its_floors_say_fails_naming_the_marker(suite):
    result = suite.runpytest_subprocess("-p", "support.floors", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=1)
    out = result.stdout.str()
    assert "test_hidden_from_the_reader does more than its floors ['unit'] say: subprocess.Popen" in out
    assert "mark it @pytest.mark.process" in out
