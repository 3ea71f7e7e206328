"""Shared fixtures; helpers live in ``helpers.py`` (on the path through ``pythonpath``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import write_image_folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "images")
