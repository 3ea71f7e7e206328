"""Training checkpoints: one file per run directory, replaced atomically, loaded without unpickling code.

A checkpoint is a dict of state dicts (model, optimizer, scheduler, gradient scaler, the Loader's JSON
state), counters, the per-epoch history, the torch RNG states and the settings that must not change on
resume. ``save_checkpoint`` writes it beside its target (``.last.pt.tmp-PID``), fsyncs, renames it over
``last.pt`` and fsyncs the directory, so a crash at any point leaves the previous checkpoint or the new one,
never a part. ``load_checkpoint`` reads it with ``torch.load(weights_only=True)``: tensors and plain types
only, so a checkpoint cannot run code. What goes in is written out in ``stoke.train.loop.fit``, where a
reader can see it. Not here: keeping several checkpoints, or distributed (sharded) checkpoints.

Example:
    >>> import tempfile, pathlib, torch
    >>> path = pathlib.Path(tempfile.mkdtemp()) / CHECKPOINT_NAME
    >>> save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "step": 3, "model": {"w": torch.ones(2)}})
    >>> load_checkpoint(path)["step"]
    3
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from stoke.errors import ConfigError, FormatError
from stoke.format.atomic import AtomicFile

CHECKPOINT_FORMAT = "stoke.checkpoint.v1"
CHECKPOINT_NAME = "last.pt"


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``checkpoint`` atomically and durably (temporary file, fsync, rename, fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFile(path) as stream:
        torch.save(dict(checkpoint), stream)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a writer that was killed
        stale.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint at ``path``, read on the CPU with ``weights_only=True``; FormatError when it is not one."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises many kinds for a damaged or foreign file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FormatError(
            f"{path} is not a readable checkpoint ({reason[:200]}); restore it, or delete it to start over"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise FormatError(
            f"{path} is not a stoke training checkpoint ({CHECKPOINT_FORMAT}); point --checkpoint elsewhere"
        )
    return checkpoint


def check_same_run(checkpoint: Mapping[str, Any], run: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Refuse to resume with settings that would change what the remaining steps compute (ConfigError)."""
    saved = checkpoint.get("run")
    if not isinstance(saved, Mapping):
        raise FormatError(f"{path} does not record the settings it was trained with; start a new checkpoint directory")
    for key, value in run.items():
        if saved.get(key) != value:
            raise ConfigError(
                f"{path} was saved with {key}={saved.get(key)!r} but this run has {key}={value!r}; resume with the "
                f"same settings, or use a new checkpoint directory"
            )
