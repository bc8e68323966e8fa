"""One Hub client for publisher: huggingface_hub's ``HfApi`` with retries, timeouts, one-line errors, no token.

Fetching a source and publishing to the ``hf`` target both go through :class:`HubClient`:

- transient failures (server errors, rate limits, dropped or timed-out connections) are retried
  ``attempts`` times (env ``PUBLISHER_HF_ATTEMPTS``, default 4), waiting ``backoff_s`` seconds
  (``PUBLISHER_HF_BACKOFF``, default 2), then twice as long each time; other errors fail at once;
- every request has a connect and a read timeout, enforced in the HTTP transport so that no call
  of the client can do without one (``PUBLISHER_HF_CONNECT_TIMEOUT``, default 10 s;
  ``PUBLISHER_HF_READ_TIMEOUT``, default 60 s);
- a failure becomes one line naming what was tried and why it failed, in the caller's words for
  the errors it knows (``hints``), and the token, if the client's error repeats it, reads ``***``.

The token comes from the caller, ``HF_TOKEN`` or the huggingface_hub login.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TypedDict, TypeVar

import httpx2
from huggingface_hub import HfApi, get_token, set_client_factory
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.utils._http import hf_request_event_hook

from publisher.errors import PublisherError

T = TypeVar("T")
# What a caller says about the failures it knows: an exception type (found anywhere in the chain
# of causes) or an HTTP status, mapped to the reason to show.
Hints = Mapping[type[BaseException] | int, str]

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _causes(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _status(err: BaseException) -> int | None:
    for cause in _causes(err):
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            return int(cause.response.status_code)
    return None


def is_transient(err: BaseException) -> bool:
    """Server errors, rate limits and broken connections are worth retrying; other 4xx answers are not."""
    if any(isinstance(c, OfflineModeIsEnabled) for c in _causes(err)):
        return False
    status = _status(err)
    if status is not None:
        return status in TRANSIENT_STATUS or status >= 500
    return any(isinstance(c, (httpx2.TransportError, ConnectionError, TimeoutError)) for c in _causes(err))


N = TypeVar("N", int, float)


def _env_number(name: str, default: N, kind: type[N], error: type[PublisherError]) -> N:
    """A number from the environment (retry tuning for slow links and for tests), else ``default``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise error(f"{name}={raw!r} is not a number; unset it or give e.g. {default}") from None
    if value < 0:
        raise error(f"{name}={raw!r} is negative; give a number of zero or more")
    return value


def _timeout_s(name: str, default: float, error: type[PublisherError]) -> float:
    seconds = _env_number(name, default, float, error)
    if seconds == 0:
        raise error(f"{name}=0 would give up at once; give the seconds to wait, e.g. {default:g}")
    return seconds


class _TimeoutTransport(httpx2.HTTPTransport):
    """Gives every request these timeouts, whatever the caller asked for (some client calls pass ``None``)."""

    def __init__(self, connect_s: float, read_s: float) -> None:
        super().__init__()
        self.connect_s = connect_s
        self.read_s = read_s

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts = {"connect": self.connect_s, "read": self.read_s, "write": self.read_s, "pool": self.connect_s}
        request.extensions = {**request.extensions, "timeout": timeouts}
        try:
            return super().handle_request(request)
        except httpx2.TimeoutException as err:
            if isinstance(err, (httpx2.ConnectTimeout, httpx2.PoolTimeout)):
                what, seconds, env = "could not connect to", self.connect_s, "PUBLISHER_HF_CONNECT_TIMEOUT"
            elif isinstance(err, httpx2.WriteTimeout):
                what, seconds, env = "could not send to", self.read_s, "PUBLISHER_HF_READ_TIMEOUT"
            else:
                what, seconds, env = "no answer from", self.read_s, "PUBLISHER_HF_READ_TIMEOUT"
            url = request.url.copy_with(query=None)
            raise type(err)(f"{what} {request.method} {url} within {seconds:g} s ({env})", request=request) from err


class HubOptions(TypedDict, total=False):
    """What a user of the client may set (each ``None`` or absent: from the environment, else the default)."""

    endpoint: str | None
    token: str | None
    attempts: int | None
    backoff_s: float | None
    connect_timeout_s: float | None
    read_timeout_s: float | None
    sleep: Callable[[float], None]


