"""Shared fixtures; helpers live in ``helpers.py`` (on the path through ``pythonpath``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import stoke
from helpers import write_image_folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "images")


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> stoke.Dataset:
    """A packed dataset of 21 photos of different sizes in 3 classes, 4 per shard."""
    root = tmp_path_factory.mktemp("photos")
    write_image_folder(root / "images", classes=3, per_class=7)
    stoke.pack(root / "images", root / "ds", shard_items=4, progress=False)
    return stoke.open(root / "ds")
