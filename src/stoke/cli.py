"""The ``stoke`` command: parse, call the API, print. Errors are one line and an exit code, never a traceback.

Exit codes: 0 success; 1 ``verify`` found damage; 2 a stoke error (bad input, not a dataset, ...);
3 an unexpected error (a bug: ``STOKE_DEBUG=1`` shows the traceback); 130 interrupted by SIGINT (Ctrl-C),
143 by SIGTERM (``kill``, a job scheduler, a supervisor): workers are stopped first, and an interrupted pack
continues with ``--resume``.

Example:
    $ stoke pack photos/ photos.stoke --image-mode keep --max-side 256
    $ stoke inspect photos.stoke
    $ stoke verify photos.stoke --json
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from stoke._version import __version__
from stoke.errors import ConfigError, StokeError
from stoke.lifecycle import interruption, sigterm_raises

F = TypeVar("F", bound=Callable[..., Any])


def _one_line_errors(command: F) -> F:
    """Turn every failure into one sentence on stderr and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with sigterm_raises():  # SIGTERM cleans up as Ctrl-C does: workers stopped, a state --resume continues
                return command(*args, **kwargs)
        except StokeError as error:
            _fail(str(error), error.exit_code)
        except KeyboardInterrupt as error:
            name, code = interruption(error)
            _fail(f"interrupted ({name})", code)
        except OSError as error:
            where = f" ({error.filename})" if error.filename else ""
            _fail(f"{error.strerror or error}{where}", 2)
        except Exception as error:
            if os.environ.get("STOKE_DEBUG"):
                raise
            _fail(
                f"unexpected {type(error).__name__}: {error} "
                "(a bug in stoke; rerun with STOKE_DEBUG=1 for the traceback)",
                3,
            )

    return wrapper  # type: ignore[return-value]


def _fail(message: str, code: int) -> None:
    click.echo(f"stoke: error: {message}", err=True)
    sys.exit(code)


def _parse_size(text: str) -> int:
    """'64MB', '512k', '1GiB' or a plain number of bytes."""
    units = {
        "": 1,
        "b": 1,
        "k": 1 << 10,
        "kb": 1 << 10,
        "kib": 1 << 10,
        "m": 1 << 20,
        "mb": 1 << 20,
        "mib": 1 << 20,
        "g": 1 << 30,
        "gb": 1 << 30,
        "gib": 1 << 30,
    }
    stripped = text.strip().lower()
    number = stripped.rstrip("abgikm")
    unit = stripped[len(number) :]
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise click.BadParameter(f"{text!r} is not a size such as 64MB") from None
    if value < 1:
        raise click.BadParameter(f"{text!r} must be at least one byte")
    return int(value)


IMAGE_MODE = click.option(
    "--image-mode",
    type=click.Choice(["keep", "jpeg", "png", "raw"]),
    default="keep",
    show_default=True,
    help="Store images as the source's bytes, re-encoded as JPEG or PNG, or as raw pixels.",
)
MAX_SIDE = click.option(
    "--max-side", type=click.IntRange(min=1), default=None, help="Shrink larger images at pack time."
)


class _StokeGroup(click.Group):
    """The ``stoke`` group: click's own usage errors (a missing argument, a bad option value, an unknown
    option or command) print as every stoke error does, one line ``stoke: error: ...`` naming the
    ``--help`` to read, with exit code 2, instead of click's block of usage, hint and error."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            outcome = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as error:
            error.show()  # a bare `stoke`: the help is the answer
            sys.exit(error.exit_code)
        except click.UsageError as error:
            _fail(_usage_line(error), error.exit_code)
        except click.ClickException as error:
            _fail(" ".join(error.format_message().split()), error.exit_code)
        except click.Abort:
            _fail("interrupted (SIGINT)", 130)
        # Not standalone, click returns --help's and --version's exit code, or the command's None.
        sys.exit(outcome if isinstance(outcome, int) and not isinstance(outcome, bool) else 0)


def _usage_line(error: click.UsageError) -> str:
    """Click's usage error as one clause in stoke's style, pointing at the command's ``--help``."""
    message = " ".join(error.format_message().split()).rstrip(".")
    if message[:1].isupper() and message[1:2].islower():  # "Missing argument" but not "JSON ..."
        message = message[0].lower() + message[1:]
    where = error.ctx.command_path if error.ctx is not None else "stoke"
    return f"{message}; see `{where} --help`"


