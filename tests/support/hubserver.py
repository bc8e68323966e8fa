"""A loopback HTTP server that speaks the parts of the Hugging Face Hub API publishing uses.

It lets the real ``huggingface_hub`` client run its own code path (``HfApi(endpoint=...)`` or
``HF_ENDPOINT``): repo creation and info, refs, commit history, branch creation, ``paths-info``,
``preupload``, the git-lfs batch API with "basic" transfers (PUT to a storage URL, then verify),
the NDJSON commit endpoint, README metadata validation, and ``resolve`` downloads.

It never offers Xet storage: its batch answers name the ``basic`` transfer and it sends no
``X-Xet-*`` headers. The 2.x client decides on Xet by itself when ``hf_xet`` is installed, without
asking the server, so tests also set ``HF_HUB_DISABLE_XET`` (see ``xet_disabled`` in the tests).

Counters (``lfs_bytes_received``, ``commits``, ``requests``) let tests prove what crossed the
wire, and :meth:`HubServer.fail` injects faults (a status answered after the body was read, for a
number of matching requests) to test retries and resumable uploads. :class:`SilentServer` is the
other kind of broken Hub: it accepts connections and never answers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".gguf", ".bin", ".safetensors", ".pt", ".pth", ".zip", ".tar.gz")
LFS_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = b"*.gguf filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
REPO = r"(?P<repo>[^/]+/[^/]+)"


def git_blob_oid(data: bytes) -> str:
    """The git id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """A git-lfs pointer file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class StoredFile:
    """A file in a commit: plain content, or an LFS object named by sha256."""

    size: int
    content: bytes | None = None
    sha256: str | None = None

    @property
    def git_oid(self) -> str:
        if self.sha256 is not None:
            return git_blob_oid(lfs_pointer(self.sha256, self.size))
        assert self.content is not None
        return git_blob_oid(self.content)


@dataclass
class Commit:
    """One commit: its whole tree and where it came from."""

    oid: str
    parent: str | None
    title: str
    message: str
    files: dict[str, StoredFile]
    date: str = field(default_factory=lambda: datetime.now(UTC).isoformat().replace("+00:00", "Z"))


@dataclass
class Repo:
    """A model repo with branches and commits."""

    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def head(self, rev: str) -> Commit | None:
        """The commit a branch name or commit id points at."""
        oid = self.branches.get(rev, rev)
        return self.commits.get(oid)

    def history(self, rev: str) -> list[Commit]:
        """Commits reachable from ``rev``, newest first."""
        found = []
        commit = self.head(rev)
        while commit is not None:
            found.append(commit)
            commit = self.commits.get(commit.parent) if commit.parent else None
        return found


@dataclass
class Fault:
    """Answer ``status`` to the next ``times`` requests matching ``method`` and ``path`` (a regex)."""

    method: str
    path: str
    status: int
    times: float
    retry_after: int | None = 0
    echo_auth: bool = False  # put the request's Authorization header in the error text, as careless servers do


class _Reply(Exception):
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


class HubServer:
    """State plus a ``ThreadingHTTPServer`` on 127.0.0.1; use as a context manager."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.lfs_bytes_received = 0
        self.commits = 0
        self.requests: list[tuple[str, str, int]] = []
        self.faults: list[Fault] = []
        self.lock = threading.RLock()
        self._secret = uuid.uuid4().bytes
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hubserver", daemon=True)

    @property
    def url(self) -> str:
        """The endpoint to give the client."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- test helpers ----------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        times: float = 1,
        retry_after: int | None = 0,
        echo_auth: bool = False,
    ) -> Fault:
        """Inject a fault; remove it with ``faults.remove`` or let ``times`` run out."""
        fault = Fault(method, path, status, times, retry_after, echo_auth)
        with self.lock:
            self.faults.append(fault)
        return fault

    @contextmanager
    def counting(self) -> Iterator[dict[str, int]]:
        """Yield a dict filled, on exit, with the bytes received and commits made inside the block."""
        counts: dict[str, int] = {}
        before = (self.lfs_bytes_received, self.commits, len(self.requests))
        yield counts
        counts["lfs_bytes"] = self.lfs_bytes_received - before[0]
        counts["commits"] = self.commits - before[1]
        counts["requests"] = len(self.requests) - before[2]

    def tree(self, repo_id: str, rev: str = "main") -> dict[str, StoredFile]:
        """Files of a branch."""
        commit = self.repos[repo_id].head(rev)
        return dict(commit.files) if commit else {}

    def file_bytes(self, repo_id: str, rev: str, path: str) -> bytes:
        """Content of a file, LFS objects resolved."""
        stored = self.tree(repo_id, rev)[path]
        return stored.content if stored.content is not None else self.lfs[stored.sha256 or ""]

    # -- request handling ------------------------------------------------------------------

    def _sign(self, oid: str) -> str:
        return hmac.new(self._secret, oid.encode(), hashlib.sha256).hexdigest()[:32]

    def _authorized(self, headers: Any) -> bool:
        return self.token is None or headers.get("Authorization", "") == f"Bearer {self.token}"

    def _repo(self, repo_id: str, headers: Any, *, write: bool = False) -> Repo:
        repo = self.repos.get(repo_id)
        if write and not self._authorized(headers):
            raise _Reply(401, {"error": "Invalid username or password."})
        if repo is None or (repo.private and not self._authorized(headers)):
            raise _Reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return repo

    def _commit_new(
        self, repo: Repo, parent: Commit | None, title: str, message: str, files: dict[str, StoredFile]
    ) -> Commit:
        seed = f"{repo.repo_id}{parent.oid if parent else ''}{title}{uuid.uuid4()}".encode()
        commit = Commit(
            hashlib.sha1(seed, usedforsecurity=False).hexdigest(), parent.oid if parent else None, title, message, files
        )
        repo.commits[commit.oid] = commit
        return commit

    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        """Route one request; returns status, JSON-able body (or bytes) and extra headers."""
        path, _, query = raw_path.partition("?")
        routes: list[tuple[str, str, Any]] = [
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("GET", rf"/api/models/{REPO}/refs", self._refs),
            ("GET", rf"/api/models/{REPO}/commits/(?P<rev>[^/]+)", self._commits),
            ("POST", rf"/api/models/{REPO}/branch/(?P<branch>[^/]+)", self._create_branch),
            ("POST", rf"/api/models/{REPO}/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", rf"/api/models/{REPO}/paths-info/(?P<rev>[^/]+)", self._paths_info),
            ("POST", rf"/api/models/{REPO}/commit/(?P<rev>[^/]+)", self._commit),
            ("GET", rf"/api/models/{REPO}/revision/(?P<rev>[^/]+)", self._info),
            ("GET", rf"/api/models/{REPO}", self._info),
            ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", self._lfs_batch),
            ("POST", rf"/{REPO}\.git/info/lfs/objects/verify", self._lfs_verify),
            ("PUT", r"/lfs-storage/(?P<oid>[0-9a-f]{64})", self._lfs_put),
            ("GET", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
            ("HEAD", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
        ]
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and re.fullmatch(fault.path, path):
                    fault.times -= 1
                    if method == "PUT":
                        self.lfs_bytes_received += len(body)
                    extra = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                    message = f"injected failure {fault.status}"
                    if fault.echo_auth:
                        message += f" for {headers.get('Authorization', 'no credentials')}"
                    return fault.status, {"error": message}, extra
        for route_method, pattern, fn in routes:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                args = {k: unquote(v) for k, v in match.groupdict().items()}
                try:
                    with self.lock:
                        return 200, fn(headers=headers, body=body, query=parse_qs(query), method=method, **args), {}
                except _Reply as reply:
                    return reply.status, reply.body, reply.headers
        return 404, {"error": f"no route for {method} {path}"}, {}

    # -- endpoints ---------------------------------------------------------------------------

    def _create_repo(self, *, headers: Any, body: bytes, **_: Any) -> Any:
        if not self._authorized(headers):
            raise _Reply(401, {"error": "Invalid username or password."})
        data = json.loads(body)
        repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
        if repo_id in self.repos:
            raise _Reply(409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"})
        repo = Repo(repo_id, private=data.get("visibility") == "private" or bool(data.get("private")))
        root = self._commit_new(
            repo, None, "initial commit", "", {".gitattributes": StoredFile(len(GITATTRIBUTES), GITATTRIBUTES)}
        )
        repo.branches["main"] = root.oid
        self.repos[repo_id] = repo
        return {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": uuid.uuid4().hex}

    def _validate_yaml(self, *, body: bytes, **_: Any) -> Any:
        content = json.loads(body).get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        if match:
            try:
                meta = yaml.safe_load(match.group(1))
            except yaml.YAMLError as err:
                raise _Reply(400, {"errors": [{"message": f"invalid YAML: {err}"}]}) from None
            if meta is not None and not isinstance(meta, dict):
                raise _Reply(400, {"errors": [{"message": "metadata must be a mapping"}]})
        return {"errors": [], "warnings": []}

    def _info(self, *, repo: str, headers: Any, rev: str = "main", **_: Any) -> Any:
        found = self._repo(repo, headers)
        commit = found.head(rev)
        if commit is None:
            raise _Reply(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
        return {
            "id": repo,
            "sha": commit.oid,
            "private": found.private,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }

    def _refs(self, *, repo: str, headers: Any, **_: Any) -> Any:
        found = self._repo(repo, headers)
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": oid} for n, oid in found.branches.items()]
        return {"branches": branches, "converts": [], "tags": [], "pullRequests": []}

    def _commits(self, *, repo: str, rev: str, headers: Any, **_: Any) -> Any:
        found = self._repo(repo, headers)
        if found.head(rev) is None:
            raise _Reply(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
        return [
            {"id": c.oid, "title": c.title, "message": c.message, "authors": [{"user": "publisher"}], "date": c.date}
            for c in found.history(rev)
        ]

    def _create_branch(self, *, repo: str, branch: str, headers: Any, body: bytes, **_: Any) -> Any:
        found = self._repo(repo, headers, write=True)
        if branch in found.branches:
            raise _Reply(409, {"error": "Reference already exists"})
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        commit = found.head(start)
        if commit is None:
            raise _Reply(404, {"error": "Invalid starting point"}, {"X-Error-Code": "RevisionNotFound"})
        found.branches[branch] = commit.oid
        return {}

    def _upload_mode(self, path: str, size: int, sample: bytes) -> str:
        return "lfs" if path.endswith(LFS_SUFFIXES) or size >= LFS_SIZE or b"\0" in sample else "regular"

    def _preupload(self, *, repo: str, rev: str, headers: Any, body: bytes, **_: Any) -> Any:
        found = self._repo(repo, headers, write=True)
        commit = found.head(rev)
        files = []
        for item in json.loads(body)["files"]:
            mode = self._upload_mode(item["path"], item["size"], base64.b64decode(item["sample"]))
            existing = commit.files.get(item["path"]) if commit else None
            oid = None
            if existing is not None:
                oid = existing.sha256 if mode == "lfs" else (existing.git_oid if existing.content is not None else None)
            files.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return {"files": files, "commitOid": commit.oid if commit else None}

    def _paths_info(self, *, repo: str, rev: str, headers: Any, body: bytes, **_: Any) -> Any:
        found = self._repo(repo, headers)
        commit = found.head(rev)
        if commit is None:
            raise _Reply(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
        form = parse_qs(body.decode())
        entries = []
        for path in form.get("paths", []):
            stored = commit.files.get(path)
            if stored is None:
                continue
            entry: dict[str, Any] = {"type": "file", "path": path, "size": stored.size, "oid": stored.git_oid}
            if stored.sha256 is not None:
                pointer = lfs_pointer(stored.sha256, stored.size)
                entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": len(pointer)}
            entries.append(entry)
        return entries

    def _commit(self, *, repo: str, rev: str, headers: Any, body: bytes, **_: Any) -> Any:
        found = self._repo(repo, headers, write=True)
        parent = found.head(rev)
        if parent is None or rev not in found.branches:
            raise _Reply(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
        files = dict(parent.files)
        header: dict[str, Any] = {}
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                content = base64.b64decode(value["content"])
                files[value["path"]] = StoredFile(len(content), content)
            elif key == "lfsFile":
                if value["oid"] not in self.lfs:
                    raise _Reply(422, {"error": f"LFS object {value['oid']} was never uploaded"})
                files[value["path"]] = StoredFile(len(self.lfs[value["oid"]]), sha256=value["oid"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            else:
                raise _Reply(400, {"error": f"unsupported operation {key}"})
        expected = header.get("parentCommit")
        if expected and not parent.oid.startswith(expected):
            raise _Reply(412, {"error": f"A commit has happened since {expected}; it is now {parent.oid}"})
        commit = self._commit_new(found, parent, header.get("summary", ""), header.get("description", ""), files)
        found.branches[rev] = commit.oid
        self.commits += 1
        return {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{self.url}/{repo}/commit/{commit.oid}",
            "pullRequestUrl": None,
        }

    def _lfs_batch(self, *, repo: str, headers: Any, body: bytes, **_: Any) -> Any:
        self._repo(repo, headers, write=True)
        request = json.loads(body)
        objects = []
        for obj in request["objects"]:
            item: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs:  # no "actions" means the server already has it
                item["actions"] = {
                    "upload": {
                        "href": f"{self.url}/lfs-storage/{obj['oid']}?sig={self._sign(obj['oid'])}",
                        "header": {},
                    },
                    "verify": {"href": f"{self.url}/{repo}.git/info/lfs/objects/verify", "header": {}},
                }
            objects.append(item)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def _lfs_put(self, *, oid: str, query: dict[str, list[str]], body: bytes, **_: Any) -> Any:
        self.lfs_bytes_received += len(body)
        if query.get("sig", [""])[0] != self._sign(oid):
            raise _Reply(403, {"error": "bad signature"})
        if hashlib.sha256(body).hexdigest() != oid:
            raise _Reply(400, {"error": "content does not match its oid"})
        self.lfs[oid] = body
        return {}

    def _lfs_verify(self, *, repo: str, headers: Any, body: bytes, **_: Any) -> Any:
        self._repo(repo, headers, write=True)
        data = json.loads(body)
        if data["oid"] not in self.lfs or len(self.lfs[data["oid"]]) != data["size"]:
            raise _Reply(404, {"error": "object not found"})
        return {}

    def _resolve(self, *, repo: str, rev: str, file: str, headers: Any, **_: Any) -> Any:
        found = self._repo(repo, headers)
        commit = found.head(rev)
        if commit is None or file not in commit.files:
            raise _Reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        stored = commit.files[file]
        content = stored.content if stored.content is not None else self.lfs[stored.sha256 or ""]
        extra = {"X-Repo-Commit": commit.oid, "ETag": f'"{stored.git_oid}"'}
        if stored.sha256:
            extra.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(stored.size)})
        raise _Reply(200, content, extra)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        return b"".join(chunks)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _handler_for(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            body = _read_body(self) if self.command in ("POST", "PUT") else b""
            status, payload, extra = server.handle(self.command, self.path, self.headers, body)
            with server.lock:
                server.requests.append((self.command, urlsplit(self.path).path, status))
            if isinstance(payload, bytes):
                data, content_type = payload, "application/octet-stream"
            else:
                data, content_type = json.dumps(payload).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
            return

    return Handler


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection, reads nothing and never answers.

    ``connections`` counts the connections accepted, so a test can see each retry arrive.
    """

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)  # so the accept loop sees the server closing
        host, port = self._sock.getsockname()[:2]
        self._url = f"http://{host!s}:{port}"
        self._held: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-hub", daemon=True)

    @property
    def url(self) -> str:
        """The endpoint to give the client."""
        return self._url

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        return len(self._held)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            self._held.append(conn)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._sock.close()
        for conn in self._held:
            conn.close()
        self._thread.join(timeout=5)
