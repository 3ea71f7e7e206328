"""Packing on Dask: the same dataset as a local pack, retried tasks, clear failures, and resume after one."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from click.testing import CliRunner
from distributed import Client, LocalCluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stoke
from helpers import write_image_folder
from stoke.cli import main
from stoke.engines.dask import PROBE_PREFIX, _probe_directory, check_workers_see, run_tasks_dask
from stoke.errors import ConfigError, PackError
from stoke.format.manifest import MANIFEST_NAME, PACK_STATE_DIR

# The workers are other processes: send this module's functions and classes by value, not by import name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SHARD_ITEMS = 3
ALLOW = {"max_quarantined": 1.0}  # the sources quarantine some of their items on purpose


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
        silence_logs=logging.ERROR,
    ) as started:
        yield started


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster) as connected:
        yield connected


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = write_image_folder(tmp_path_factory.mktemp("source") / "images", classes=2, per_class=5)
    (root / "class_0" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "class_1" / "notes.jpg").write_text("a text file named .jpg")
    return root


class Records:
    """Items of two fields; with ``crash_marker``, the worker reading item ``crash_at`` dies once (the marker says so).

    Only a worker dies: the driver reads the first items itself to infer the schema.
    """

    def __init__(self, size: int, crash_marker: str | None = None, crash_at: int = 20) -> None:
        self.size, self.crash_marker, self.crash_at = size, crash_marker, crash_at
        self.driver = os.getpid()

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        crash = index == self.crash_at and self.crash_marker is not None and os.getpid() != self.driver
        if crash and not os.path.exists(self.crash_marker):
            Path(self.crash_marker).touch()
            os._exit(1)  # a worker killed mid-shard (out of memory, a preempted node)
        if index % 7 == 6:
            raise ValueError(f"record {index} is corrupt")  # quarantined alike in every pack
        return {"label": index % 3, "vector": np.arange(index % 4, dtype=np.float32) * index}


def files_of(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


def assert_same_dataset(local: Path, dask: Path) -> None:
    """Same files byte for byte (manifest, shards, quarantine), nothing left over, same samples."""
    assert files_of(local) == files_of(dask)
    assert not (dask / PACK_STATE_DIR).exists()
    left, right = stoke.open(local), stoke.open(dask)
    assert len(left) == len(right) > 0
    for index in range(len(left)):
        a, b = left[index], right[index]
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


def test_dask_pack_equals_local_pack(tmp_path, cluster, images):
    local = stoke.pack(images, tmp_path / "local", shard_items=SHARD_ITEMS, workers=1, progress=False, **ALLOW)
    dask = stoke.pack(
        images,
        tmp_path / "dask",
        shard_items=SHARD_ITEMS,
        engine="dask",
        scheduler=cluster.scheduler_address,
        progress=False,
        **ALLOW,
    )
    assert (dask.num_samples, dask.num_quarantined, dask.num_shards) == (10, 2, 4)
    assert dask.quarantine == local.quarantine
    assert {entry["reason"] for entry in dask.quarantine} != {""}
    assert_same_dataset(tmp_path / "local", tmp_path / "dask")


def test_a_worker_dying_mid_shard_is_rescheduled_and_the_result_is_unchanged(tmp_path, cluster):
    marker = tmp_path / "crashed-once"
    stoke.pack(Records(24), tmp_path / "local", shard_items=SHARD_ITEMS, workers=1, progress=False, **ALLOW)
    stoke.pack(
        Records(24, crash_marker=str(marker)),
        tmp_path / "dask",
        shard_items=SHARD_ITEMS,
        engine="dask",
        scheduler=cluster.scheduler_address,
        progress=False,
        **ALLOW,
    )
    assert marker.exists()  # the crash happened, and the shard was packed again elsewhere
    assert_same_dataset(tmp_path / "local", tmp_path / "dask")  # no temporary file of the dead attempt is left


def fail_first_attempt(attempts: str, task: int, advance) -> int:
    """Raise OSError the first time ``task`` runs (a marker file per task remembers it), then succeed."""
    marker = Path(attempts) / f"task-{task}"
    if not marker.exists():
        marker.touch()
        raise OSError(f"transient: the shared filesystem hiccuped on task {task}")
    return task * 10


def test_a_task_that_fails_once_is_retried(tmp_path, client):
    import functools

    work = functools.partial(fail_first_attempt, str(tmp_path))
    results = run_tasks_dask([3, 0, 2, 1], work, total=0, progress=False, client=client, retries=1)
    assert results == [30, 0, 20, 10]
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"task-{task}" for task in range(4)]


def fail_on_task_two(task: int, advance) -> int:
    if task == 2:
        raise ValueError("item 7 has no pixels")
    return task


def test_a_task_that_keeps_failing_gives_one_clear_error(client):
    with pytest.raises(PackError) as caught:
        run_tasks_dask([0, 1, 2], fail_on_task_two, total=0, progress=False, client=client, retries=1)
    message = str(caught.value)
    assert message.startswith("task 2 failed on the Dask cluster after 2 attempts: ValueError: item 7 has no pixels")
    assert "(on worker tcp://127.0.0.1:" in message and "--resume" in message
    assert "\n" not in message


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tasks=st.lists(st.integers(0, 10_000), unique=True, max_size=12))
def test_results_come_back_in_task_order(client, tasks):
    assert run_tasks_dask(tasks, lambda task, advance: -task, total=0, progress=False, client=client) == [
        -task for task in tasks
    ]


def test_a_failed_dask_pack_writes_no_manifest_and_resume_reuses_finished_shards(tmp_path, cluster):
    source = Records(14)
    stoke.pack(source, tmp_path / "local", shard_items=SHARD_ITEMS, workers=1, progress=False, **ALLOW)
    out = tmp_path / "dask"
    (out / PACK_STATE_DIR).mkdir(parents=True)  # an unfinished pack (no plan yet), so stoke packs into it
    (out / "shard-000002.stk").mkdir()  # shard 2 cannot be renamed into place, on any attempt
    options = {"shard_items": SHARD_ITEMS, "engine": "dask", "scheduler": cluster.scheduler_address, **ALLOW}
    with pytest.raises(PackError, match=r"^shard 2 \(shard-000002\.stk\) failed on the Dask cluster after 3 attempts"):
        stoke.pack(source, out, resume=True, progress=False, **options)
    assert not (out / MANIFEST_NAME).exists()
    finished = sorted(path.name for path in (out / PACK_STATE_DIR).glob("shard-*.json"))
    assert "shard-000002.stk.json" not in finished

    (out / "shard-000002.stk").rmdir()
    resumed = stoke.pack(source, out, resume=True, progress=False, **options)
    assert resumed.reused_shards == len(finished)
    assert_same_dataset(tmp_path / "local", out)


def test_the_probe_names_what_a_worker_cannot_do(tmp_path):
    probe = tmp_path / f"{PROBE_PREFIX}abc"
    assert "cannot read" in _probe_directory(str(probe), "abc")
    probe.write_text("xyz")
    assert "holds something else" in _probe_directory(str(probe), "abc")
    probe.write_text("abc")
    assert _probe_directory(str(probe), "abc") is None
    assert [path.name for path in tmp_path.iterdir()] == [probe.name]  # the worker's own file is removed


class ClusterElsewhere:
    """A client whose one worker sees another filesystem: it cannot read what the driver wrote."""

    def run(self, function, probe: str, token: str) -> dict:
        return {"tcp://10.0.0.7:40000": function(probe + "-elsewhere", token)}


def test_workers_that_cannot_see_the_output_directory_stop_the_pack_early(tmp_path, client):
    check_workers_see(client, tmp_path)  # the LocalCluster shares this filesystem
    assert list(tmp_path.iterdir()) == []  # the probe is cleaned up
    with pytest.raises(PackError, match=r"the Dask worker tcp://10\.0\.0\.7:40000 cannot use the output directory"):
        check_workers_see(ClusterElsewhere(), tmp_path)


def test_cli_packs_on_a_scheduler_and_refuses_a_scheduler_without_dask(tmp_path, cluster, images):
    runner = CliRunner()
    address = cluster.scheduler_address
    result = runner.invoke(
        main,
        [
            *("pack", str(images), str(tmp_path / "ds"), "--engine", "dask", "--scheduler", address),
            *("--json", "--max-quarantined", "1"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["num_samples"] == 10
    refused = runner.invoke(main, ["pack", str(images), str(tmp_path / "other"), "--scheduler", address])
    assert refused.exit_code == 2 and "needs engine='dask'" in refused.output
    with pytest.raises(ConfigError, match="engine must be 'local' or 'dask'"):
        stoke.pack(images, tmp_path / "x", engine="spark", progress=False)


def cancel_own_first_attempt(marker_dir: str, task: int, advance) -> int:
    """Task 1's first attempt cancels itself from inside the cluster (as a lost worker or a restarting
    cluster would): no error, just a result that never comes; later attempts finish."""
    import time

    from distributed import Future, get_client, get_worker

    marker = Path(marker_dir) / f"cancelled-{task}"
    if task == 1 and not marker.exists():
        marker.touch()
        client = get_client()
        client.cancel([Future(get_worker().get_current_task(), client)], force=True)
        time.sleep(3)  # the driver has seen the cancellation long before this wrong result could arrive
        return -1
    return task * 10


def test_a_task_whose_result_the_cluster_loses_is_submitted_again(tmp_path, client):
    import functools

    work = functools.partial(cancel_own_first_attempt, str(tmp_path))
    results = run_tasks_dask([0, 1, 2], work, total=0, progress=False, client=client, retries=1)
    assert results == [0, 10, 20]
    assert (tmp_path / "cancelled-1").exists()


def test_a_task_lost_more_often_than_the_retries_allow_gives_one_clear_error(tmp_path, client):
    import functools

    work = functools.partial(cancel_own_first_attempt, str(tmp_path))
    with pytest.raises(PackError) as caught:
        run_tasks_dask([1], work, total=0, progress=False, client=client, retries=0)
    message = str(caught.value)
    assert message.startswith("task 1 failed on the Dask cluster after 1 attempt: its result was lost")
    assert "--resume" in message and "\n" not in message
