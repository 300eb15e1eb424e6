"""Read spec files as they were at a git ref, without touching the working tree."""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath

from ferry.contract.errors import FerryError
from ferry.spec.errors import SpecError
from ferry.spec.loader import SPEC_SUFFIXES, LoadedSpec, load_spec_text


class GitError(FerryError):
    """git is missing, the folder is not a checkout, or a ref does not exist; the message says which."""


def _git(repo: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False, timeout=60)
    except FileNotFoundError:
        raise GitError("git is not installed or not on PATH: install git (e.g. apt-get install git)") from None
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip() or "no message"
        raise GitError(f"`git {' '.join(args)}` failed in {repo}: {detail}")
    return done.stdout


def repo_root(start: Path) -> Path:
    return Path(_git(start, "rev-parse", "--show-toplevel").decode().strip())


def head_commit(repo: Path) -> str:
    try:
        return _git(repo, "rev-parse", "HEAD").decode().strip()
    except GitError:
        return "unknown"


def specs_at_ref(repo: Path, ref: str, folder: str) -> tuple[list[LoadedSpec], list[SpecError]]:
    """Every spec under `folder` (repo-relative) at `ref`; a folder absent at the ref means no specs."""
    try:
        _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except GitError as exc:
        raise GitError(f"{ref!r} is not a commit in {repo}: fetch it (e.g. `git fetch origin`) or name an "
                       f"existing branch, tag or commit ({exc})") from None
    listing = _git(repo, "ls-tree", "--name-only", f"{ref}:{folder}") if _exists(repo, ref, folder) else b""
    specs: list[LoadedSpec] = []
    errors: list[SpecError] = []
    for name in sorted(listing.decode().split()):
        if PurePosixPath(name).suffix not in SPEC_SUFFIXES:
            continue
        path = f"{folder}/{name}"
        spec, errs = load_spec_text(_git(repo, "show", f"{ref}:{path}"), f"{ref}:{path}")
        errors += errs
        if spec:
            specs.append(spec)
    return specs, errors


def _exists(repo: Path, ref: str, folder: str) -> bool:
    try:
        _git(repo, "cat-file", "-e", f"{ref}:{folder}")
    except GitError:
        return False
    return True


def commits_touching(repo: Path, since: str, folder: str) -> list[str]:
    return _git(repo, "rev-list", f"{since}..HEAD", "--", folder).decode().split()
