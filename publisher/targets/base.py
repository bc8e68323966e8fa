"""What a publishing target is: a place holding Hub-style repos with branches, commits and LFS files.

The publisher plans against a target (which repo and branches exist, which files are already there
with the same content) and then asks it to create what is missing and to make one commit per branch.
Both targets store large files the way the Hub does: git tracks a small LFS pointer naming the
file's sha256 and size, and the bytes live once in an object store.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from publisher.errors import PublishError

LFS_SPEC = "https://git-lfs.github.com/spec/v1"

# The .gitattributes the Hub writes into every new model repo, trimmed to what GGUF repos hold.
GITATTRIBUTES = """\
*.bin filter=lfs diff=lfs merge=lfs -text
*.gguf filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.tar.gz filter=lfs diff=lfs merge=lfs -text
"""


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file text for a blob with this sha256 and size."""
    return f"version {LFS_SPEC}\noid sha256:{sha256}\nsize {size}\n".encode()


def parse_lfs_pointer(data: bytes) -> tuple[str, int] | None:
    """``(sha256, size)`` from a git-lfs pointer, or ``None`` when ``data`` is not one."""
    if len(data) > 1024 or not data.startswith(b"version https://git-lfs"):
        return None
    fields = dict(line.split(" ", 1) for line in data.decode("ascii", "replace").splitlines() if " " in line)
    oid, size = fields.get("oid", ""), fields.get("size", "")
    if not oid.startswith("sha256:") or not size.isdigit():
        return None
    return oid.removeprefix("sha256:"), int(size)


def git_blob_oid(data: bytes) -> str:
    """The id git gives a blob with this content (sha1 over a ``blob <size>`` header and the bytes)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class LocalFile:
    """A file of the build to be published: where it is here and what it is called in the repo."""

    path_in_repo: str
    source: Path
    size: int
    sha256: str
    kind: Literal["model", "card", "text"]

    @property
    def lfs(self) -> bool:
        """Model files (GGUFs, the importance matrix) are LFS objects; the card and texts are plain git blobs."""
        return self.kind == "model"

    def git_oid(self) -> str:
        """The git blob id this file has in a repo (of its pointer, for LFS files)."""
        if self.lfs:
            return git_blob_oid(lfs_pointer(self.sha256, self.size))
        return git_blob_oid(self.source.read_bytes())


def check_sha256(file: LocalFile, actual: str) -> None:
    """Refuse, naming the file, when the bytes just read are not the ones that were tested."""
    if actual != file.sha256:
        raise PublishError(
            f"{file.source}: content changed since it was tested (sha256 {actual[:12]}, tested {file.sha256[:12]}); "
            "nothing was published from it; run `publisher build` again"
        )


def verified_bytes(file: LocalFile) -> bytes:
    """The bytes of a small file (the card), read once and checked against its sha256."""
    data = file.source.read_bytes()
    check_sha256(file, hashlib.sha256(data).hexdigest())
    return data


@dataclass(frozen=True)
class RemoteFile:
    """A file as it is in a target's branch."""

    path: str
    size: int
    git_oid: str
    sha256: str | None = None  # set for LFS files

    def matches(self, local: LocalFile) -> bool:
        """True when the branch already holds exactly this content at this path."""
        if self.sha256 is not None:
            return local.lfs and self.sha256 == local.sha256 and self.size == local.size
        return self.git_oid == local.git_oid()


@dataclass(frozen=True)
class RepoState:
    """What a target holds for one repo id."""

    exists: bool
    private: bool | None = None
    branches: dict[str, str] = field(default_factory=dict)  # branch name -> head commit id


class Target(ABC):
    """A place to publish to. Implementations: ``local`` (a folder of git repos) and ``hf`` (the Hub)."""

    name: str

    @abstractmethod
    def location(self, repo_id: str) -> str:
        """Where the repo is, for people: a folder or a URL."""

    def check_ready(self) -> None:
        """Fail early, with the fix, when the target cannot be written (for example: no token)."""
        return None

    @abstractmethod
    def repo_state(self, repo_id: str) -> RepoState:
        """Whether the repo exists, its visibility and its branches."""

    @abstractmethod
    def remote_files(self, repo_id: str, branch: str, paths: list[str]) -> dict[str, RemoteFile]:
        """The files among ``paths`` that ``branch`` holds now, keyed by path."""

    @abstractmethod
    def create_repo(self, repo_id: str, *, private: bool) -> None:
        """Create the repo (with an initial commit on main); a no-op when it exists."""

    @abstractmethod
    def create_branch(self, repo_id: str, branch: str) -> None:
        """Create ``branch`` from the repo's initial commit, so it holds only what is committed to it."""

    @abstractmethod
    def store_files(self, repo_id: str, branch: str, files: list[LocalFile]) -> None:
        """Put the LFS bytes of ``files`` where a commit on ``branch`` can refer to them; move no branch.

        Each file is hashed from its bytes in the pass that stores or sends it, and a file whose
        sha256 is not the tested one is refused (``check_sha256``) before anything refers to it.
        """

    @abstractmethod
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
        """Add or replace ``files`` on ``branch`` in one commit on top of ``parent``; return the commit id.

        ``store_files`` has stored their LFS bytes. Either every file lands in the commit or the
        branch is left as it was; when the branch already holds them all, no commit is made and
        ``parent`` comes back.
        """
