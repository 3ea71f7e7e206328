"""fit's checkpoints: written atomically, loaded without code, and a stopped run resumes bit-identically."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import stoke
from stoke.errors import ConfigError, FormatError
from stoke.train import SmallCNN, fit, load_checkpoint, save_checkpoint
from stoke.train.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME

SIZE, BATCH, CLASSES = 48, 8, 3  # 6 steps per epoch
fit_on_cpu = functools.partial(fit, device="cpu")  # the same on machines with a GPU


class RecordingLoader(stoke.Loader):
    """A Loader that remembers the dataset indices of every batch it hands to the loop."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[int] = []

    def __iter__(self):
        for batch in super().__iter__():
            self.seen.extend(batch["index"].tolist())
            yield batch


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, SIZE)
    images = (rng.normal(size=(SIZE, 1, 8, 8)) + labels[:, None, None, None]).astype(np.float32)
    return {"image": images, "label": labels.astype(np.int64)}


def loaders() -> tuple[RecordingLoader, stoke.Loader]:
    data = arrays()
    train = RecordingLoader(data, BATCH, shuffle=True, seed=3, num_threads=2, prefetch=2)
    val = stoke.Loader({k: v[:16] for k, v in data.items()}, 16, shuffle=False, num_threads=1, prefetch=1)
    return train, val


def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(in_channels=1, num_classes=CLASSES, width=8)


@pytest.fixture
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


def quiet(line: str) -> None:
    pass


def test_stop_at_one_and_a_half_epochs_then_resume_gives_identical_weights(tmp_path, deterministic):
    train, val = loaders()
    straight_model = model()
    straight = fit_on_cpu(straight_model, train, val, epochs=2, log=quiet)
    assert straight.finished and straight.steps == 12 and len(straight.history) == 2

    first_train, first_val = loaders()
    stopped = fit_on_cpu(
        model(), first_train, first_val, epochs=2, checkpoint_dir=tmp_path, checkpoint_every=4, max_steps=9, log=quiet
    )
    assert not stopped.finished and stopped.steps == 9 and len(stopped.history) == 1
    saved = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert saved["step"] == 9 and saved["loader"]["epoch"] == 1 and saved["loader"]["samples_consumed"] == 3 * BATCH

    lines: list[str] = []
    second_train, second_val = loaders()
    resumed_model = model(seed=123)  # its own initial weights must not matter
    resumed = fit_on_cpu(
        resumed_model, second_train, second_val, epochs=2, checkpoint_dir=tmp_path, resume=True, log=lines.append
    )
    assert resumed.finished and resumed.steps == 12 and [e["epoch"] for e in resumed.history] == [0, 1]
    assert "resumed from" in lines[0] and "epoch 2, step 9" in lines[0]
    assert first_train.seen + second_train.seen == train.seen  # the same samples, in the same order
    assert sorted(train.seen[:SIZE]) == sorted(train.seen[SIZE:]) == list(range(SIZE))
    expected, got = straight_model.state_dict(), resumed_model.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs after resuming"
    assert resumed.history[1]["val_accuracy"] == straight.history[1]["val_accuracy"]


def test_checkpoint_holds_every_state_and_loads_with_weights_only(tmp_path):
    train, _ = loaders()
    fit_on_cpu(model(), train, epochs=1, checkpoint_dir=tmp_path, log=quiet)
    path = tmp_path / CHECKPOINT_NAME
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["format"] == CHECKPOINT_FORMAT
    assert {"model", "optimizer", "scheduler", "scaler", "loader", "step", "history", "run", "rng"} <= checkpoint.keys()
    assert checkpoint["loader"] == train.state_dict() and checkpoint["loader"]["epoch"] == 1
    assert checkpoint["run"] == {"epochs": 1, "lr": 3e-3, "weight_decay": 1e-4, "amp": "off", "steps_per_epoch": 6}
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temporary file left behind


def test_resume_refuses_other_settings_and_other_models(tmp_path):
    train, _ = loaders()
    fit_on_cpu(model(), train, epochs=1, checkpoint_dir=tmp_path, log=quiet)
    with pytest.raises(ConfigError, match=r"saved with epochs=1 but this run has epochs=2"):
        fit_on_cpu(model(), loaders()[0], epochs=2, checkpoint_dir=tmp_path, resume=True, log=quiet)
    other = SmallCNN(in_channels=1, num_classes=CLASSES, width=4)
    with pytest.raises(ConfigError, match="holds a different model"):
        fit_on_cpu(other, loaders()[0], epochs=1, checkpoint_dir=tmp_path, resume=True, log=quiet)


def test_resume_without_a_checkpoint_starts_from_scratch_and_says_so(tmp_path):
    lines: list[str] = []
    result = fit_on_cpu(model(), loaders()[0], epochs=1, checkpoint_dir=tmp_path / "new", resume=True, log=lines.append)
    assert result.steps == 6 and "starting from scratch" in lines[0]
    with pytest.raises(ConfigError, match="needs a checkpoint directory"):
        fit_on_cpu(model(), loaders()[0], epochs=1, resume=True, log=quiet)


def test_damaged_or_foreign_checkpoints_are_refused_in_one_sentence(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "model": {"w": torch.arange(1000.0)}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match=r"is not a readable checkpoint .*; restore it, or delete it") as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)
    torch.save({"format": CHECKPOINT_FORMAT, "code": SmallCNN()}, path)  # a pickled module: code, not data
    with pytest.raises(FormatError, match="is not a readable checkpoint"):
        load_checkpoint(path)
    torch.save({"weights": torch.ones(1)}, path)
    with pytest.raises(FormatError, match="is not a stoke training checkpoint"):
        load_checkpoint(path)


def test_a_failed_save_keeps_the_previous_checkpoint_and_stale_temporaries_go(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "step": 1})
    (tmp_path / f".{CHECKPOINT_NAME}.tmp-999999").write_bytes(b"half a checkpoint from a killed run")
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a lambda
        save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "step": 2, "bad": lambda: None})
    assert load_checkpoint(path)["step"] == 1
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "step": 3})
    assert load_checkpoint(path)["step"] == 3 and [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]


def test_bf16_autocast_on_the_cpu_runs_the_model_in_bfloat16(tmp_path):
    network = model()
    dtypes: set[torch.dtype] = set()
    network.features[0][0].register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
    result = fit_on_cpu(network, loaders()[0], epochs=1, amp="bf16", checkpoint_dir=tmp_path, log=quiet)
    assert result.amp == "bf16" and dtypes == {torch.bfloat16}
    assert np.isfinite(result.history[0]["loss"])
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["run"]["amp"] == "bf16"
    assert next(network.parameters()).dtype == torch.float32  # autocast keeps float32 master weights
    with pytest.raises(ConfigError, match="fp16 mixed precision needs a CUDA device"):
        fit_on_cpu(model(), loaders()[0], epochs=1, amp="fp16", log=quiet)
