"""The reference training loop: short, explicit, the loop PyTorch users know, fed by a stoke Loader.

``train_one_epoch`` and ``evaluate`` are the two loops of every tutorial, with a timer around
``next(batches)`` (the one number a data loader answers for: how long each step waited for its batch) and
the mixed-precision calls (``torch.autocast``, ``torch.amp.GradScaler``). ``fit`` is the script around them:
device, channels_last, optimizer and schedule, optional ``torch.compile``, a progress bar, TensorBoard
scalars and checkpoints that resume exactly (``stoke.train.checkpoint``; docs/training.md). Copy what you
need into your own script: there is no framework here. Not here: distributed training (the Loader already
partitions by rank; wrap the model in DDP yourself), gradient accumulation, custom losses.

Example:
    >>> import numpy as np, torch, stoke
    >>> data = {"image": np.zeros((8, 1, 8, 8), np.float32), "label": np.zeros(8, np.int64)}
    >>> loader = stoke.Loader(data, batch_size=4)
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    >>> stats = train_one_epoch(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"))
    >>> stats.samples
    8
    >>> result = fit(model, stoke.Loader(data, batch_size=4), epochs=2, device="cpu", log=lambda line: None)
    >>> len(result.history), result.steps
    (2, 4)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the name every PyTorch tutorial uses
from tqdm import tqdm

from stoke.errors import ConfigError
from stoke.extras import require
from stoke.train.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME, check_same_run, load_checkpoint, save_checkpoint

AMP_CHOICES = ("auto", "bf16", "fp16", "off")


@dataclass
class EpochStats:
    samples: int
    seconds: float
    wait_seconds: float
    loss: float
    stopped: bool = False  # ``on_step`` ended the epoch early

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def data_wait_fraction(self) -> float:
        return self.wait_seconds / self.seconds if self.seconds > 0 else 0.0


@dataclass
class FitResult:
    """What ``fit`` did: one dict per finished epoch, the optimizer steps taken in all, and where it ran."""

    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    finished: bool = False  # False when ``max_steps`` stopped it
    device: str = "cpu"
    amp: str = "off"


def train_one_epoch(
    model: torch.nn.Module,
    loader: Iterable[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    *,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    on_step: Callable[[torch.Tensor], bool] | None = None,
) -> EpochStats:
    """One pass over ``loader``; returns throughput, data wait and mean loss.

    ``scheduler`` steps per batch. ``amp_dtype`` (bfloat16 or float16) runs the forward pass under
    ``torch.autocast``; float16 needs a ``scaler``. ``on_step(loss)`` runs after each optimizer step and
    ends the epoch early by returning True.
    """
    model.train()
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    samples, wait, total_loss = 0, 0.0, torch.zeros((), device=device)
    started = time.perf_counter()
    batches = iter(loader)
    while True:
        waiting = time.perf_counter()
        batch = next(batches, None)
        wait += time.perf_counter() - waiting
        if batch is None:
            break
        images = batch["image"].to(device, non_blocking=True, memory_format=memory_format)
        labels = batch["label"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # float16: scale the loss so small gradients do not underflow
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.detach() * len(labels)
        samples += len(labels)
        if on_step is not None and on_step(loss.detach()):
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    return EpochStats(samples, seconds, wait, float(total_loss) / max(samples, 1), stopped=batch is not None)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: Iterable[dict[str, Any]],
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> float:
    """Top-1 accuracy of ``model`` over ``loader``."""
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    correct, total = 0, 0
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True, memory_format=memory_format)
        labels = batch["label"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(images)
        correct += int((outputs.argmax(dim=1) == labels).sum())
        total += len(labels)
    return correct / max(total, 1)


def pick_device(name: str | None = None) -> torch.device:
    """``name`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``), or the GPU when there is one and the CPU otherwise."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but this machine has no CUDA GPU torch can use; use cpu")
    return device


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` (auto, bf16, fp16, off): auto is bf16 on GPUs that have it, fp16 on
    older GPUs and off on the CPU (where bf16 autocast works but is rarely faster)."""
    if amp not in AMP_CHOICES:
        raise ConfigError(f"amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    if device.type != "cuda":
        raise ConfigError("fp16 mixed precision needs a CUDA device; use bf16 (or off) on the CPU")
    return torch.float16


def fit(
    model: torch.nn.Module,
    train_loader: Any,
    val_loader: Iterable[dict[str, Any]] | None = None,
    *,
    epochs: int,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    device: str | torch.device | None = None,
    amp: str = "auto",
    channels_last: bool = True,
    compile_model: bool = False,
    logdir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    progress: bool = False,
    max_steps: int | None = None,
    log_every: int = 10,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Train ``model`` on ``train_loader`` (a ``stoke.Loader``) until it has finished epoch ``epochs``: AdamW
    with a one-cycle schedule peaking at ``lr``, top-1 accuracy on ``val_loader`` after each epoch.

    The Loader's position is the truth: a fresh Loader trains ``epochs`` epochs, a resumed one the rest.

    ``amp`` and ``channels_last`` apply on CUDA (bf16 autocast also on the CPU when asked for);
    ``compile_model`` runs ``torch.compile``. ``logdir`` receives TensorBoard scalars, the loss and learning
    rate every ``log_every`` steps. ``checkpoint_dir/last.pt`` is replaced every ``checkpoint_every``
    steps (0: never) and after each epoch; ``resume`` continues from it exactly, or starts afresh when
    there is none. ``max_steps`` stops after that many steps in all, checkpoint written, to be resumed.
    """
    device = torch.device(device) if isinstance(device, torch.device) else pick_device(device)
    amp_dtype = autocast_dtype(amp, device)
    channels_last = channels_last and device.type == "cuda"
    if epochs < 1 or checkpoint_every < 0 or log_every < 1:
        raise ConfigError(
            f"epochs and log_every must be positive and checkpoint_every >= 0, got {epochs}, "
            f"{log_every} and {checkpoint_every}"
        )
    if resume and checkpoint_dir is None:
        raise ConfigError("resume needs a checkpoint directory to resume from (--checkpoint DIR)")

    # The model, the optimizer and its schedule, and the gradient scaler fp16 needs.
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(train_loader))
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    amp_name = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]
    run = {
        "epochs": epochs,
        "lr": lr,
        "weight_decay": weight_decay,
        "amp": amp_name,
        "steps_per_epoch": len(train_loader),
    }
    result = FitResult(device=str(device), amp=amp_name)

    # Resume: every piece of state goes back where it came from, the Loader's included.
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        checkpoint = load_checkpoint(checkpoint_path)
        check_same_run(checkpoint, run, checkpoint_path)
        try:
            model.load_state_dict(checkpoint["model"])
        except RuntimeError as error:
            raise ConfigError(
                f"{checkpoint_path} holds a different model ({str(error).splitlines()[0]}); resume with the model "
                f"it was saved with, or use a new checkpoint directory"
            ) from None
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if scaler is not None:
            scaler.load_state_dict(checkpoint["scaler"])
        train_loader.load_state_dict(checkpoint["loader"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if device.type == "cuda" and checkpoint["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
        result.steps, result.history = int(checkpoint["step"]), list(checkpoint["history"])
        log(f"resumed from {checkpoint_path}: epoch {train_loader.epoch + 1}, step {result.steps}")
    elif resume:
        log(f"no checkpoint in {checkpoint_dir} yet; starting from scratch")

    def save() -> None:
        if checkpoint_path is None:
            return
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "loader": train_loader.state_dict(),  # a small JSON-able dict: where in which epoch
            "step": result.steps,
            "history": result.history,
            "run": run,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
            },
        }
        save_checkpoint(checkpoint_path, checkpoint)

    # The model that runs: compiled or not, it shares its parameters with ``model``, which is what is saved.
    runner = torch.compile(model) if compile_model else model
    writer = None
    if logdir is not None:
        require("torch.utils.tensorboard", extra="train", what="TensorBoard scalars of training (--logdir, logdir=)")
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed run logged after its last checkpoint
        writer = SummaryWriter(str(logdir), purge_step=result.steps if result.steps else None)
    bar = tqdm(total=epochs * len(train_loader), initial=result.steps, unit="step", disable=not progress)

    def after_step(loss: torch.Tensor) -> bool:
        result.steps += 1
        bar.update()
        if result.steps % log_every == 0:
            value = float(loss)  # waits for the GPU: only every log_every steps
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
            if writer is not None:
                writer.add_scalar("train/loss", value, result.steps)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], result.steps)
        last_of_epoch = result.steps % len(train_loader) == 0  # saved after validation, with the history
        if checkpoint_every and result.steps % checkpoint_every == 0 and not last_of_epoch:
            save()
        return max_steps is not None and result.steps >= max_steps

    try:
        while train_loader.epoch < epochs:
            epoch = train_loader.epoch
            stats = train_one_epoch(
                runner,
                train_loader,
                optimizer,
                device,
                scheduler,
                scaler=scaler,
                amp_dtype=amp_dtype,
                channels_last=channels_last,
                on_step=after_step,
            )
            if train_loader.state_dict()["epoch"] == epoch:  # max_steps stopped it mid-epoch
                save()
                return result
            accuracy = None
            if val_loader is not None:
                accuracy = evaluate(runner, val_loader, device, amp_dtype=amp_dtype, channels_last=channels_last)
            result.history.append(
                {
                    "epoch": epoch,
                    "samples": stats.samples,
                    "seconds": stats.seconds,
                    "wait_seconds": stats.wait_seconds,
                    "samples_per_s": stats.samples_per_s,
                    "data_wait_fraction": stats.data_wait_fraction,
                    "loss": stats.loss,
                    "val_accuracy": accuracy,
                }
            )
            if writer is not None:
                writer.add_scalar("train/epoch_loss", stats.loss, result.steps)
                writer.add_scalar("train/images_per_s", stats.samples_per_s, result.steps)
                writer.add_scalar("train/data_wait_share", stats.data_wait_fraction, result.steps)
                if accuracy is not None:
                    writer.add_scalar("val/accuracy", accuracy, result.steps)
                writer.flush()
            with tqdm.external_write_mode():
                shown = f"{accuracy:.2%}" if accuracy is not None else "n/a (no validation split)"
                log(
                    f"epoch {epoch + 1:>2}/{epochs}  {stats.samples_per_s:>8,.0f} samples/s  waited for data "
                    f"{stats.data_wait_fraction:>5.1%}  loss {stats.loss:.3f}  val accuracy {shown}"
                )
            save()
            if max_steps is not None and result.steps >= max_steps and train_loader.epoch < epochs:
                return result
        result.finished = True
        return result
    finally:
        bar.close()
        if writer is not None:
            writer.close()
