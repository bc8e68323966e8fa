"""The local target: a folder of git repositories laid out like Hub repos, one per repo id.

``<hub_dir>/<owner>/<name>/`` is an ordinary git repository with real branches and commits, so
``git log --all``, ``git branch``, ``git show q4:README.md`` work on it. As on the Hub, git tracks
GGUF files as git-lfs pointer files (``version``, ``oid sha256:...``, ``size``) and the bytes live
once in git-lfs's own object store, ``.git/lfs/objects/<aa>/<bb>/<sha256>``:

- the mirror owns its bytes: an object is a reflink of the build's file where the filesystem
  offers one (btrfs, XFS: no bytes written, yet a later change to either file leaves the other
  alone), otherwise a copy. Either way the object is hashed in the pass that makes it and must
  have the tested sha256. Hard links to the build's files (``hard_links=True``) are an opt-in:
  they write nothing, but then the build and the mirror share their bytes.
- objects are checked by hash, not size, when planning, so a damaged object is replaced on the
  next publish.
- the checked-out branch (``main`` unless you switch) shows the real files: each GGUF in the work
  tree is a hard link to its object, so ``ls``, ``sha256sum`` and llama.cpp see the model.
  Those paths are marked ``assume-unchanged`` in the index so ``git status`` stays clean although
  git itself only knows the pointer (git-lfs is not needed to read anything here).
- objects are made read-only, since the work tree shares their inode.

Repos are created in a temporary folder and renamed into place; a branch moves only through
``git update-ref`` with the expected old commit, so a failure leaves the previous state intact.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from publisher.errors import PublishError
from publisher.manifest import guard_write, sha256_file
from publisher.targets.base import (
    GITATTRIBUTES,
    LocalFile,
    RemoteFile,
    RepoState,
    Target,
    check_sha256,
    lfs_pointer,
    parse_lfs_pointer,
    verified_bytes,
)

ZERO_OID = "0" * 40
IDENTITY = {
    "GIT_AUTHOR_NAME": "publisher",
    "GIT_AUTHOR_EMAIL": "publisher@localhost",
    "GIT_COMMITTER_NAME": "publisher",
    "GIT_COMMITTER_EMAIL": "publisher@localhost",
}
# Variables that would point git at another repository, index or config than the one we name.
_GIT_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_CEILING_DIRECTORIES")
FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
COPY_CHUNK = 1024 * 1024
# Errors that mean "no reflink here" (another filesystem, or one without shared extents), not a failure.
_NO_REFLINK = {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOSYS, errno.EPERM}


@dataclass(frozen=True)
class _Entry:
    mode: str
    kind: str
    oid: str
    size: int
    path: str


class LocalTarget(Target):
    """Publish into git repositories under ``hub_dir`` (default ``hub/``)."""

    name = "local"

    def __init__(self, hub_dir: Path, *, hard_links: bool = False) -> None:
        self.hub_dir = hub_dir.absolute()
        self.hard_links = hard_links
        self.bytes_copied = 0  # GGUF bytes written as a copy
        self.bytes_cloned = 0  # GGUF bytes stored as reflinks (shared extents, no bytes written)
        self.bytes_linked = 0  # GGUF bytes added as hard links (only with hard_links)
        self._good_objects: set[Path] = set()  # objects hashed in this run and found right

    # -- Target interface ------------------------------------------------------------------

    def location(self, repo_id: str) -> str:
        return str(self.repo_dir(repo_id))

    def repo_dir(self, repo_id: str) -> Path:
        """The repository folder of ``repo_id``."""
        owner, name = repo_id.split("/", 1)
        return self.hub_dir / owner / name

    def repo_state(self, repo_id: str) -> RepoState:
        repo = self.repo_dir(repo_id)
        if not (repo / ".git").is_dir():
            return RepoState(exists=False)
        refs = self._git(repo, "for-each-ref", "--format=%(refname:strip=2) %(objectname)", "refs/heads/")
        branches = dict(line.split(" ", 1) for line in refs.decode().splitlines() if line)
        private = self._git(repo, "config", "--get", "publisher.private", check=False).decode().strip() == "true"
        return RepoState(exists=True, private=private, branches=branches)

    def remote_files(self, repo_id: str, branch: str, paths: list[str]) -> dict[str, RemoteFile]:
        repo = self.repo_dir(repo_id)
        entries = [e for e in self._tree(repo, f"refs/heads/{branch}", paths) if e.kind == "blob"]
        contents = self._blobs(repo, [e.oid for e in entries if e.size <= 1024])
        found: dict[str, RemoteFile] = {}
        for entry in entries:
            pointer = parse_lfs_pointer(contents.get(entry.oid, b""))
            if pointer is None:
                found[entry.path] = RemoteFile(entry.path, entry.size, entry.oid)
                continue
            sha256, size = pointer
            # A pointer without its right bytes is not "present": publishing puts the object back.
            if self._object_ok(repo, sha256, size):
                found[entry.path] = RemoteFile(entry.path, size, entry.oid, sha256=sha256)
        return found

    def create_repo(self, repo_id: str, *, private: bool) -> None:
        repo = self.repo_dir(repo_id)
        if (repo / ".git").is_dir():
            return
        if repo.exists():
            raise PublishError(f"{repo}: exists but is not a git repository; move it away or choose another --hub-dir")
        repo.parent.mkdir(parents=True, exist_ok=True)
        tmp = repo.with_name(f".{repo.name}.creating-{uuid.uuid4().hex[:8]}")
        try:
            self._git(tmp.parent, "init", "--quiet", "--initial-branch=main", str(tmp))
            self._git(tmp, "config", "publisher.private", "true" if private else "false")
            blob = self._git(tmp, "hash-object", "-w", "--stdin", input=GITATTRIBUTES.encode()).decode().strip()
            tree = self._git(tmp, "mktree", input=f"100644 blob {blob}\t.gitattributes\n".encode()).decode().strip()
            commit = self._git(tmp, "commit-tree", tree, "-m", "initial commit").decode().strip()
            self._git(tmp, "update-ref", "refs/heads/main", commit, ZERO_OID)
            self._sync_worktree(tmp, "main")
            os.rename(tmp, repo)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def create_branch(self, repo_id: str, branch: str) -> None:
        repo = self.repo_dir(repo_id)
        if self._git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False).strip():
            return
        roots = self._git(repo, "rev-list", "--max-parents=0", "refs/heads/main").decode().split()
        self._git(repo, "update-ref", f"refs/heads/{branch}", roots[-1], ZERO_OID)

    def store_files(self, repo_id: str, branch: str, files: list[LocalFile]) -> None:
        repo = self.repo_dir(repo_id)
        for file in files:
            if file.lfs:
                self._store_object(repo, file)
            else:
                verified_bytes(file)

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
        repo = self.repo_dir(repo_id)
        ref = f"refs/heads/{branch}"
        head = self._git(repo, "rev-parse", "--verify", ref).decode().strip()
        if parent is not None and head != parent:
            raise PublishError(f"{repo}: branch {branch} moved while publishing (now {head[:12]}); run publish again")
        missing = [f.path_in_repo for f in files if f.lfs and not self._object_ok(repo, f.sha256, f.size)]
        if missing:
            raise PublishError(f"{repo}: no stored object for {', '.join(missing)}; run publish again")
        with self._temp_index(repo) as env:
            self._git(repo, "read-tree", head, env=env)
            lines = []
            for file in files:
                data = lfs_pointer(file.sha256, file.size) if file.lfs else verified_bytes(file)
                blob = self._git(repo, "hash-object", "-w", "--stdin", input=data).decode().strip()
                lines.append(f"100644 {blob}\t{file.path_in_repo}\n")
            self._git(repo, "update-index", "--add", "--index-info", input="".join(lines).encode(), env=env)
            tree = self._git(repo, "write-tree", env=env).decode().strip()
        if tree == self._git(repo, "rev-parse", f"{head}^{{tree}}").decode().strip():
            # Every file was already there (a repaired object): nothing to commit, but the work
            # tree may still link the damaged inode.
            if self._checked_out(repo) == branch:
                self._sync_worktree(repo, branch)
            return head
        message = f"{title}\n\n{description}".rstrip() + "\n"
        commit = self._git(repo, "commit-tree", tree, "-p", head, "-F", "-", input=message.encode()).decode().strip()
        self._git(repo, "update-ref", "-m", f"publisher: {title}", ref, commit, head)
        if self._checked_out(repo) == branch:
            self._sync_worktree(repo, branch)
        return commit

    # -- helpers ---------------------------------------------------------------------------

    def _git(
        self,
        cwd: Path,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> bytes:
        full_env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}
        full_env.update(IDENTITY)
        full_env["LC_ALL"] = "C"
        full_env.update(env or {})
        command = ["git", "-c", "commit.gpgsign=false", "-c", "core.autocrlf=false", *args]
        try:
            done = subprocess.run(command, cwd=cwd, input=input, env=full_env, capture_output=True, check=False)
        except FileNotFoundError:
            raise PublishError("git is not installed; the local target needs the git command") from None
        if check and done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
            reason = next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[-1])
            raise PublishError(f"{cwd}: git {args[0]} failed: {reason}")
        return done.stdout

    @contextmanager
    def _temp_index(self, repo: Path) -> Iterator[dict[str, str]]:
        index = repo / ".git" / f"publisher-{uuid.uuid4().hex[:12]}.index"
        try:
            yield {"GIT_INDEX_FILE": str(index)}
        finally:
            index.unlink(missing_ok=True)

    def _tree(self, repo: Path, rev: str, paths: list[str] | None = None) -> list[_Entry]:
        if not self._git(repo, "rev-parse", "--verify", "--quiet", rev, check=False).strip():
            return []
        out = self._git(repo, "ls-tree", "-r", "-l", "-z", "--full-tree", rev, "--", *(paths or []))
        entries = []
        for record in out.decode().split("\0"):
            if not record:
                continue
            meta, path = record.split("\t", 1)
            mode, kind, oid, size = meta.split()
            entries.append(_Entry(mode, kind, oid, int(size) if size.isdigit() else 0, path))
        return entries

    def _blobs(self, repo: Path, oids: list[str]) -> dict[str, bytes]:
        """Contents of the given blobs, read in one ``git cat-file --batch`` call."""
        if not oids:
            return {}
        out = self._git(repo, "cat-file", "--batch", input="".join(f"{oid}\n" for oid in oids).encode())
        found: dict[str, bytes] = {}
        pos = 0
        for oid in oids:
            header_end = out.index(b"\n", pos)
            _, _, size = out[pos:header_end].decode().split()
            start = header_end + 1
            found[oid] = out[start : start + int(size)]
            pos = start + int(size) + 1
        return found

    def _checked_out(self, repo: Path) -> str | None:
        name = self._git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False).decode().strip()
        return name or None

    @staticmethod
    def _object_path(repo: Path, sha256: str) -> Path:
        return repo / ".git" / "lfs" / "objects" / sha256[:2] / sha256[2:4] / sha256

    def _object_ok(self, repo: Path, sha256: str, size: int) -> bool:
        """The object is there with exactly these bytes (hashed once per run, never trusted by size)."""
        obj = self._object_path(repo, sha256)
        if obj in self._good_objects:
            return True
        if not obj.is_file() or obj.stat().st_size != size:
            return False
        if sha256_file(obj) != sha256:
            return False
        self._good_objects.add(obj)
        return True

    def _store_object(self, repo: Path, file: LocalFile) -> None:
        """Put the file's bytes in the LFS store, hashing them in the same pass; a wrong hash stores nothing."""
        obj = self._object_path(repo, file.sha256)
        if self._object_ok(repo, file.sha256, file.size):
            return
        obj.parent.mkdir(parents=True, exist_ok=True)
        tmp = guard_write(obj.with_name(f".{obj.name}.{uuid.uuid4().hex[:8]}.partial"))
        try:
            try:
                how, digest = self._write_object(file.source, tmp)
            except OSError as err:  # a full disk, a vanished file: one line, nothing half-stored
                raise PublishError(f"{obj.parent}: could not store {file.source}: {err.strerror or err}") from None
            check_sha256(file, digest)
            if how == "linked":
                self.bytes_linked += file.size
            elif how == "cloned":
                self.bytes_cloned += file.size
            else:
                self.bytes_copied += file.size
            os.chmod(tmp, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            os.replace(tmp, obj)
            self._good_objects.add(obj)
        finally:
            tmp.unlink(missing_ok=True)

    def _write_object(self, source: Path, tmp: Path) -> tuple[Literal["linked", "cloned", "copied"], str]:
        """Make ``tmp`` hold ``source``'s bytes; return how, and the sha256 of the bytes ``tmp`` holds."""
        if self.hard_links:
            try:
                os.link(source, tmp)
                return "linked", sha256_file(tmp)
            except OSError:  # another filesystem, or links not allowed here: copy instead
                pass
        with source.open("rb") as src, tmp.open("wb") as dst:
            try:
                fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            except OSError as err:
                if err.errno not in _NO_REFLINK:
                    raise
            else:
                dst.close()
                return "cloned", sha256_file(tmp)
            digest = hashlib.sha256()
            buffer = bytearray(COPY_CHUNK)
            view = memoryview(buffer)
            while n := src.readinto(buffer):
                digest.update(view[:n])
                dst.write(view[:n])
            dst.flush()
            os.fsync(dst.fileno())
        return "copied", digest.hexdigest()

    def _sync_worktree(self, repo: Path, branch: str) -> None:
        """Make the work tree and index show ``branch``: files written, GGUFs linked to their objects."""
        before = {p for p in self._git(repo, "ls-files", "-z").decode().split("\0") if p}
        entries = [e for e in self._tree(repo, f"refs/heads/{branch}") if e.kind == "blob"]
        contents = self._blobs(repo, [e.oid for e in entries])
        linked: list[str] = []
        for entry in entries:
            target = repo / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            data = contents[entry.oid]
            pointer = parse_lfs_pointer(data)
            obj = self._object_path(repo, pointer[0]) if pointer else None
            if obj is not None and obj.is_file():
                linked.append(entry.path)
                if target.is_file() and os.path.samefile(target, obj):
                    continue
                tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
                os.link(obj, tmp)
                os.replace(tmp, target)
            elif not (target.is_file() and not target.is_symlink() and target.read_bytes() == data):
                tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
                tmp.write_bytes(data)
                os.replace(tmp, target)
        for stale in before - {e.path for e in entries}:
            path = repo / stale
            if path.is_file() or path.is_symlink():
                path.unlink()
        self._git(repo, "read-tree", f"refs/heads/{branch}")
        if linked:
            self._git(repo, "update-index", "--assume-unchanged", "-z", "--stdin", input="\0".join(linked).encode())
        self._git(repo, "update-index", "-q", "--refresh", check=False)
