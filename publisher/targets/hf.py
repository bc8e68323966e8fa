"""The Hugging Face Hub target, through publisher's Hub client (``publisher.hub``: retries, timeouts, redaction).

One ``create_commit`` per branch adds the GGUFs and README.md together: the client uploads the
LFS objects first and commits only when all are stored, so a failed upload leaves the branch as it
was, and a re-run sends only objects the Hub does not have yet (its LFS batch answer says which).

Before any commit, ``store_files`` uploads a branch's LFS objects (``preupload_lfs_files``) and
checks the sha256 the client computed from the bytes it read against the tested one.

The token comes from ``HF_TOKEN`` or the huggingface_hub login. It is never printed: every message
built from a client error is redacted by the Hub client, and the token is not part of any plan,
manifest or commit text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, Unpack

from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.hf_api import RepoFile

from publisher.errors import PublishError
from publisher.hub import Hints, HubClient, HubOptions
from publisher.targets.base import LocalFile, RemoteFile, RepoState, Target, check_sha256, verified_bytes

T = TypeVar("T")

PATHS_INFO_BATCH = 500
# What publishing says about the answers it can explain
PUBLISH_HINTS: Hints = {
    401: "the Hub refused the token (HTTP 401): set HF_TOKEN to a token with write access",
    403: "the token may not write here (HTTP 403): use a token with write access to this namespace",
    412: "the branch moved while publishing (HTTP 412): run publish again",
}


class HfTarget(Target):
    """Publish to the Hub (or to whatever ``HF_ENDPOINT`` / ``endpoint`` names).

    Retries and timeouts are the Hub client's (``publisher.hub``); the arguments override its
    environment settings.
    """

    name = "hf"

    def __init__(self, **options: Unpack[HubOptions]) -> None:
        self.hub = HubClient(
            **options,
            error=PublishError,
            hints=PUBLISH_HINTS,
            retry_hint="files already uploaded are not sent again when you re-run",
            offline_hint="HF_HUB_OFFLINE is set; unset it to publish to the Hub",
        )
        self.api = self.hub.api
        self._stored: dict[tuple[str, str, str], CommitOperationAdd] = {}  # (repo, branch, path) -> uploaded op

    @property
    def endpoint(self) -> str:
        """The Hub URL requests go to."""
        return self.hub.endpoint

    def location(self, repo_id: str) -> str:
        return f"{self.endpoint}/{repo_id}"

    def check_ready(self) -> None:
        if not self.hub.token:
            raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login`, then publish again")

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return self.hub.call(f"{what} failed", fn)

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
