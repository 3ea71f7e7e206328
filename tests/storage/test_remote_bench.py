"""stoke bench --dataset URL: remote against local throughput, cold and warm cache, on a loopback server."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from remote_servers import HttpDatasetServer

import stoke
from stoke.bench.run import format_remote_report, run_remote_bench
from stoke.cli import main


def test_the_remote_bench_reports_cold_warm_and_local(tmp_path):
    stoke.pack({"x": np.ones((30, 8), np.float32)}, tmp_path / "www" / "ds", shard_items=10, progress=False)
    server = HttpDatasetServer(tmp_path / "www")
    try:
        result = run_remote_bench(server.url("ds"), threads=1, cache_dir=tmp_path, log=lambda line: None)
        assert result["samples"] == 30 and result["downloads_cold"] == 3 and result["downloads_warm"] == 0
        assert all(result[f"{run}_samples_per_s"] > 0 for run in ("cold", "warm", "local"))
        assert "warm cache" in format_remote_report(result)
        out = CliRunner().invoke(main, ["bench", "--dataset", server.url("ds"), "--threads", "1", "--json"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout.strip().splitlines()[-1])["downloads_warm"] == 0
    finally:
        server.stop()
