"""The Hugging Face Hub target, through ``huggingface_hub.HfApi``.

One ``create_commit`` per branch adds the GGUFs and README.md together: the client uploads the
LFS objects first and commits only when all are stored, so a failed upload leaves the branch as it
was, and a re-run sends only objects the Hub does not have yet (its LFS batch answer says which).

Before any commit, ``store_files`` uploads a branch's LFS objects (``preupload_lfs_files``) and
checks the sha256 the client computed from the bytes it read against the tested one.

Every request has a connect and a read timeout, enforced in the HTTP transport so that no call of
the client can do without one; a Hub that accepts a connection and never answers ends in a
timeout, which is retried like a dropped connection.

The token comes from ``HF_TOKEN`` or the huggingface_hub login. It is never printed: every message
built from a client error goes through :func:`redact`, and the token is not part of any plan,
manifest or commit text.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx2
from huggingface_hub import CommitOperationAdd, HfApi, get_token, set_client_factory
from huggingface_hub.errors import (
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils._http import hf_request_event_hook

from publisher.errors import PublishError
from publisher.targets.base import LocalFile, RemoteFile, RepoState, Target, check_sha256, verified_bytes

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
PATHS_INFO_BATCH = 500


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


def _env_number(name: str, default: N, kind: type[N]) -> N:
    """A number from the environment (retry tuning for slow links and for tests), else ``default``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise PublishError(f"{name}={raw!r} is not a number; unset it or give e.g. {default}") from None
    if value < 0:
        raise PublishError(f"{name}={raw!r} is negative; give a number of zero or more")
    return value


def _timeout_s(name: str, default: float) -> float:
    seconds = _env_number(name, default, float)
    if seconds == 0:
        raise PublishError(f"{name}=0 would give up at once; give the seconds to wait, e.g. {default:g}")
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