@click.group(cls=_StokeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stoke")
def main() -> None:
    """Pack a dataset once, then feed PyTorch training at the speed of the hardware."""


@main.command("pack")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Processes (default: all cores).")
@click.option(
    "--engine",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="Where shard tasks run: processes on this machine, or a Dask cluster.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="With --engine dask: the scheduler's address (default: a LocalCluster of --workers processes).",
)
@IMAGE_MODE
@click.option(
    "--color-mode",
    type=click.Choice(["RGB", "L"]),
    default="RGB",
    show_default=True,
    help="What images decode to.",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=90,
    show_default=True,
    help="JPEG quality when re-encoding.",
)
@MAX_SIDE
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=None,
    help="Quarantine images with more pixels (default: Pillow's 89,478,485).",
)
@click.option(
    "--shard-size",
    "shard_bytes",
    default="64MB",
    show_default=True,
    callback=lambda context, parameter, value: _parse_size(value),
    help="Target shard size.",
)
@click.option("--shard-items", type=click.IntRange(min=1), default=None, help="Exact source items per shard.")
@click.option("--path-column", default=None, help="Listing column holding image paths (default: path, image, file...).")
@click.option("--label-column", default="label", show_default=True, help="Listing column of class names.")
@click.option("--text-field", default=None, help="Pack text: the JSONL key holding each document (default: text).")
@click.option(
    "--tokenizer",
    type=click.Choice(["byte", "bpe"]),
    default=None,
    help="Pack text tokenized byte-level or with a BPE trained on it (default for .txt and --text-field: byte; "
    "with --append: the dataset's own tokenizer, never retrained).",
)
@click.option(
    "--vocab-size", type=click.IntRange(min=258), default=8000, show_default=True, help="BPE vocabulary size."
)
@click.option(
    "--missing",
    default=None,
    help="Tables: every column's missing-value policy: median (default: categories get their most frequent value, "
    "text an empty string), mean, mode, knn, constant=VALUE, or drop (rows with gaps are quarantined).",
)
@click.option(
    "--missing-col", "missing_col", multiple=True, metavar="COL=POLICY", help="Tables: one column's policy (repeat)."
)
@click.option(
    "--type",
    "column_types",
    multiple=True,
    metavar="COL=TYPE",
    help="Tables: a column's type: numeric, int, categorical or text (repeat).",
)
@click.option(
    "--max-quarantined",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    metavar="FRACTION",
    help="Fail, committing nothing, when more than this share of the source's items is quarantined; "
    "--resume with a larger value accepts them without redoing shards (1 allows any number).",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted pack without redoing finished shards.")
@click.option("--overwrite", is_flag=True, help="Replace the dataset (or unfinished pack) in OUT.")
@click.option(
    "--append",
    is_flag=True,
    help="Add SOURCE's items to the dataset in OUT as its next version, encoded as the dataset's "
    "(docs/growing.md); rerun after a crash to finish it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_one_line_errors
def pack_command(
    source: Path,
    out: Path,
    as_json: bool,
    no_progress: bool,
    text_field: str | None,
    tokenizer: str | None,
    vocab_size: int,
    **options: Any,
) -> None:
    """Pack SOURCE (an image folder, a .csv/.jsonl listing, text: .txt, a folder of .txt with --tokenizer,
    .jsonl with --text-field) into the dataset directory OUT, or with --append add it to the dataset there."""
    from stoke.errors import PackError, QuarantineLimitError
    from stoke.format.fields.image_codec import DEFAULT_MAX_PIXELS
    from stoke.pack import pack

    if options["max_pixels"] is None:
        options["max_pixels"] = DEFAULT_MAX_PIXELS
    packed: Any = source
    if text_field is not None or tokenizer is not None or source.suffix.lower() == ".txt":
        from stoke.sources import TextSource

        packed = TextSource(
            source,
            text_field=text_field or "text",
            tokenizer=tokenizer,  # None: byte-level for a pack, the dataset's own for an append
            vocab_size=vocab_size,
            label_column=options["label_column"],
        )
    packed = _table_source(
        packed, options.pop("missing"), options.pop("missing_col"), options.pop("column_types"), options
    )
    try:
        result = pack(packed, out, progress=not no_progress and not as_json, **options)
    except QuarantineLimitError as error:  # the same sentence, with this command's flags
        raise PackError(error.cli_message) from None
    click.echo(result.to_json() if as_json else str(result))


def _table_source(
    source: Any, missing: str | None, missing_col: tuple[str, ...], column_types: tuple[str, ...], options: dict
) -> Any:
    """A TableSource when table options are given; refuses them for sources that are not tables."""
    if missing is None and not missing_col and not column_types:
        return source
    from stoke.sources.table import TableSource, is_table

    if not isinstance(source, Path) or not source.is_file() or not is_table(source, options["path_column"]):
        raise ConfigError(
            "--missing, --missing-col and --type apply to tables (.csv/.tsv without image paths, .parquet)"
        )

    def pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
        parsed = dict(value.split("=", 1) for value in values if "=" in value)
        if len(parsed) != len(values):
            raise ConfigError(f"{option} takes COLUMN=VALUE, got {list(values)}")
        return parsed

    return TableSource(
        source,
        types=pairs(column_types, "--type"),
        missing=missing,  # None: the default policy, which keeps every row
        missing_columns=pairs(missing_col, "--missing-col"),
        label=options["label_column"],
    )


@main.command("inspect")
@click.argument("dataset")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Show version N of a dataset that grew (default: the newest).",
)
@_one_line_errors
def inspect_command(dataset: str, as_json: bool, version: int | None) -> None:
    """Show what DATASET (a directory or a URL) holds: schema, counts, sizes, classes, source, versions."""
    from stoke.inspect import show, summarize, summary_renderables
    from stoke.read import open as open_dataset

    summary = summarize(open_dataset(dataset, version=version))
    if as_json:
        click.echo(json.dumps(summary))
    else:
        show(summary_renderables(summary))


@main.command("split")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--train", type=click.FloatRange(0, 1), default=None, help="Training share.")
@click.option("--val", type=click.FloatRange(0, 1), default=None, help="Validation share.")
@click.option("--test", type=click.FloatRange(0, 1), default=None, help="Test share.")
@click.option("--seed", type=int, default=0, show_default=True, help="The same seed gives the same splits.")
@click.option(
    "--fresh",
    is_flag=True,
    help="Split every sample again, even of a dataset that grew since its splits were made (samples move).",
)
@click.option(
    "--stratify", default=None, metavar="FIELD", help="Keep the class shares of FIELD (the label) in each split."
)
@click.option(
    "--stratify-bins",
    type=click.IntRange(min=2),
    default=None,
    metavar="N",
    help="Stratify a number (--stratify FIELD) by N quantile bins of it.",
)
@click.option("--dedupe", is_flag=True, help="Split one of each group of identical samples; leave the rest out.")
@click.option(
    "--content",
    multiple=True,
    metavar="FIELD",
    help="A field that makes a sample's content, for leaks and --dedupe (repeat; default: docs/splits.md).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_one_line_errors
def split_command(
    dataset: Path,
    train: float | None,
    val: float | None,
    test: float | None,
    seed: int,
    stratify: str | None,
    stratify_bins: int | None,
    dedupe: bool,
    content: tuple[str, ...],
    as_json: bool,
    fresh: bool,
) -> None:
    """Store train/val/test index views inside DATASET (no copy) and report content leaking across them.

    Shares: none given means 0.8/0.1/0.1. Shares given that add up to 1 leave the others at 0; shares
    that add up to less give the rest to the first of train, val, test not given (--train 0.9: val 0.1,
    no test). --stratify takes an int or text field, or a number with --stratify-bins. On a dataset that
    grew since its splits were made, only the samples added since are split, with the stored settings
    (options left out take them), and no sample moves; --fresh splits every sample again.
    """
    from click.core import ParameterSource

    from stoke.inspect import show, split_tables
    from stoke.prepare.split import fill_fractions, growing_settings, make_splits
    from stoke.read import open as open_dataset

    opened = open_dataset(dataset)
    stored = None if fresh else growing_settings(opened)
    if stored is not None:  # options left out are the ones the splits were made with
        context = click.get_current_context()
        if context.get_parameter_source("seed") in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            seed = stored["seed"]
        if context.get_parameter_source("dedupe") in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            dedupe = stored["dedupe"]
        stratify = stratify if stratify is not None else stored["stratify"]
        stratify_bins = stratify_bins if stratify_bins is not None else stored["stratify_bins"]
        content = content or tuple(stored.get("content") or ())
    if stratify_bins is not None and stratify is None:
        raise ConfigError("--stratify-bins bins the --stratify field; name it with --stratify FIELD")
    shares = {"train": train, "val": val, "test": test}
    no_shares = all(share is None for share in shares.values())
    fractions = stored["fractions"] if stored is not None and no_shares else fill_fractions(shares)
    report = make_splits(
        opened,
        fractions,
        seed=seed,
        stratify=stratify,
        dedupe=dedupe,
        stratify_bins=stratify_bins,
        content=list(content) or None,
        fresh=fresh,
    )
    if as_json:
        click.echo(report.to_json())
        return
    balance = report.to_dict()["balance"]
    names = {str(key): name for key, name in report.class_names.items()}
    lines: list[Any] = [*split_tables(report.counts, balance, names), ""]
    if report.added or report.kept:
        lines.append(
            f"kept the split of each of the {report.kept:,} samples already split (none moved); split the "
            f"{report.added:,} samples appended since"
        )
    if report.dropped:
        shown = ", ".join(map(str, report.dropped[:20])) + (", ..." if len(report.dropped) > 20 else "")
        lines.append(f"left out {len(report.dropped):,} duplicate samples (--dedupe): {shown}")
    more = len(report.content) - 6
    compared = ", ".join(report.content[:6]) + (f" and {more} more" if more > 0 else "")
    if not report.content:
        lines.append("leakage: not checked: every field is a label or names a sample; name content with --content")
    elif report.leaks:
        lines.append(
            f"leakage: {len(report.leaks):,} groups of identical samples span splits "
            f"(compared: {compared}); run with --dedupe to fix"
        )
        lines.extend(f"  content {leak['content']}: {leak['samples']}" for leak in report.leaks[:20])
    else:
        lines.append(f"leakage: no identical samples in different splits (compared: {compared})")
    show(lines)


@main.command("verify")
@click.argument("dataset")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads (default: all cores).")
@click.option("--no-progress", is_flag=True, help="No progress bar (there is none with --json or off a terminal).")
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=None,
    help="Larger images count as damaged (default: Pillow's 89,478,485; the dataset's own limit can only lower it).",
)
@_one_line_errors
def verify_command(dataset: str, as_json: bool, threads: int | None, no_progress: bool, max_pixels: int | None) -> None:
    """Recompute every checksum and decode every sample of DATASET (a directory or a URL); exit 1 listing
    damaged samples."""
    from stoke.verify import verify

    report = verify(dataset, threads, progress=not no_progress and not as_json, max_pixels=max_pixels)
    click.echo(report.to_json() if as_json else str(report))
    if not report.ok:
        sys.exit(1)


@main.command("bench")
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option(
    "--images",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Size of the generated benchmark set (when no SOURCE is given).",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=3, show_default=True, help="Measured epochs (after one warm-up)."
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Cores to use (default: all).")
@IMAGE_MODE
@MAX_SIDE
@click.option("--no-baseline", is_flag=True, help="Skip the DataLoader baseline.")
@click.option(
    "--user-transform",
    is_flag=True,
    help="Add a GIL-bound Python transform to the baseline and to stoke, and measure thread and process workers.",
)
@click.option(
    "--workers",
    type=click.Choice(["thread", "process", "both"]),
    default=None,
    help="stoke's workers to measure [default: both with --user-transform, else thread].",
)
@click.option(
    "--dataset",
    "remote",
    default=None,
    metavar="URL",
    help="Measure a remote dataset (s3://, gs://, https://): cold cache, warm cache and a local copy.",
)
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object of the results.")
@_one_line_errors
def bench_command(
    source: Path | None,
    images: int,
    epochs: int,
    threads: int | None,
    image_mode: str,
    max_side: int | None,
    no_baseline: bool,
    user_transform: bool,
    workers: str | None,
    remote: str | None,
    as_json: bool,
) -> None:
    """Measure stoke against the DataLoader baseline and the decode-only ceiling, on SOURCE or generated JPEGs."""
    from stoke.bench.run import format_remote_report, format_report, run_bench, run_remote_bench

    if remote is not None:
        report = run_remote_bench(remote, threads=threads, log=lambda line: click.echo(line, err=as_json))
        click.echo(json.dumps(report) if as_json else format_remote_report(report))
        return

    result = run_bench(
        source,
        images=images,
        epochs=epochs,
        threads=threads,
        image_mode=image_mode,
        max_side=max_side,
        baseline=not no_baseline,
        user_transform=user_transform,
        workers=workers,
        log=lambda line: click.echo(line, err=as_json),
    )
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(format_report(result))


@main.command("train")
@click.argument("dataset")
@click.option("--model", default="resnet18", show_default=True, help="small-cnn, resnet18 or resnet50.")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-3, show_default=True, help="Peak LR.")
@click.option(
    "--amp",
    type=click.Choice(["auto", "bf16", "fp16", "off"]),
    default="auto",
    show_default=True,
    help="Mixed precision; auto: bf16 (fp16 on older GPUs) on CUDA, off on the CPU.",
)
@click.option("--channels-last/--no-channels-last", default=True, show_default=True, help="On CUDA.")
@click.option("--compile", "compile_model", is_flag=True, help="Run the model through torch.compile.")
@click.option("--logdir", type=click.Path(path_type=Path), default=None, help="Write TensorBoard scalars here.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="Checkpoint directory (last.pt).")
@click.option(
    "--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True, help="Steps; 0: epoch ends only."
)
@click.option("--resume", is_flag=True, help="Continue exactly from the checkpoint in --checkpoint, if there is one.")
@click.option("--val-split", default="val", show_default=True, help="The split to validate on, or none.")
@click.option("--image-size", type=click.IntRange(min=1), default=224, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: the GPU when there is one).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line of the results.")
@_one_line_errors
def train_command(dataset: str, as_json: bool, no_progress: bool, **options: Any) -> None:
    """Train a model on DATASET (a directory or a URL; its train split, validating on --val-split;
    docs/training.md)."""
    from stoke.train.job import run_training

    progress = not no_progress and not as_json and sys.stderr.isatty()
    summary = run_training(dataset, progress=progress, log=lambda line: click.echo(line, err=as_json), **options)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        accuracy = f"{summary['val_accuracy']:.2%}" if summary["val_accuracy"] is not None else "n/a"
        click.echo(
            f"trained {summary['model']} for {summary['steps']:,} steps on {summary['device']} (amp {summary['amp']}) "
            f"in {summary['seconds']:.1f} s: val accuracy {accuracy}, {summary['samples_per_s']:,.0f} samples/s, "
            f"waited for data {summary['data_wait_fraction']:.1%} of the time"
        )


@main.command("profile", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("stoke-profile"),
    show_default=True,
    help="Where each Loader writes report.json, profile.png and TensorBoard events.",
)
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True, help="Steps to profile.")
@click.option(
    "--headspace",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Steps then fed from a cached batch, to measure the loop with free input (they repeat one batch).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the reports as one JSON list.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@_one_line_errors
def profile_command(out: Path, steps: int, headspace: int, as_json: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND (after --) with every stoke Loader profiled; print where the time goes and what to change."""
    from stoke.profile.report import format_table
    from stoke.profile.run import run_script

    code, reports = run_script(command, out, steps, headspace)
    if as_json:
        click.echo(json.dumps([{"directory": str(where), **report.to_dict()} for where, report in reports]))
    elif not reports:
        click.echo("stoke profile: the command delivered no batch from a stoke Loader; nothing to report", err=True)
    for where, report in [] if as_json else reports:
        click.echo(f"stoke profile: {where}")
        click.echo(format_table(report))
    sys.exit(code)


@main.command("demo")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line of the results.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write (default: ~/.cache/stoke/demo).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="[default: 12; 30 with --tabular]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--tabular", is_flag=True, help="Clean breast-cancer data with each missing-value policy; compare accuracy."
)
@_one_line_errors
def demo_command(as_json: bool, out: Path | None, epochs: int | None, seed: int, tabular: bool) -> None:
    """Pack scikit-learn's digits, train a small CNN with the Loader, report speed and accuracy."""
    if tabular:
        from stoke.demo_tabular import run_tabular_demo

        report = run_tabular_demo(out, epochs=epochs or 30, seed=seed, log=lambda line: click.echo(line, err=as_json))
        if as_json:
            click.echo(json.dumps(report))
        return
    from stoke.demo import run_demo

    summary = run_demo(out, epochs=epochs or 12, seed=seed, log=click.echo)
    if as_json:
        click.echo(json.dumps(summary))


if __name__ == "__main__":
    main()
