"""Recopy the vendored upstream schemas from a directory laid out like tests/schemas.

    python tests/schemas/refresh.py --from DIR          # copy every file the validator reads, drop the rest
    python tests/schemas/refresh.py --from DIR --check  # exit 1 if any vendored file differs from DIR's

The list of files is the validator's own (tests.support.kube_schemas.vendored_files), so the copy holds
exactly what the tests read. Files are copied byte for byte: after a refresh, update the version table in
tests/schemas/README.md and run `task test:unit`. The hand-written examples/ are ferry's and stay untouched.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for `tests.support`

from tests.support.kube_schemas import vendored_files  # noqa: E402

OWN = {"README.md", "refresh.py", "examples"}  # ferry's files in tests/schemas, never upstream copies


def stale_files() -> list[Path]:
    """Vendored files the validator no longer reads."""
    wanted = {HERE / rel for rel in vendored_files()}
    return sorted(p for p in HERE.rglob("*") if p.is_file() and p.relative_to(HERE).parts[0] not in OWN
                  and p not in wanted)


def check(source: Path) -> list[str]:
    problems = [f"{rel}: missing in {source}" for rel in vendored_files() if not (source / rel).is_file()]
    problems += [f"{rel}: not vendored" for rel in vendored_files() if not (HERE / rel).is_file()]
    problems += [f"{rel}: differs from {source / rel}" for rel in vendored_files()
                 if (source / rel).is_file() and (HERE / rel).is_file()
                 and not filecmp.cmp(source / rel, HERE / rel, shallow=False)]
    return problems + [f"{p.relative_to(HERE)}: no longer read by the validator" for p in stale_files()]


def refresh(source: Path) -> None:
    missing = [rel for rel in vendored_files() if not (source / rel).is_file()]
    if missing:
        sys.exit(f"{source} lacks {', '.join(missing)}: point --from at a copy of the upstream schemas "
                 "(tests/schemas/README.md names each file's project, version and upstream path)")
    for rel in vendored_files():
        (HERE / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, HERE / rel)
        print(f"{(HERE / rel).stat().st_size:>10,}  {rel}")
    for path in stale_files():
        path.unlink()
        print(f"   removed  {path.relative_to(HERE)}")
    total = sum((HERE / rel).stat().st_size for rel in vendored_files())
    print(f"{total:>10,}  in {len(vendored_files())} files; now update the versions in tests/schemas/README.md")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, required=True, help="directory holding the schemas")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on any difference")
    args = parser.parse_args()
    if not args.source.is_dir():
        parser.error(f"--from {args.source}: not a directory")
    if args.check:
        problems = check(args.source)
        print("\n".join(problems) or f"tests/schemas matches {args.source}")
        return 1 if problems else 0
    refresh(args.source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
