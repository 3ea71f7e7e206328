"""Retry: transient errors are retried with growing, jittered delays; permanent ones are raised at once."""

from __future__ import annotations

import errno

import pytest

from stoke.errors import FormatError
from stoke.storage import DownloadMismatch, RemoteError, Retry
from stoke.storage.retry import is_transient


class StatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"status {status}")
        self.status = status


def failing(errors):
    calls = []

    def function():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "done"

    return function, calls


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (StatusError(503), True),
        (StatusError(429), True),
        (StatusError(404), False),
        (StatusError(403), False),
        (FileNotFoundError("gone"), False),
        (PermissionError("denied"), False),
        (DownloadMismatch("cut", short=True), True),
        (FormatError("bad manifest"), False),
        (OSError(errno.ENOSPC, "No space left on device"), False),  # the local disk: another try meets it again
        (OSError(errno.EDQUOT, "Disk quota exceeded"), False),
        (OSError(errno.EROFS, "Read-only file system"), False),
        (OSError(errno.EIO, "Input/output error"), True),
        (ValueError("a bug"), False),
    ],
)
def test_which_errors_are_transient(error, transient):
    assert is_transient(error) is transient


def test_a_refused_connection_reported_as_not_found_is_transient():
    try:
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError as cause:
            raise FileNotFoundError("http://host/ds/manifest.json") from cause
    except FileNotFoundError as error:
        assert is_transient(error)


def test_transient_errors_are_retried_until_success():
    function, calls = failing([ConnectionResetError(), StatusError(502)])
    assert Retry(attempts=3, base_delay=0.0).call(function, "x") == "done" and len(calls) == 3


def test_exhausted_retries_give_one_error_naming_the_read_and_the_attempts():
    function, calls = failing([ConnectionResetError("reset by peer")] * 4)
    with pytest.raises(
        RemoteError, match=r"reading shard-000003\.stk failed 4 times, the last with ConnectionResetError"
    ):
        Retry(attempts=4, base_delay=0.0).call(function, "shard-000003.stk")
    assert len(calls) == 4


def test_a_permanent_error_is_not_retried():
    function, calls = failing([PermissionError("denied")])
    with pytest.raises(RemoteError, match="check the URL and access"):
        Retry(attempts=5, base_delay=0.0).call(function, "x")
    assert len(calls) == 1


def test_a_checksum_mismatch_in_every_attempt_is_a_damaged_copy():
    function, _ = failing([DownloadMismatch("k does not match its checksum", short=False)] * 2)
    with pytest.raises(DownloadMismatch, match=r"\(2 downloads\); the remote copy is damaged"):
        Retry(attempts=2, base_delay=0.0).call(function, "x")


def test_delays_double_up_to_the_cap_with_jitter():
    retry = Retry(attempts=10, base_delay=0.1, max_delay=1.0)
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (3, 0.8), (6, 1.0)]:
        delays = [retry.delay(attempt) for _ in range(50)]
        assert all(ceiling * 0.5 <= delay <= ceiling for delay in delays)