class HubClient:
    """``HfApi`` (``.api``) with publisher's retries, timeouts and one-line, redacted errors (see the module)."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        token: str | None = None,
        attempts: int | None = None,
        backoff_s: float | None = None,
        connect_timeout_s: float | None = None,
        read_timeout_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        error: type[PublisherError] = PublisherError,
        hints: Hints | None = None,
        retry_hint: str = "",
        offline_hint: str = "HF_HUB_OFFLINE is set; unset it to reach the Hub",
    ) -> None:
        self.token = token or get_token()
        self.api = HfApi(endpoint=endpoint, token=self.token)
        self.attempts = max(
            1, attempts if attempts is not None else _env_number("PUBLISHER_HF_ATTEMPTS", 4, int, error)
        )
        self.backoff_s = backoff_s if backoff_s is not None else _env_number("PUBLISHER_HF_BACKOFF", 2.0, float, error)
        self.connect_timeout_s = connect_timeout_s or _timeout_s("PUBLISHER_HF_CONNECT_TIMEOUT", 10.0, error)
        self.read_timeout_s = read_timeout_s or _timeout_s("PUBLISHER_HF_READ_TIMEOUT", 60.0, error)
        self.sleep = sleep
        self.error = error
        self.hints = dict(hints or {})
        self.retry_hint = retry_hint
        self.offline_hint = offline_hint
        connect_s, read_s = self.connect_timeout_s, self.read_timeout_s
        # huggingface_hub keeps one shared client; this makes it (again) with our timeouts.
        set_client_factory(
            lambda: httpx2.Client(
                transport=_TimeoutTransport(connect_s, read_s),
                timeout=httpx2.Timeout(read_s, connect=connect_s),  # for transports mounted for proxies
                event_hooks={"request": [hf_request_event_hook]},
                follow_redirects=True,
            )
        )

    @property
    def endpoint(self) -> str:
        """The Hub URL requests go to."""
        return str(self.api.endpoint).rstrip("/")

    def redact(self, text: str) -> str:
        """``text`` with the token, if it appears, replaced by ``***``."""
        return text.replace(self.token, "***") if self.token else text

    def reason(self, err: BaseException, hints: Hints | None = None) -> str:
        """Why ``err`` happened, in one line: a hint for it (this call's, then the client's), else what the Hub
        or the network said."""
        for key, hint in {**(hints or {}), **self.hints}.items():
            if isinstance(key, int) and _status(err) == key:
                return hint
            if isinstance(key, type) and any(isinstance(c, key) for c in _causes(err)):
                return hint
        status = _status(err)
        timeout = next((c for c in _causes(err) if isinstance(c, httpx2.TimeoutException)), None)
        if timeout is not None:
            return str(timeout)
        if any(isinstance(c, OfflineModeIsEnabled) for c in _causes(err)):
            return self.offline_hint
        if status is not None:
            server = next(
                (c.server_message for c in _causes(err) if isinstance(c, HfHubHTTPError) and c.server_message), None
            )
            detail = (server or "").strip().splitlines()[0][:200] if server and server.strip() else ""
            return f"HTTP {status}" + (f": {detail}" if detail else "")
        # snapshot_download wraps a network failure in LocalEntryNotFoundError; the cause says more
        cause = next((c for c in _causes(err) if not isinstance(c, LocalEntryNotFoundError)), err)
        return f"{type(cause).__name__}: {str(cause).splitlines()[0][:200] if str(cause) else 'no message'}"

    def failure(self, what: str, err: BaseException, attempts: int = 1, hints: Hints | None = None) -> PublisherError:
        """The one-line error for ``what`` failing with ``err`` after ``attempts`` tries."""
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        hint = f"; {self.retry_hint}" if self.retry_hint and is_transient(err) else ""
        return self.error(self.redact(f"{what}{tries}: {self.reason(err, hints)}{hint}"))

    def call(self, what: str, fn: Callable[[], T], hints: Hints | None = None) -> T:
        """Run ``fn``, retrying transient failures with exponential backoff; other errors fail at once.

        A :class:`PublisherError` raised by ``fn`` itself passes through unchanged.
        """
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except PublisherError:
                raise
            except Exception as err:
                if not is_transient(err) or attempt == self.attempts:
                    raise self.failure(what, err, attempt, hints) from None
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover
