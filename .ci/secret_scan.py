"""Scan the tracked files for secrets with detect-secrets; fail on any finding not audited in .secrets.baseline.

detect-secrets 1.5 has no "fail on unaudited" switch: `scan --baseline` merges a fresh scan into a copy
of the baseline (audited entries keep `is_secret: false`, new ones have no verdict), and this script
fails on every entry without a `false` verdict. The baseline's `filters_used` excludes the baseline
itself (it holds hashes of what it audited), the generated gitops/rendered (spec hashes look like hex
secrets) and the upstream schemas vendored byte for byte in tests/schemas (megabytes of data that is not
ferry's, checked against upstream by tests/schemas/refresh.py --check; its examples/ are still scanned). The committed baseline is never rewritten, so line numbers that move with edits cause no churn.
A new false positive: add `# pragma: allowlist secret` to its line, or audit it
(`detect-secrets audit .secrets.baseline`) and commit the baseline.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / ".secrets.baseline"


def main() -> int:
    tool = shutil.which("detect-secrets", path=str(Path(sys.executable).parent)) or "detect-secrets"
    with tempfile.TemporaryDirectory() as tmp:
        merged = Path(tmp) / "baseline.json"
        shutil.copy(BASELINE, merged)
        subprocess.run([tool, "scan", "--baseline", str(merged)], cwd=ROOT, check=True)
        results = json.loads(merged.read_text())["results"]
    found = [(file, item) for file, items in results.items() for item in items if item.get("is_secret") is not False]
    for file, item in found:
        print(f"{file}:{item['line_number']}: possible secret ({item['type']})", file=sys.stderr)
    if found:
        print(f"{len(found)} unaudited finding(s): remove the secret, or mark a false positive with "
              "`# pragma: allowlist secret` (see .ci/secret_scan.py)", file=sys.stderr)
        return 1
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = len(tracked.split())
    print(f"secret scan: {files} tracked files, no unaudited findings ({sum(map(len, results.values()))} audited)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
