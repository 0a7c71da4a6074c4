"""Runs the `miner` command with the CuPy simulator in place of CuPy (tests only).

    cd tests && python -m support.sim_miner mine --backend cuda ...    (SIM_DEVICES, SIM_SMS set the fake GPUs)
"""

import os

from . import cupy_sim

cupy_sim.install(cupy_sim.Simulator(devices=int(os.environ.get("SIM_DEVICES", "1")),
                                    sms=int(os.environ.get("SIM_SMS", "2"))))

from miner.cli.main import entry  # noqa: E402 (after the simulator stands in for CuPy)

entry()
