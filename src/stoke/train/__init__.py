"""The reference training loop and the models the demo and ``stoke train`` use."""

from stoke.train.loop import EpochStats, evaluate, train_one_epoch
from stoke.train.models import SmallCNN

__all__ = ["EpochStats", "SmallCNN", "evaluate", "train_one_epoch"]
