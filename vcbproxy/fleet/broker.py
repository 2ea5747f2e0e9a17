"""The broker: a Redis URL checked before use, a client, and Redis failures as our errors.

Every fleet command reaches Redis first with a short ping, so a bad URL is a usage error
(exit 2) and an unreachable broker a one-line connection failure (exit 18) before Celery,
which would otherwise retry for minutes, is involved.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TypeVar

import redis
from redis import exceptions as redis_errors

from vcbproxy import errors

SCHEMES = ("redis", "rediss", "unix")
CONNECT_TIMEOUT = 5.0
T = TypeVar("T")


def check_url(url: str | None) -> str:
    """The broker URL, or a usage error saying what is wrong with it."""
    if not url:
        raise errors.UsageError("no broker given: use --broker redis://HOST:6379/0")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise errors.UsageError(
            f"broker {redacted(url)!r}: only Redis is supported (redis://HOST:PORT/DB, "
            f"rediss://, unix://)"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise errors.UsageError(f"broker {redacted(url)!r}: bad port") from exc
    if parts.scheme != "unix" and not parts.hostname:
        raise errors.UsageError(f"broker {redacted(url)!r}: no host name")
    db = parts.path.strip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise errors.UsageError(f"broker {redacted(url)!r}: the database must be a number")
    return url


def redacted(url: str) -> str:
    """The URL without its password (a Redis password must never reach a log or an error)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def client(url: str) -> redis.Redis:
    """A Redis client on the broker; connection failures surface as redis errors."""
    return redis.Redis.from_url(
        check_url(url),
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=30,
        health_check_interval=30,
        decode_responses=True,
    )


@contextlib.contextmanager
def translated(url: str, doing: str) -> Iterator[None]:
    """Redis failures inside the block become a one-line ConnectionFailure (exit 18)."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        raise errors.ConnectionFailure(
            f"cannot reach the broker at {redacted(url)} while {doing}: {_reason(exc)}"
        ) from exc
    except redis_errors.AuthenticationError as exc:
        raise errors.ConnectionFailure(
            f"the broker at {redacted(url)} refused the credentials: {exc}"
        ) from exc
    except redis_errors.RedisError as exc:
        raise errors.ConnectionFailure(
            f"the broker at {redacted(url)} failed while {doing}: {exc}"
        ) from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # redis-py says "Error 111 connecting to 127.0.0.1:6379. Connection refused."
    return text.rstrip(".")


def ping(url: str) -> redis.Redis:
    """A client on a broker that answers; ConnectionFailure (exit 18) otherwise."""
    r = client(url)
    with translated(url, "connecting"):
        r.ping()
    return r


def patiently(url: str, doing: str, fn: Callable[[], T], *, patience: float) -> T:
    """``fn()``, retried while the broker is unreachable for up to ``patience`` seconds
    (a broker restarting mid-run); then ConnectionFailure."""
    deadline = time.monotonic() + patience
    delay = 0.2
    while True:
        try:
            with translated(url, doing):
                return fn()
        except errors.ConnectionFailure:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
