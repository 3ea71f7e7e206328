"""The reference training loop and the models the demo and ``stoke train`` use."""

from stoke.train.checkpoint import load_checkpoint, save_checkpoint
from stoke.train.loop import EpochStats, FitResult, evaluate, fit, train_one_epoch
from stoke.train.models import SmallCNN, build_model, resnet18, resnet50

__all__ = [
    "EpochStats",
    "FitResult",
    "SmallCNN",
    "build_model",
    "evaluate",
    "fit",
    "load_checkpoint",
    "resnet18",
    "resnet50",
    "save_checkpoint",
    "train_one_epoch",
]
