"""stoke demo --tabular, small: every policy trains through the Loader and reports a sane accuracy."""

from __future__ import annotations

import json

from click.testing import CliRunner

from stoke.cli import main
from stoke.demo_tabular import POLICIES, run_tabular_demo


def test_tabular_demo_reports_one_sane_accuracy_per_policy_side_by_side(tmp_path):
    lines: list[str] = []
    report = run_tabular_demo(tmp_path, epochs=8, log=lines.append)
    rows = {row["policy"]: row for row in report["policies"]}
    assert list(rows) == list(POLICIES)
    assert set(report["missing_rates"]) and all(rate == 0.1 for rate in report["missing_rates"].values())
    for policy, row in rows.items():
        assert row["val_accuracy"] > 0.8, (policy, row)
        assert row["train_rows"] + row["val_rows"] == row["rows_packed"]
        assert row["rows_packed"] + row["rows_dropped"] == 569
    assert rows["drop"]["rows_dropped"] > 0 and rows["mean"]["rows_dropped"] == 0
    assert rows["mean"]["val_rows"] == rows["knn"]["val_rows"]  # the fill policies share one split
    assert any(line.startswith("policy") for line in lines)
    json.dumps(report)


def test_cli_demo_tabular_prints_json_last(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--tabular", "--out", str(tmp_path), "--epochs", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert [row["policy"] for row in report["policies"]] == list(POLICIES)
