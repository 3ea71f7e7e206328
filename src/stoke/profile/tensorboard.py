"""The profile as TensorBoard scalars (``torch.utils.tensorboard``), beside the user's own runs.

For: per-step input and step times and the summary (input-bound share, stage seconds and milliseconds per
step, recommendations' estimated gains) in a TensorBoard event file. Not for: the training loop's own metrics.

Example:
    >>> import tempfile
    >>> from stoke.profile.report import Report
    >>> from stoke.profile.timeline import StepTimeline
    >>> path = write_scalars(Report(steps=0), StepTimeline(capacity=1), tempfile.mkdtemp())
    >>> path.is_dir()
    True
"""

from __future__ import annotations

import os
from pathlib import Path

from stoke.extras import require
from stoke.profile.report import Report
from stoke.profile.timeline import StepTimeline


def write_scalars(report: Report, timeline: StepTimeline, directory: str | os.PathLike[str]) -> Path:
    """Write the scalars under ``stoke/profile/...`` into an event file in ``directory``; returns it."""
    require("torch.utils.tensorboard", extra="profile", what="the profile's TensorBoard scalars")
    from torch.utils.tensorboard import SummaryWriter

    directory = Path(directory)
    with SummaryWriter(log_dir=str(directory)) as writer:
        kept = min(timeline.steps, timeline.capacity)
        for k in range(kept):
            writer.add_scalar("stoke/profile/input_ms", timeline.input_ns[k] / 1e6, k)
            writer.add_scalar("stoke/profile/wait_ms", timeline.wait_ns[k] / 1e6, k)
            writer.add_scalar("stoke/profile/step_ms", timeline.step_ns[k] / 1e6, k)
            writer.add_scalar("stoke/profile/batches_ready", int(timeline.ready[k]), k)
        writer.add_scalar("stoke/profile/input_share", report.input_share, report.steps)
        writer.add_scalar("stoke/profile/steps_per_second", report.steps_per_second, report.steps)
        if report.workers:
            writer.add_scalar("stoke/profile/worker_utilisation", report.workers["utilisation"], report.steps)
        for stage in report.stages:
            writer.add_scalar(f"stoke/profile/stage_seconds/{_tag(stage.name)}", stage.seconds, report.steps)
            writer.add_scalar(f"stoke/profile/stage_ms_per_step/{_tag(stage.name)}", stage.ms_per_step, report.steps)
        for item in report.recommendations:
            writer.add_scalar(f"stoke/profile/estimated_gain/{_tag(item.action)}", item.estimated_gain, report.steps)
        if report.headspace:
            writer.add_scalar(
                "stoke/profile/headspace_speedup", report.headspace["speedup_if_input_were_free"], report.steps
            )
    return directory


def _tag(text: str) -> str:
    """A TensorBoard tag part: letters, digits and _-. only."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in text)[:60]
