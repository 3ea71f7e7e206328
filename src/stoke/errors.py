"""One error hierarchy for stoke.

Every message is one sentence that says what is wrong, where (file, shard, sample index) and what to do.
The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``; Python callers catch
:class:`StokeError` or a subclass.

Example:
    >>> try:
    ...     raise NotADatasetError("/data/x is not a stoke dataset (no manifest.json)")
    ... except StokeError as error:
    ...     print(error)
    /data/x is not a stoke dataset (no manifest.json)
"""

from __future__ import annotations

from typing import Any


class StokeError(Exception):
    """Base of every error stoke raises on purpose.

    ``ends_epoch`` marks an error that is not one sample's fault (the machine's, such as a full cache
    disk): raised while loading a sample, it stops the Loader's epoch with itself instead of quarantining
    the sample, and the Loader keeps its position, so the next ``iter()`` retries from the first batch not
    handed out.
    """

    exit_code = 2
    ends_epoch = False


def keeps_epoch(error: BaseException) -> bool:
    """Whether ``error``, raised while a batch was made, is nobody's sample's: the machine's (``ends_epoch``)
    or the user's (an interrupt, such as Ctrl-C in the loop's thread). The Loader raises it as it is and
    keeps its position, so the next ``iter()`` retries from the first batch not handed out.

    >>> keeps_epoch(KeyboardInterrupt()), keeps_epoch(SampleError("sample 3: damaged")), keeps_epoch(OSError())
    (True, False, False)
    """
    return getattr(error, "ends_epoch", False) or not isinstance(error, Exception)


class ConfigError(StokeError, ValueError):
    """An argument or combination of arguments that cannot work: the caller's to fix.

    Every bad argument or setting stoke reports is a ConfigError, whatever was wrong with it, its value or
    its type (``Map(5)``: not a function), so that one ``except ConfigError`` catches them all and the CLI
    prints each as one line. It is a ``ValueError`` too, so ``except ValueError`` keeps working; it is
    deliberately not a ``TypeError``: a wrong type among the arguments is still a wrong argument.

    Built-in errors stay where Python's protocols expect them: ``IndexError`` and ``TypeError`` from
    ``__getitem__`` (iteration and ``numpy``-style indexing rely on them), ``KeyError`` from a lookup by
    name, ``AttributeError`` from a module's ``__getattr__``, ``ValueError`` from ``strict_json.loads``
    (a ``json.loads`` twin). ``tests/test_errors.py`` keeps the list of them and fails on any other.
    """


class MissingExtra(ConfigError):  # noqa: N818 - it names what is missing, like the extra it asks for
    """A feature needs an optional library this install lacks; the message names the extra that brings it.

    ``module`` is the module that could not be imported and ``extra`` the ``stoke[...]`` extra to install
    (``stoke.extras.require`` raises it).
    """

    def __init__(self, message: str, module: str = "", extra: str = "") -> None:
        super().__init__(message)
        self.module, self.extra = module, extra

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.module, self.extra)


class NotADatasetError(StokeError):
    """A path that is not (or not yet) a packed dataset."""


class FormatError(StokeError):
    """Bytes on disk that do not follow ``docs/format.md``: a damaged manifest, shard or sample.

    ``reason`` is the cause without the place (``"its offsets are damaged"``), for a caller that names the
    place its own way, such as the :class:`SampleError` ``stoke.read`` raises for a damaged sample; where
    the raiser gives none it is the whole message. It survives pickling (a worker process's error).

    Example:
        >>> error = FormatError("sample 3 of shard-000000.stk has damaged offsets", reason="its offsets are damaged")
        >>> error.reason, FormatError("the manifest is not JSON").reason
        ('its offsets are damaged', 'the manifest is not JSON')
    """

    def __init__(self, *args: Any, reason: str | None = None) -> None:
        super().__init__(*args)
        self.reason = str(self) if reason is None else reason

    def __reduce__(self) -> tuple[Any, ...]:  # every attribute, whatever a subclass's __init__ takes
        return _rebuilt, (type(self), self.args, self.__dict__)


def _rebuilt(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class VersionError(FormatError):
    """A dataset written in a format version this stoke does not read."""


class SourceError(StokeError):
    """A source that cannot be packed at all (as opposed to one bad item, which is quarantined)."""


class PackError(StokeError):
    """A pack that cannot start or finish (existing output, changed source on resume, ...)."""


class AppendError(PackError):
    """An append (``stoke pack SOURCE DATASET --append``) that cannot add the source to the dataset, so it added
    nothing: fields, class lists, a tokenizer or a table's cleaning that differ from the dataset's, another
    process appending to it, a dataset at a URL. The message names what differs and what to do.
    """


class QuarantineLimitError(PackError):
    """A pack quarantined more of its items than ``max_quarantined`` allows, so it committed nothing.

    ``str(error)`` spells the remedy with ``stoke.pack``'s arguments, ``cli_message`` with the flags of
    ``stoke pack``; ``suggested`` is a ``max_quarantined`` that accepts what was quarantined.
    """

    def __init__(self, message: str, *, cli_message: str, num_quarantined: int, num_items: int, suggested: float):
        super().__init__(message)
        self.cli_message = cli_message
        self.num_quarantined, self.num_items, self.suggested = num_quarantined, num_items, suggested

    def __reduce__(self) -> tuple[Any, ...]:
        details = (self.cli_message, self.num_quarantined, self.num_items, self.suggested)
        return _quarantine_limit_error, (str(self), *details)


def _quarantine_limit_error(message: str, cli: str, quarantined: int, items: int, suggested: float) -> Any:
    return QuarantineLimitError(
        message, cli_message=cli, num_quarantined=quarantined, num_items=items, suggested=suggested
    )


class SampleError(StokeError):
    """A sample that failed while being read, decoded or transformed.

    Carries the dataset ``index`` and, for packed datasets, the ``shard`` file, so the message can say
    where; the original exception is chained as ``__cause__`` with its traceback.
    """

    def __init__(self, message: str, *, index: int | None = None, shard: str | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.shard = shard

    def __reduce__(self) -> tuple[Any, ...]:  # keep index and shard across processes
        return _sample_error, (str(self), self.index, self.shard)


def _sample_error(message: str, index: int | None, shard: str | None) -> SampleError:
    return SampleError(message, index=index, shard=shard)


class ErrorBudgetExceeded(SampleError):  # noqa: N818 - names the condition
    """More samples failed in an epoch than the Loader's ``max_bad_fraction`` allows; names the first."""


class InvalidItem(StokeError):  # noqa: N818 - it names the item, not the failure
    """One source item that cannot be packed; the packer quarantines it with ``code`` and the message.

    ``code`` is a short machine-readable reason (``truncated``, ``not_an_image``, ...) listed in
    ``docs/format.md``; the message is the human sentence.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.code, str(self))
