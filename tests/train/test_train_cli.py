"""`stoke train`: a packed image dataset's splits trained end to end, TensorBoard scalars, checkpoints,
resume, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import stoke
from helpers import write_image_folder
from stoke.cli import main
from stoke.prepare.split import make_splits
from stoke.train import load_checkpoint


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 photos in 2 classes, split 12 train / 4 val."""
    root = tmp_path_factory.mktemp("train-cli")
    write_image_folder(root / "images", classes=2, per_class=8, size=(20, 24))
    stoke.pack(root / "images", root / "ds", workers=1, progress=False)
    make_splits(stoke.open(root / "ds"), {"train": 0.75, "val": 0.25}, seed=0, stratify="label")
    return root / "ds"


def train(*args: str):
    return CliRunner().invoke(main, ["train", *args])


def test_train_writes_tensorboard_scalars_and_a_resumable_checkpoint(dataset, tmp_path):
    logdir, checkpoint = tmp_path / "runs", tmp_path / "ckpt"
    options = ["--model", "small-cnn", "--epochs", "2", "--batch-size", "2", "--image-size", "16", "--device", "cpu"]
    options += ["--logdir", str(logdir), "--checkpoint", str(checkpoint), "--checkpoint-every", "4", "--json"]
    result = train(str(dataset), *options)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["model"] == "small-cnn" and summary["device"] == "cpu" and summary["amp"] == "off"
    assert summary["steps"] == 12 and [epoch["epoch"] for epoch in summary["epochs"]] == [0, 1]
    assert 0.0 <= summary["val_accuracy"] <= 1.0 and summary["samples_per_s"] > 0
    assert "training small-cnn (3 channels, 2 classes) on 12 samples" in result.stderr
    assert sum("waited for data" in line and "val accuracy" in line for line in result.stderr.splitlines()) == 2

    events = EventAccumulator(str(logdir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/images_per_s", "train/data_wait_share", "val/accuracy"} <= tags
    assert [event.step for event in events.Scalars("val/accuracy")] == [6, 12]
    assert [event.value for event in events.Scalars("val/accuracy")] == pytest.approx(
        [epoch["val_accuracy"] for epoch in summary["epochs"]]
    )
    assert [event.step for event in events.Scalars("train/loss")] == [10]
    assert all(0 <= event.value <= 1 for event in events.Scalars("train/data_wait_share"))

    saved = load_checkpoint(checkpoint / "last.pt")
    assert saved["step"] == 12 and saved["loader"]["epoch"] == 2 and saved["loader"]["samples_consumed"] == 0
    assert saved["run"]["epochs"] == 2 and saved["loader"]["epoch_length"] == 12

    again = train(str(dataset), *options, "--resume")  # a finished run resumes to nothing left to do
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1])["steps"] == 12
    assert "resumed from" in again.stderr

    changed = train(str(dataset), *[o if o != "2" else "3" for o in options[:4]], *options[4:], "--resume")
    assert changed.exit_code == 2
    error = changed.stderr.splitlines()[-1]  # after the log lines --json sends to stderr
    assert error.startswith("stoke: error: ") and "saved with epochs=2 but this run has epochs=3" in error


def test_a_dataset_without_splits_trains_on_everything(tmp_path):
    write_image_folder(tmp_path / "images", classes=3, per_class=2, size=(12, 12))
    stoke.pack(tmp_path / "images", tmp_path / "ds", workers=1, progress=False)
    result = train(
        str(tmp_path / "ds"),
        "--model",
        "resnet18",
        "--batch-size",
        "3",
        "--image-size",
        "8",
        "--device",
        "cpu",
        "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["val_accuracy"] is None
    assert "has no splits: training on every sample, no validation" in result.stderr


def test_a_remote_dataset_without_splits_trains_on_everything(tmp_path, monkeypatch):
    fsspec = pytest.importorskip("fsspec", reason="remote datasets need the 'remote' extra")
    monkeypatch.setenv("STOKE_HOME", str(tmp_path / "home"))  # the remote cache goes there
    write_image_folder(tmp_path / "images", classes=3, per_class=2, size=(12, 12))
    stoke.pack(tmp_path / "images", tmp_path / "ds", workers=1, progress=False)
    memory = fsspec.filesystem("memory")
    for path in (tmp_path / "ds").iterdir():
        memory.pipe(f"/train-{tmp_path.name}/{path.name}", path.read_bytes())
    options = ["--model", "small-cnn", "--batch-size", "3", "--image-size", "8", "--device", "cpu", "--json"]
    result = train(f"memory://train-{tmp_path.name}", *options)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["steps"] == 2
    assert "has no splits: training on every sample, no validation" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "vgg16"), "unknown model 'vgg16'; choose one of small-cnn, resnet18, resnet50"),
        (("--val-split", "test"), "has no split 'test' to validate on (its splits are ['train', 'val'])"),
        (("--amp", "fp16", "--device", "cpu"), "fp16 mixed precision needs a CUDA device"),
        (("--batch-size", "64"), "fewer than one batch of 64; pass a smaller --batch-size"),
        (("--resume",), "resume needs a checkpoint directory"),
    ],
)
def test_errors_are_one_line(dataset, args, message):
    result = train(
        str(dataset), "--model", "small-cnn", "--image-size", "8", "--batch-size", "4", "--device", "cpu", *args
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("stoke: error: ")
    assert message in result.stderr


def test_a_missing_dataset_is_one_line(tmp_path):
    result = train(str(tmp_path / "nothing"))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "stoke: error:" in result.stderr
