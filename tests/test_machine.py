"""stoke.machine: the cores this process may use, not the machine's count."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stoke.machine import available_cores


def test_available_cores_is_the_affinity_mask() -> None:
    assert available_cores() == (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_a_process_pinned_to_one_core_counts_one() -> None:
    code = (
        "import os\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "from stoke.machine import available_cores\n"
        "print(available_cores())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "1"
