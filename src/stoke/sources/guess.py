"""What a path that is not a dataset holds, so that the error can say what to do with it.

``stoke inspect photos/`` on a folder of images is a common first step; the answer is to pack it, and
into a new directory beside it, never into the folder itself. :func:`not_a_dataset` writes that
sentence for every way a path can fail to be a dataset: missing, a file (a listing, a table, a text
corpus, a manifest), an unfinished pack, an empty folder, an image folder, a flat folder of images, a
folder of text files, a folder that holds datasets. It looks at a few directory entries only, so it
stays instant on a folder of a million images.

Not for: choosing the source to pack (``stoke.sources.resolve_source`` does that).

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "photos"
    >>> (folder / "cat").mkdir(parents=True); _ = (folder / "cat" / "a.jpg").write_bytes(b"")
    >>> print(not_a_dataset(folder).split("; ", 1)[1].replace(str(folder.parent) + "/", ""))
    it looks like an image folder: pack it with `stoke pack photos photos.stoke`, then use photos.stoke
"""

from __future__ import annotations

import os
import shlex
from itertools import islice
from pathlib import Path

from stoke.format.manifest import MANIFEST_NAME, PACK_STATE_DIR
from stoke.sources.imagefolder import IMAGE_EXTENSIONS

_LOOKED_AT = 64  # directory entries read per folder: enough to tell, cheap on a huge folder
_FILE_KINDS = {
    ".csv": "a CSV listing or table",
    ".tsv": "a TSV listing or table",
    ".jsonl": "a JSON Lines listing",
    ".ndjson": "a JSON Lines listing",
    ".parquet": "a Parquet table",
    ".pq": "a Parquet table",
    ".txt": "a text corpus",
}


def not_a_dataset(path: Path) -> str:
    """One sentence: why ``path`` is not a stoke dataset, and the command that makes or finds one."""
    if not path.exists():
        return f"{path} does not exist; pack a dataset there with `stoke pack SOURCE {_quote(path)}`"
    if not path.is_dir():
        return _not_a_directory(path)
    if (path / PACK_STATE_DIR).is_dir():
        return (
            f"{path} holds an unfinished pack (no {MANIFEST_NAME} yet); finish it with "
            f"`stoke pack SOURCE {_quote(path)} --resume`"
        )
    what = f"{path} is not a stoke dataset (it has no {MANIFEST_NAME})"
    entries = _entries(path)
    if not entries:
        return f"{what}; it is empty: pack one into it with `stoke pack SOURCE {_quote(path)}`"
    datasets = [entry for entry in entries if entry.is_dir() and (entry / MANIFEST_NAME).is_file()]
    if datasets:
        named = ", ".join(str(entry) for entry in datasets[:3]) + (", ..." if len(datasets) > 3 else "")
        return f"{what}, but it holds {'a dataset' if len(datasets) == 1 else 'datasets'}: give {named}"
    target = _beside(path)
    pack = f"`stoke pack {_quote(path)} {_quote(target)}"
    if any(_holds_images(entry) for entry in entries if entry.is_dir() and not entry.name.startswith(".")):
        return f"{what}; it looks like an image folder: pack it with {pack}`, then use {target}"
    if any(entry.suffix.lower() in IMAGE_EXTENSIONS for entry in entries if entry.is_file()):
        return (
            f"{what}; it holds images but no class folders: move them into {path / 'CLASS'}/ folders and pack "
            f"it with {pack}`, or list them in a CSV with a path column and pack that"
        )
    if any(entry.suffix.lower() == ".txt" for entry in entries if entry.is_file()):
        return f"{what}; it looks like a folder of text files: pack it with {pack} --tokenizer byte`, then use {target}"
    return f"{what}; give a dataset directory, or pack a source into a new one with `stoke pack SOURCE OUT`"


def _not_a_directory(path: Path) -> str:
    what = f"{path} is a file, not a dataset directory"
    if path.name == MANIFEST_NAME:
        return f"{what}; it is a dataset's manifest: give its directory, {path.parent}"
    kind = _FILE_KINDS.get(path.suffix.lower())
    if kind is None:
        return f"{what}; give the directory that holds {MANIFEST_NAME}"
    target = path.with_suffix(".stoke")
    if (target / MANIFEST_NAME).is_file():
        return f"{what}; it looks like {kind}, and {target} beside it is a dataset: give that"
    return f"{what}; it looks like {kind}: pack it with `stoke pack {_quote(path)} {_quote(target)}`, then use {target}"


def _entries(path: Path) -> list[Path]:
    """Up to ``_LOOKED_AT`` entries of ``path`` (hidden ones skipped), sorted so the sentence is stable."""
    try:
        with os.scandir(path) as scan:
            return sorted(Path(entry.path) for entry in islice(scan, _LOOKED_AT) if not entry.name.startswith("."))
    except OSError:
        return []


def _holds_images(folder: Path) -> bool:
    """Whether ``folder`` (a class folder) holds an image among its first entries, or one level below."""
    entries = _entries(folder)
    if any(entry.suffix.lower() in IMAGE_EXTENSIONS for entry in entries):
        return True
    return any(
        entry.suffix.lower() in IMAGE_EXTENSIONS for sub in entries[:8] if sub.is_dir() for entry in _entries(sub)
    )


def _beside(path: Path) -> Path:
    """``photos`` -> ``photos.stoke``: a new directory next to the folder, never inside it."""
    if path.name not in ("", ".", ".."):
        return path.with_name(path.name + ".stoke")
    resolved = path.resolve()
    target = resolved.parent / f"{resolved.name or 'dataset'}.stoke"
    return target if path.is_absolute() else Path(os.path.relpath(target))


def _quote(path: Path) -> str:
    return shlex.quote(str(path))
