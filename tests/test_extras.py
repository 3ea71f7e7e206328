"""The default install and the extras: what works without the optional libraries, and what each one says.

Each check runs in a fresh interpreter whose import system refuses the optional libraries it is told to
(a meta path finder raising ModuleNotFoundError, as for a library that is not installed), so the test
suite's own environment, which has every extra, stands in for a minimal ``pip install stoke``.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import stoke
from helpers import write_image_folder
from stoke.errors import ConfigError, MissingExtra
from stoke.extras import LIBRARIES, library, require
from stoke.sources import TextSource

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "stoke"
# Every optional library (top-level modules): what a plain ``pip install stoke`` does not bring.
OPTIONAL = (
    "pyarrow",
    "tokenizers",
    "sklearn",
    "scipy",
    "tensorboard",
    "matplotlib",
    "pynvml",
    "fsspec",
    "s3fs",
    "gcsfs",
    "aiohttp",
    "dask",
    "distributed",
    "turbojpeg",
)
BLOCKER = """
import importlib.abc, sys

BLOCKED = set({blocked!r})


class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
"""
CLI = "import sys\nsys.argv[0] = 'stoke'\nfrom stoke.cli import main\nmain()\n"


def run_without(blocked, code: str, *args: str, cwd: Path | None = None, env: dict | None = None):
    """Run ``code`` (then ``args`` as sys.argv[1:]) in a fresh Python where ``blocked`` cannot be imported."""
    prelude = BLOCKER.format(blocked=sorted(blocked))
    environment = {**os.environ, "STOKE_TURBOJPEG": "off" if "turbojpeg" in blocked else "", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env=environment,
    )


def cli_without(blocked, *args: str, cwd: Path | None = None, env: dict | None = None):
    return run_without(blocked, CLI, *args, cwd=cwd, env=env)


def assert_one_line(result, extra: str, *words: str) -> str:
    """The command failed with exit 2 and exactly one stderr line naming ``pip install 'stoke[extra]'``."""
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("stoke: error: ")
    assert line.endswith(f"pip install 'stoke[{extra}]'"), line
    assert "which this install lacks" in line, line
    for word in words:
        assert word in line, line
    return line


# -- (a) the default install: images and arrays, packed, loaded, inspected and verified ------------------
def test_images_and_arrays_work_with_every_optional_library_missing(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "images", classes=2, per_class=3)
    code = f"""
    import numpy as np, stoke
    from stoke.ops import Normalize, RandomHorizontalFlip, RandomResizedCrop
    from stoke.format.fields import jpeg_region

    assert not jpeg_region.available()  # no libturbojpeg: whole-image decoding, the same pixels
    root = {str(tmp_path)!r}
    packed = stoke.pack(root + "/images", root + "/photos", progress=False)
    assert packed.num_samples == 6, packed
    transforms = {{"image": [RandomResizedCrop(24), RandomHorizontalFlip(), Normalize([0.5] * 3, [0.25] * 3)]}}
    loader = stoke.Loader(stoke.open(root + "/photos"), batch_size=4, shuffle=True, seed=0, transforms=transforms)
    shapes = [tuple(batch["image"].shape) for batch in loader]
    assert shapes == [(4, 3, 24, 24), (2, 3, 24, 24)], shapes
    stoke.pack({{"x": np.arange(10.0).reshape(5, 2), "y": np.arange(5)}}, root + "/arrays", progress=False)
    batches = [batch["y"].tolist() for batch in stoke.Loader(stoke.open(root + "/arrays"), batch_size=2)]
    assert batches == [[0, 1], [2, 3], [4]], batches
    print("ok")
    """
    result = run_without(OPTIONAL, code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    for command in ("inspect", "verify"):
        shown = cli_without(OPTIONAL, command, str(tmp_path / "photos"), "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["num_samples"] == 6


# -- (b) each feature that needs an extra: one line, naming it ----------------------------------------------
@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "people.csv"
    path.write_text("age,height,label\n30,1.8,yes\n,1.6,no\n50,,yes\n41,1.7,no\n")
    return path


def test_a_table_without_pyarrow_names_stoke_tables(tmp_path: Path, table: Path) -> None:
    result = cli_without({"pyarrow"}, "pack", str(table), str(tmp_path / "out"))
    assert_one_line(result, "tables", "pyarrow", str(table))
    assert not (tmp_path / "out").exists()  # nothing started


def test_a_parquet_table_without_pyarrow_names_stoke_tables(tmp_path: Path) -> None:
    import pyarrow as pa
    from pyarrow import parquet

    path = tmp_path / "t.parquet"
    parquet.write_table(pa.table({"x": [1.0, 2.0], "label": ["a", "b"]}), path)
    assert_one_line(cli_without({"pyarrow"}, "pack", str(path), str(tmp_path / "out")), "tables", "pyarrow")


def test_knn_imputation_without_scikit_learn_names_stoke_tables(tmp_path: Path, table: Path) -> None:
    result = cli_without({"sklearn"}, "pack", str(table), str(tmp_path / "out"), "--missing", "knn")
    assert_one_line(result, "tables", "knn", "scikit-learn")


@pytest.mark.parametrize("options", [[], ["--tokenizer", "bpe", "--vocab-size", "300"]], ids=["byte", "bpe"])
def test_text_without_tokenizers_names_stoke_text(tmp_path: Path, options: list[str]) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n\nthe dog sat on the log\n")
    result = cli_without({"tokenizers"}, "pack", str(corpus), str(tmp_path / "out"), *options)
    assert_one_line(result, "text", "tokenizers")


def test_a_text_dataset_loads_without_tokenizers_and_its_tokenizer_names_stoke_text(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n\nthe dog sat\n")
    stoke.pack(TextSource(corpus), tmp_path / "text", progress=False)
    code = f"""
    import stoke
    from stoke.errors import MissingExtra

    dataset = stoke.open({str(tmp_path / "text")!r})
    assert sum(len(batch["index"]) for batch in stoke.Loader(dataset, batch_size=1)) == len(dataset) == 2
    try:
        dataset.tokenizer()
    except MissingExtra as error:
        print(error.extra, error)
    """
    result = run_without({"tokenizers"}, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("text ") and "pip install 'stoke[text]'" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("url", "blocked", "named"),
    [
        ("s3://bucket/ds", {"fsspec"}, "fsspec"),
        ("s3://bucket/ds", {"s3fs"}, "s3fs"),
        ("gs://bucket/ds", {"gcsfs"}, "gcsfs"),
        ("https://127.0.0.1:9/ds", {"aiohttp"}, "aiohttp"),
    ],
    ids=["fsspec", "s3fs", "gcsfs", "aiohttp"],
)
def test_remote_datasets_without_their_library_name_stoke_remote(url: str, blocked: set, named: str) -> None:
    assert_one_line(cli_without(blocked, "inspect", url), "remote", named, url)


def test_the_dask_engine_without_dask_names_stoke_dask(tmp_path: Path) -> None:
    images = write_image_folder(tmp_path / "images", classes=1, per_class=2)
    result = cli_without({"dask", "distributed"}, "pack", str(images), str(tmp_path / "out"), "--engine", "dask")
    assert_one_line(result, "dask", "--engine dask")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("blocked", "named"), [("matplotlib", "matplotlib"), ("tensorboard", "TensorBoard")])
def test_stoke_profile_without_its_outputs_libraries_names_stoke_profile(tmp_path: Path, blocked, named) -> None:
    out = tmp_path / "profile"
    result = cli_without({blocked}, "profile", "--out", str(out), "--", sys.executable, "-c", "print('ran')")
    assert_one_line(result, "profile", named, "stoke profile")
    assert "ran" not in result.stdout and not out.exists()  # refused before the script ran


def test_a_profiler_writing_files_without_matplotlib_fails_before_profiling() -> None:
    code = """
    import numpy as np, stoke
    from stoke.errors import MissingExtra

    loader = stoke.Loader({"x": np.arange(8.0)}, batch_size=4)
    try:
        stoke.profile(loader, out="never-written")
    except MissingExtra as error:
        print(error.extra, error)
    profiler = stoke.profile(loader, steps=1)  # no files: nothing optional needed
    assert len(list(loader)) == 2
    print(type(profiler.report()).__name__)
    """
    result = run_without({"matplotlib"}, code)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first.startswith("profile ") and first.endswith("pip install 'stoke[profile]'"), first
    assert second == "Report"


def test_training_scalars_without_tensorboard_name_stoke_train(tmp_path: Path) -> None:
    stoke.pack(write_image_folder(tmp_path / "images", classes=2, per_class=2), tmp_path / "ds", progress=False)
    args = ["train", str(tmp_path / "ds"), "--model", "small-cnn", "--image-size", "16", "--batch-size", "2"]
    args += ["--val-split", "none", "--device", "cpu", "--logdir", str(tmp_path / "logs")]
    result = cli_without({"tensorboard"}, *args)
    assert_one_line(result, "train", "TensorBoard", "--logdir")


@pytest.mark.parametrize("op", ["MixUp", "CutMix"])
def test_mixup_and_cutmix_without_scipy_name_stoke_mix(op: str) -> None:
    code = f"""
    from stoke.errors import MissingExtra
    from stoke.ops import {op}

    try:
        {op}(alpha=0.4, num_classes=3)
    except MissingExtra as error:
        print(error.extra, error)
    """
    result = run_without({"scipy"}, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"mix {op}") and "SciPy" in result.stdout, result.stdout
    assert result.stdout.strip().endswith("pip install 'stoke[mix]'"), result.stdout


@pytest.mark.parametrize(("args", "words"), [([], ["stoke demo"]), (["--tabular"], ["stoke demo --tabular"])])
def test_the_demos_without_scikit_learn_name_stoke_demo(tmp_path: Path, args: list[str], words: list[str]) -> None:
    result = cli_without({"sklearn"}, "demo", "--out", str(tmp_path / "demo"), *args)
    assert_one_line(result, "demo", "scikit-learn", *words)


def test_the_built_in_benchmark_set_without_scikit_learn_names_stoke_demo(tmp_path: Path) -> None:
    result = cli_without({"sklearn"}, "bench", env={"STOKE_HOME": str(tmp_path)})
    line = assert_one_line(result, "demo", "stoke bench", "scikit-learn")
    assert "SOURCE" in line  # and the way around it: a folder of one's own images


# -- (c) import stoke stays light -----------------------------------------------------------------------------
HEAVY = ("pyarrow", "dask", "distributed", "matplotlib", "tensorboard", "scipy", "sklearn", "fsspec", "tokenizers")


def test_import_stoke_imports_no_optional_library_and_not_torch() -> None:
    code = "import json, sys, stoke\nprint(json.dumps(sorted({m.partition('.')[0] for m in sys.modules})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    loaded = set(json.loads(result.stdout))
    assert not loaded & {*HEAVY, "torch", "s3fs", "gcsfs", "aiohttp"}, loaded & {*HEAVY, "torch"}


def test_packing_and_loading_images_imports_no_optional_library_even_when_installed(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "images", classes=2, per_class=2)
    code = f"""
    import sys, stoke
    from stoke.ops import RandomResizedCrop

    stoke.pack({str(tmp_path / "images")!r}, {str(tmp_path / "ds")!r}, progress=False)
    crops = {{"image": [RandomResizedCrop(8)]}}
    loader = stoke.Loader(stoke.open({str(tmp_path / "ds")!r}), batch_size=2, transforms=crops)
    assert len(list(loader)) == 2
    print(" ".join(sorted({{m.partition(".")[0] for m in sys.modules}})))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert not set(result.stdout.split()) & set(HEAVY), set(result.stdout.split()) & set(HEAVY)


