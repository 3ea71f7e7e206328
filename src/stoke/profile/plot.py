"""The profile as one PNG: a timeline of the first steps and a bar chart of stage times.

For: a picture to look at or attach to an issue (matplotlib, Agg backend: no display needed). Not for:
interactive exploration (use the TensorBoard scalars).

The top panel shows, per step, the time waiting for the workers, the rest of the input time (collate,
copy, batch ops) and the loop's own step, stacked; headspace steps are hatched. The bottom panel shows
each stage's seconds, workers' stages summed over the workers.

Example:
    >>> import tempfile, pathlib
    >>> from stoke.profile.report import Report
    >>> from stoke.profile.timeline import StepTimeline
    >>> path = write_png(Report(), StepTimeline(capacity=1), pathlib.Path(tempfile.mkdtemp()) / "p.png")
    >>> path.stat().st_size > 0
    True
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stoke.profile.report import Report
from stoke.profile.timeline import StepTimeline

FIRST_STEPS = 100


def write_png(report: Report, timeline: StepTimeline, path: str | os.PathLike[str]) -> Path:
    """Draw the timeline of the first steps and the stage bar chart into ``path``; returns it."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 8), layout="constrained")
    top, bottom = figure.subplots(2, 1)
    shown = min(timeline.steps, timeline.capacity, FIRST_STEPS)
    steps = np.arange(shown)
    wait = timeline.wait_ns[:shown] / 1e6
    rest = (timeline.input_ns[:shown] - timeline.wait_ns[:shown]) / 1e6
    own = np.maximum(timeline.step_ns[:shown], 0) / 1e6
    hatch = ["//" if cached else "" for cached in timeline.headspace[:shown]]
    top.bar(steps, wait, color="tab:red", label="waiting for workers", hatch=hatch)
    top.bar(steps, rest, bottom=wait, color="tab:orange", label="collate, copy, batch ops")
    top.bar(steps, own, bottom=wait + rest, color="tab:blue", label="rest of the step (the loop)")
    top.set_xlabel("step (hatched: headspace, fed from a cached batch)")
    top.set_ylabel("ms")
    top.set_title(f"{report.classification}: {report.input_share:.1%} of step time is input")
    top.legend(loc="upper right")
    names = [stage.name for stage in report.stages]
    seconds = [stage.seconds for stage in report.stages]
    colors = ["tab:green" if stage.where == "workers" else "tab:orange" for stage in report.stages]
    bottom.barh(names[::-1], seconds[::-1], color=colors[::-1])
    bottom.set_xlabel("seconds (green: workers, summed over them; orange: the loop's thread)")
    bottom.set_title(f"stage times; bottleneck: {report.bottleneck or 'none measured'}")
    path = Path(path)
    figure.savefig(path, dpi=80)
    return path