class HfTarget(Target):
    """Publish to the Hub (or to whatever ``HF_ENDPOINT`` / ``endpoint`` names).

    Transient failures are retried ``attempts`` times (env ``PUBLISHER_HF_ATTEMPTS``, default 4),
    waiting ``backoff_s`` seconds (env ``PUBLISHER_HF_BACKOFF``, default 2), then twice as long each time.
    Each request waits at most ``connect_timeout_s`` to connect (``PUBLISHER_HF_CONNECT_TIMEOUT``,
    default 10) and ``read_timeout_s`` for each read or write (``PUBLISHER_HF_READ_TIMEOUT``, default 60).
    """

    name = "hf"

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
    ) -> None:
        self._token = token or get_token()
        self.api = HfApi(endpoint=endpoint, token=self._token)
        self.attempts = max(1, attempts if attempts is not None else _env_number("PUBLISHER_HF_ATTEMPTS", 4, int))
        self.backoff_s = backoff_s if backoff_s is not None else _env_number("PUBLISHER_HF_BACKOFF", 2.0, float)
        self.connect_timeout_s = connect_timeout_s or _timeout_s("PUBLISHER_HF_CONNECT_TIMEOUT", 10.0)
        self.read_timeout_s = read_timeout_s or _timeout_s("PUBLISHER_HF_READ_TIMEOUT", 60.0)
        self._sleep = sleep
        self._stored: dict[tuple[str, str, str], CommitOperationAdd] = {}  # (repo, branch, path) -> uploaded op
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

    def location(self, repo_id: str) -> str:
        return f"{self.endpoint}/{repo_id}"

    def check_ready(self) -> None:
        if not self._token:
            raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login`, then publish again")

    # -- errors and retries ----------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with the token, if it appears, replaced by ``***``."""
        return text.replace(self._token, "***") if self._token else text

    def _error(self, what: str, err: BaseException, attempts: int = 1) -> PublishError:
        status = _status(err)
        timeout = next((c for c in _causes(err) if isinstance(c, httpx2.TimeoutException)), None)
        if status == 401:
            reason = "the Hub refused the token (HTTP 401): set HF_TOKEN to a token with write access"
        elif status == 403:
            reason = "the token may not write here (HTTP 403): use a token with write access to this namespace"
        elif status == 412:
            reason = "the branch moved while publishing (HTTP 412): run publish again"
        elif timeout is not None:
            reason = str(timeout)
        elif any(isinstance(c, OfflineModeIsEnabled) for c in _causes(err)):
            reason = "HF_HUB_OFFLINE is set; unset it to publish to the Hub"
        elif status is not None:
            server = next(
                (c.server_message for c in _causes(err) if isinstance(c, HfHubHTTPError) and c.server_message), None
            )
            detail = (server or "").strip().splitlines()[0][:200] if server and server.strip() else ""
            reason = f"HTTP {status}" + (f": {detail}" if detail else "")
        else:
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else 'no message'}"
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        hint = "; files already uploaded are not sent again when you re-run" if is_transient(err) else ""
        return PublishError(self.redact(f"{what} failed{tries}: {reason}{hint}"))

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn``, retrying transient failures with exponential backoff; other errors fail at once."""
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except PublishError:
                raise
            except Exception as err:
                if not is_transient(err) or attempt == self.attempts:
                    raise self._error(what, err, attempt) from None
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- Target interface ------------------------------------------------------------------

    def repo_state(self, repo_id: str) -> RepoState:
        def fetch() -> RepoState:
            try:
                info = self.api.model_info(repo_id)
            except RepositoryNotFoundError:
                return RepoState(exists=False)
            refs = self.api.list_repo_refs(repo_id)
            return RepoState(
                exists=True, private=info.private, branches={ref.name: ref.target_commit for ref in refs.branches}
            )

        return self._call(f"reading {self.location(repo_id)}", fetch)

    def remote_files(self, repo_id: str, branch: str, paths: list[str]) -> dict[str, RemoteFile]:
        found: dict[str, RemoteFile] = {}
        for start in range(0, len(paths), PATHS_INFO_BATCH):
            batch = paths[start : start + PATHS_INFO_BATCH]

            def fetch(batch: list[str] = batch) -> list[RemoteFile]:
                try:
                    infos = self.api.get_paths_info(repo_id, batch, revision=branch)
                except RevisionNotFoundError:
                    return []
                return [
                    RemoteFile(
                        path=info.path,
                        size=info.lfs.size if info.lfs is not None else int(info.size),
                        git_oid=str(info.blob_id),
                        sha256=info.lfs.sha256 if info.lfs is not None else None,
                    )
                    for info in infos
                    if isinstance(info, RepoFile)
                ]

            for remote in self._call(f"listing files of {self.location(repo_id)}@{branch}", fetch):
                found[remote.path] = remote
        return found

    def create_repo(self, repo_id: str, *, private: bool) -> None:
        self._call(
            f"creating {self.location(repo_id)}",
            lambda: self.api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True),
        )

    def create_branch(self, repo_id: str, branch: str) -> None:
        def create() -> None:
            commits = self.api.list_repo_commits(repo_id, revision="main")
            self.api.create_branch(repo_id, branch=branch, revision=commits[-1].commit_id, exist_ok=True)

        self._call(f"creating branch {branch} of {self.location(repo_id)}", create)

    def store_files(self, repo_id: str, branch: str, files: list[LocalFile]) -> None:
        lfs = [f for f in files if f.lfs]
        for file in files:
            if not file.lfs:
                verified_bytes(file)
        if not lfs:
            return
        # The client hashes each file from its bytes (before an LFS upload, during a Xet one);
        # that hash is the one checked. An object refused here is stored but never committed.
        operations = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.source)) for f in lfs]
        self._call(
            f"uploading to {self.location(repo_id)}@{branch}",
            lambda: self.api.preupload_lfs_files(repo_id, operations, revision=branch),
        )
        for file, op in zip(lfs, operations, strict=True):
            check_sha256(file, op.upload_info.sha256.hex())
            self._stored[(repo_id, branch, file.path_in_repo)] = op

    def commit(
        self,
        repo_id: str,
        branch: str,
        files: list[LocalFile],
        *,
        title: str,
        description: str,
        parent: str | None,
    ) -> str:
        def send() -> str:
            # The operations store_files uploaded are committed as they are (the client reads and
            # sends nothing again for them); they are single-use, so they are dropped once committed.
            operations = []
            for file in files:
                stored = self._stored.get((repo_id, branch, file.path_in_repo))
                if file.lfs and stored is not None:
                    op = stored
                elif file.lfs:
                    op = CommitOperationAdd(path_in_repo=file.path_in_repo, path_or_fileobj=str(file.source))
                    op.upload_info.sha256 = bytes.fromhex(file.sha256)  # checked by store_files; stored already
                else:
                    op = CommitOperationAdd(path_in_repo=file.path_in_repo, path_or_fileobj=verified_bytes(file))
                operations.append(op)
            info = self.api.create_commit(
                repo_id,
                operations,
                commit_message=title,
                commit_description=description,
                revision=branch,
                parent_commit=parent,
            )
            for file in files:
                self._stored.pop((repo_id, branch, file.path_in_repo), None)
            return str(info.oid)

        return self._call(f"committing to {self.location(repo_id)}@{branch}", send)
