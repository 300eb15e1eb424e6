"""Write (or check) every generated file under monitoring/ from gitops/models and ferry.render.

    .venv/bin/python monitoring/generate.py           # regenerate after changing a spec or the renderer
    .venv/bin/python monitoring/generate.py --check   # exit 1 and list stale files (what CI and the tests do)

The content comes from `ferry.render.monitoring.generated_files`, a pure function; this script only does the
file I/O. Files under monitoring/generated/ that the renderer no longer produces are removed (or reported).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ferry.render.monitoring import generated_files
from ferry.spec import load_specs

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "monitoring" / "generated"


def wanted_files() -> dict[str, str]:
    specs, errors = load_specs([ROOT / "gitops" / "models"])
    if errors:
        raise SystemExit("\n".join(str(error) for error in errors))
    return generated_files([spec.model for spec in specs])


def stale_files(wanted: dict[str, str]) -> list[str]:
    stale = [path for path, text in wanted.items()
             if not (ROOT / path).is_file() or (ROOT / path).read_text() != text]
    extra = [path.relative_to(ROOT).as_posix() for path in GENERATED.rglob("*") if path.is_file()]
    return sorted({*stale, *(path for path in extra if path not in wanted)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args(argv)
    wanted = wanted_files()
    stale = stale_files(wanted)
    if args.check:
        for path in stale:
            print(f"stale: {path}")
        return 1 if stale else 0
    for path in stale:
        target = ROOT / path
        if path in wanted:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(wanted[path])
            print(f"wrote {path}")
        else:
            target.unlink()
            print(f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