# -- require() and MissingExtra --------------------------------------------------------------------------------
def test_require_returns_the_module_or_a_missing_extra_naming_the_feature_and_the_extra() -> None:
    assert require("json", extra="tables", what="x") is json
    with pytest.raises(MissingExtra) as caught:
        require("sklearn_is_not_this", extra="tables", what="the knn policy")
    assert str(caught.value) == (
        "the knn policy needs sklearn_is_not_this, which this install lacks: pip install 'stoke[tables]'"
    )
    assert isinstance(caught.value, ConfigError) and caught.value.exit_code == 2
    assert (caught.value.module, caught.value.extra) == ("sklearn_is_not_this", "tables")
    copy = pickle.loads(pickle.dumps(caught.value))  # raised in a pack worker, re-raised in the driver
    assert (str(copy), copy.module, copy.extra) == (str(caught.value), "sklearn_is_not_this", "tables")


def test_require_tells_a_library_that_fails_to_import_from_one_that_is_absent(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "stoke_test_broken_lib.py").write_text("raise ImportError('libfoo.so.3: cannot open shared\\nobject')")
    (tmp_path / "stoke_test_broken_dep.py").write_text("import stoke_test_absent_dependency")
    monkeypatch.syspath_prepend(str(tmp_path))
    for module, detail in [
        ("stoke_test_broken_lib", "libfoo.so.3: cannot open shared object"),
        ("stoke_test_broken_dep", "No module named 'stoke_test_absent_dependency'"),
    ]:
        with pytest.raises(MissingExtra) as caught:
            require(module, extra="remote", what="reading s3://b/ds")
        assert str(caught.value) == (
            f"reading s3://b/ds needs {module}, which is installed but cannot be imported ({detail}): "
            f"pip install 'stoke[remote]'"
        )


