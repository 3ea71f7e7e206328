"""``stoke profile -- python train.py ARGS``: profile an unchanged script that uses a stoke Loader.

For: the CLI command. The script runs in a subprocess with ``$STOKE_PROFILE`` set to the output
directory, which makes every Loader it creates profile itself (``Loader(profile=...)`` reads it) and
write its report into ``DIR/loader-<pid>-<n>/`` after the profiled and headspace steps, or at exit. Not
for: profiling from code (``stoke.profile(loader)``).

Example:
    >>> import sys, tempfile
    >>> code, reports = run_script([sys.executable, "-c", "pass"], tempfile.mkdtemp(), steps=5, headspace=0)
    >>> code, reports
    (0, [])
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from stoke.errors import ConfigError
from stoke.profile.profiler import ENV_DIR, ENV_HEADSPACE, ENV_STEPS, require_outputs
from stoke.profile.report import Report


def run_script(
    command: Sequence[str], out: str | os.PathLike[str], steps: int, headspace: int
) -> tuple[int, list[tuple[Path, Report]]]:
    """Run ``command`` with profiling on; returns its exit code and each Loader's (directory, report)."""
    if not command:
        raise ConfigError("give the command to profile after --, such as: stoke profile -- python train.py")
    require_outputs("stoke profile")  # the script's Loaders write profile.png and TensorBoard scalars
    directory = Path(out).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("loader-*"):  # an earlier run's reports: only directories this command wrote
        if (old / "report.json").is_file():
            shutil.rmtree(old)
    env = dict(os.environ)
    env.update({ENV_DIR: str(directory), ENV_STEPS: str(steps), ENV_HEADSPACE: str(headspace)})
    try:
        code = subprocess.run(list(command), env=env, check=False).returncode
    except FileNotFoundError as error:
        raise ConfigError(f"cannot run {command[0]!r}: {error.strerror}; check the command after --") from error
    found = sorted(directory.glob("loader-*/report.json"), key=lambda path: path.stat().st_mtime)
    reports = [(path.parent, Report.from_dict(_load(path))) for path in found]
    return code, reports


def _load(path: Path) -> dict:
    import json

    return json.loads(path.read_text())
