from miner.cli.main import entry

entry()