# -- pyproject.toml ------------------------------------------------------------------------------------------
def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(text).name.lower() for text in requirements}


def _require_calls() -> list[tuple[str, str, str]]:
    """(file, module, extra) of every require("module", extra="...") call under src/stoke.

    The one call whose module is a variable, in storage/remote.py, takes it from _PROTOCOL_LIBRARIES: each
    of those modules is listed, with the extra of that call.
    """
    from stoke.storage.remote import _PROTOCOL_LIBRARIES

    calls = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if "from stoke.extras import require" not in text:  # stoke.format has a require() of its own
            continue
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "require":
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                module = node.args[0]
                extra = next(keyword.value for keyword in node.keywords if keyword.arg == "extra")
                assert isinstance(extra, ast.Constant), where
                if isinstance(module, ast.Name) and path.name == "remote.py":
                    calls += [(where, name, extra.value) for name in sorted(set(_PROTOCOL_LIBRARIES.values()))]
                    continue
                assert isinstance(module, ast.Constant), where
                calls.append((where, module.value, extra.value))
    return calls


def test_every_extra_a_message_names_exists_and_installs_the_library_it_is_named_for() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    calls = _require_calls()
    assert {extra for _, _, extra in calls} >= {"tables", "text", "remote", "dask", "profile", "train", "mix", "demo"}
    for where, module, extra in calls:
        assert extra in extras, f"{where} names stoke[{extra}], which pyproject.toml does not define"
        assert library(module) in LIBRARIES.values(), f"{where}: {module} is not in stoke.extras.LIBRARIES"
        requirement = library(module)[1]
        assert requirement in _names(extras[extra]), f"{where}: stoke[{extra}] does not install {requirement}"
    # messages written by hand (not through require) name existing extras too
    for path in SRC.rglob("*.py"):
        for extra in re.findall(r"stoke\[([a-z]+)\]", path.read_text()):  # lowercase: not the docs' stoke[EXTRA]
            assert extra in extras, f"{path} names stoke[{extra}], which pyproject.toml does not define"


def test_no_module_imports_an_optional_library_at_import_time() -> None:
    """Module-level imports of optional libraries (outside ``if TYPE_CHECKING:``) would break ``import stoke``."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.partition(".")[0] in OPTIONAL]
            found += [f"{path.relative_to(ROOT)}: {name}" for name in names if name == "torch.utils.tensorboard"]
    assert not found, found


def test_the_default_install_is_the_fast_path_and_all_is_every_extra() -> None:
    project = _pyproject()["project"]
    defaults = _names(project["dependencies"])
    assert "turbojpeg" in defaults  # region decoding, the fast path, by default
    assert {"torch", "numpy", "pillow", "simplejpeg", "opencv-python-headless", "xxhash", "click"} <= defaults
    heavy = {requirement for _, requirement in LIBRARIES.values()}
    assert not defaults & heavy, defaults & heavy
    extras = {name: _names(requirements) for name, requirements in project["optional-dependencies"].items()}
    assert extras["turbo"] <= defaults  # stoke[turbo] still installs: it is what the default brings
    features = set().union(*(names for name, names in extras.items() if name not in ("all", "dev")))
    assert extras["all"] == features
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r'pip install --quiet -e "\.\[all,dev\]"', makefile), "make test must install every extra"
