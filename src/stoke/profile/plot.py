"""The profile as one PNG: a timeline of the steps, the stages ranked as the report ranks them, and what to do.

For: a picture to look at or attach to an issue (matplotlib, Agg backend: no display needed). Not for:
interactive exploration (use the TensorBoard scalars), or deciding anything: every number and sentence
drawn comes from the :class:`~stoke.profile.report.Report` (the same words as the terminal table).

The top panel shows, per step, the time waiting for the workers, the rest of the input time (collate,
copy, batch ops) and the loop's own step, stacked, under the report's verdict; the warm-up step is shaded
and headspace steps (fed from a cached batch) are hatched, on a hatched background since they are often
too short to see. The first ``FIRST_STEPS`` steps are drawn, and the headspace steps wherever they fall.
The middle panel shows each stage's milliseconds per step (a worker stage's time divided by the worker
count), most costly first: the quantity the report ranks by, so the longest bar is the bottleneck its
title names (outlined), or, when the loop is not input-bound, the slowest stage named for information.
The bottom panel lists the recommendations with their bounded gains, as the table prints them.

Example:
    >>> import tempfile, pathlib
    >>> from stoke.profile.report import Report
    >>> from stoke.profile.timeline import StepTimeline
    >>> path = write_png(Report(), StepTimeline(capacity=1), pathlib.Path(tempfile.mkdtemp()) / "p.png")
    >>> path.stat().st_size > 0
    True
    >>> [axes.get_label() for axes in draw(Report(), StepTimeline(capacity=1)).axes]
    ['timeline', 'stages', 'summary']
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from stoke.extras import require
from stoke.profile.report import (
    Report,
    bottleneck_text,
    headspace_text,
    recommendation_text,
    recommendations_heading,
    verdict_text,
)
from stoke.profile.timeline import StepTimeline

FIRST_STEPS = 250  # the default stoke profile run (1 warm-up, 200 profiled, 20 headspace steps) fits
SHOWN_RECOMMENDATIONS = 4
HATCH = "//"
WRAP = 120  # characters per line of the summary panel
TITLE_WRAP = 90
COLORS = {"wait": "tab:red", "input": "tab:orange", "step": "tab:blue", "workers": "tab:green", "loop": "tab:orange"}


def draw(report: Report, timeline: StepTimeline, warmup: int = 1) -> Any:
    """The figure (a ``matplotlib.figure.Figure``) of ``report`` and its ``timeline``; axes are labelled
    "timeline", "stages" and "summary", each bar has the gid of its step ("step 3 wait") or stage."""
    require("matplotlib", extra="profile", what="the profile's plot (profile.png)")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 11), layout="constrained")
    top, middle, bottom = figure.subplots(3, 1, height_ratios=[3, 3, 1.3])
    top.set_label("timeline")
    middle.set_label("stages")
    bottom.set_label("summary")
    _timeline(top, report, timeline, warmup)
    _stages(middle, report)
    _summary(bottom, report)
    return figure


def write_png(report: Report, timeline: StepTimeline, path: str | os.PathLike[str], warmup: int = 1) -> Path:
    """Draw ``report`` (see :func:`draw`) into the PNG file ``path``; returns it."""
    path = Path(path)
    draw(report, timeline, warmup).savefig(path, dpi=80, bbox_inches="tight")  # the bold label fits too
    return path


def _timeline(axes: Any, report: Report, timeline: StepTimeline, warmup: int) -> None:
    from matplotlib.patches import Patch

    kept = min(timeline.steps, timeline.capacity)
    cached = timeline.headspace[:kept]
    steps = np.arange(kept)
    steps = steps[(steps < FIRST_STEPS) | cached]
    wait = timeline.wait_ns[steps] / 1e6
    rest = (timeline.input_ns[steps] - timeline.wait_ns[steps]) / 1e6
    own = np.maximum(timeline.step_ns[steps], 0) / 1e6
    headspace = cached[steps]
    segments = [
        ("wait", wait, 0, "waiting for workers"),
        ("input", rest, wait, "collate, copy, batch ops"),
        ("step", own, wait + rest, "rest of the step (the loop)"),
    ]
    for segment, values, below, label in segments:
        # A zero-height bar shows no hatching: only the segments that are drawn carry it.
        hatches = [HATCH if cached_step and value > 0 else "" for cached_step, value in zip(headspace, values)]
        bars = axes.bar(steps, values, bottom=below, color=COLORS[segment], label=label, hatch=hatches)
        for step, patch in zip(steps, bars):
            patch.set_gid(f"step {step} {segment}")
    handles, _ = axes.get_legend_handles_labels()
    if warmup > 0 and len(steps):
        axes.axvspan(-0.5, warmup - 0.5, color="grey", alpha=0.15, zorder=0)
        handles.append(
            Patch(color="grey", alpha=0.15, label=f"warm-up ({warmup} step{'s' * (warmup > 1)}, not counted)")
        )
    if headspace.any():
        first, last = int(steps[headspace].min()), int(steps[headspace].max())
        axes.axvspan(first - 0.5, last + 0.5, facecolor="none", edgecolor="grey", hatch=HATCH, zorder=0)
        handles.append(
            Patch(facecolor="white", edgecolor="grey", hatch=HATCH, label="hatched: headspace, fed from a cached batch")
        )
    gaps = np.flatnonzero(np.diff(steps) > 1)
    hidden = "".join(f"; steps {steps[g] + 1}–{steps[g + 1] - 1} not shown" for g in gaps)
    axes.set_xlabel(f"step{hidden}")
    axes.set_ylabel("ms")
    axes.set_title(verdict_text(report))
    axes.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=3, fontsize="small")


def _stages(axes: Any, report: Report) -> None:
    stages = report.stages
    title = bottleneck_text(report, separator="\n")  # the table's words, the detail on its own line(s)
    axes.set_title("\n".join(part for line in title.splitlines() for part in textwrap.wrap(line, TITLE_WRAP)))
    if not stages:
        axes.text(0.5, 0.5, "no stage measured", ha="center", va="center", transform=axes.transAxes)
        return
    rows = np.arange(len(stages))[::-1]  # the report's order, most costly at the top
    bars = axes.barh(rows, [stage.ms_per_step for stage in stages], color=[COLORS[s.where] for s in stages])
    for stage, patch in zip(stages, bars):
        patch.set_gid(stage.name)
        if stage.name == report.bottleneck:
            patch.set_edgecolor("black")
            patch.set_linewidth(2)
    axes.set_yticks(rows, [stage.name for stage in stages])
    for stage, label in zip(stages, axes.get_yticklabels()):
        if stage.name == report.bottleneck:
            label.set_fontweight("bold")
    workers = max(int(report.workers.get("count", 1) or 1), 1)
    axes.set_xlabel(
        f"ms per step (green: workers' stages, divided by the {workers} worker{'s' * (workers > 1)} sharing them; "
        "orange: the loop's thread)"
    )


def _summary(axes: Any, report: Report) -> None:
    axes.axis("off")
    headspace = headspace_text(report)
    lines = [headspace] if headspace is not None else []
    if report.recommendations:
        lines += [recommendations_heading(report)]
        lines += [f"  {recommendation_text(item)}" for item in report.recommendations[:SHOWN_RECOMMENDATIONS]]
        if len(report.recommendations) > SHOWN_RECOMMENDATIONS:
            lines.append(f"  ... and {len(report.recommendations) - SHOWN_RECOMMENDATIONS} more in report.json")
    else:
        lines += ["no recommendation:"] + [f"  {note}" for note in report.notes[-1:]]
    # Long notes are wrapped (matplotlib does not); recommendations are their action only, short.
    lines = [part for line in lines for part in textwrap.wrap(line, WRAP, subsequent_indent="    ") or [""]]
    for row, line in enumerate(lines):
        axes.text(0.0, 1.0 - row / max(len(lines), 6), line, transform=axes.transAxes, va="top", fontsize=10)
