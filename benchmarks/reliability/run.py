"""`task reliability`: every reliability scenario at full length, then docs/reliability.md from what they measured.

Runs pytest with RELIABILITY_MODE=full (tests/reliability/conftest.py) and RELIABILITY_OUT pointing at a
JSON-lines file each scenario appends its figures to, plus the spec fuzzing with
`--hypothesis-profile=reliability` (ten times CI's examples). `--with-existing` also reruns the fault
scenarios that live in tests/integration (runner killed mid-run, Ray Train worker killed, MLflow stopped
while serving, schemathesis on the serving API) for their pass/fail and duration. Everything runs on
loopback, bounded in count and time by the scenarios themselves; the whole run is bounded by --timeout.

    .venv/bin/python benchmarks/reliability/run.py                  # ~15 minutes on 2 cores
    .venv/bin/python benchmarks/reliability/run.py --with-existing  # + ~10 minutes
    .venv/bin/python benchmarks/reliability/run.py --from results.jsonl --junit junit.xml  # only rewrite the doc
    .venv/bin/python benchmarks/reliability/run.py --only "replica_killed or racing"  # rerun some, merge

`--only EXPR` reruns the scenarios `pytest -k EXPR` selects and merges them into the page: their rows
replace the rows of the same tests (and length), every other row keeps the figures and outcome the page
shows, and the header says which rows were rerun when. `--ci-length` (with `--only`) reruns CI's short form.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
SCENARIOS = ["tests/reliability", "tests/unit/spec/test_fuzz_spec.py"]
EXISTING = {
    "tests/integration/test_pipeline.py": ("local runner killed mid-run (SIGKILL)",
                                           "resumes from the finished steps; exactly 1 version",
                                           "killed_runner or runs_pipeline"),
    "tests/integration/test_train_resume.py": ("Ray Train worker killed mid-training",
                                               "the job completes from the last checkpoint", ""),
    "tests/integration/test_serving.py": ("MLflow stopped while serving; schemathesis on the API",
                                          "200 x 200 on the last known champion; no 5xx", "outage or schemathesis"),
}
NOTES = [
    "",
    "## Where each scenario lives",
    "",
    "- `tests/reliability/test_serving_reliability.py`: bad payloads, listeners, pickle, sustained load, replica",
    "  killed under load; in full mode also the canary scenarios (rollout under load, MLflow stopped during a",
    "  rollout, Prometheus stopped during analysis), which drive `ferry.rollout.controller.Controller` exactly as",
    "  `ferry step rollout` does (helpers shared with tests/integration/test_canary.py).",
    "- `tests/reliability/test_reconcile_race.py`: two `ferry up` processes racing on one model (full mode).",
    "- `tests/reliability/test_data_paths.py`, `tests/unit/spec/test_fuzz_spec.py`: bad input to the spec.",
    "- Runner killed mid-run: `tests/integration/test_pipeline.py::test_killed_runner_resumes_without_redoing_steps`;",
    "  Ray Train worker killed: `tests/integration/test_train_resume.py`; MLflow stopped while serving and",
    "  schemathesis: `tests/integration/test_serving.py`. Secret scan: `task secrets` (`.ci/secret_scan.py`,",
    "  detect-secrets with the audited `.secrets.baseline`), part of `task lint` and the CI lint job.",
    "",
    "Known exception to loopback-only: Ray 2.60 binds each Serve replica's inter-deployment gRPC server to",
    "`[::]:0` (hard-coded in ray/serve/_private/replica.py). Ray attaches its token-auth interceptor to it, and",
    "the listener scenario asserts that a call without the token is refused (UNAUTHENTICATED); keep token",
    "auth on, and firewall the host where it is reachable from other machines.",
]
FUZZ = "spec fuzzing (hypothesis): loader, checks and `ferry validate`"
DATA_ROW = "| data sources:"
TABLE_HEAD = "| scenario | bound | measured | result |"
LOADGEN_LINE = "(open loop, httpx, bounded in count, time and in-flight requests)."


def run_pytest(targets: list[str], out: Path, junit: Path, timeout_s: float, keyword: str = "",
               full: bool = True) -> int:
    env = {**os.environ, "RELIABILITY_MODE": "full" if full else "ci", "RELIABILITY_OUT": str(out)}
    cmd = [sys.executable, "-m", "pytest", *targets, "-q", "-p", "no:randomly", "--hypothesis-profile=reliability",
           f"--junitxml={junit}"]
    if keyword:
        cmd += ["-k", keyword]
    print("$", " ".join(cmd), flush=True)
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout_s, check=False).returncode
    except subprocess.TimeoutExpired:
        print(f"stopped after {timeout_s:.0f}s", file=sys.stderr)
        return 124


def junit_cases(paths: list[Path]) -> list[dict[str, Any]]:
    cases = []
    for path in paths:
        if not path.exists():
            continue
        for case in ET.parse(path).getroot().iter("testcase"):
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                if case.find(tag) is not None:
                    outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
            cases.append({"file": case.get("file") or case.get("classname", "").replace(".", "/") + ".py",
                          "name": case.get("name", ""), "seconds": float(case.get("time") or 0), "outcome": outcome})
    return cases


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def _measured(entry: dict[str, Any]) -> str:
    skip = {"scenario", "bound", "mode", "test"}
    return "; ".join(f"{k} {_short(_fmt(v), 2000 if k == 'statuses' else 220)}"
                     for k, v in _public(entry).items() if k not in skip and v not in (None, [], {}))


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry without what a merge attached to it (keys starting with `_`)."""
    return {k: v for k, v in entry.items() if not k.startswith("_")}


def _short(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + " …"


def _outcome(entry: dict[str, Any], cases: list[dict[str, Any]]) -> str:
    if "_kept" in entry:  # a row a merge (--only) kept: its outcome as the page showed it
        return str(entry["_kept"])
    name = entry["test"].split("::")[-1].split("[")[0]
    found = [c for c in cases if c["name"].split("[")[0] == name]
    return found[-1]["outcome"] if found else "?"


def hypothesis_counts(paths: list[Path]) -> dict[str, str]:
    """test name → "N passing, M failing, K invalid" from the statistics hypothesis puts in the junit file."""
    counts = {}
    for path in paths:
        if not path.exists():
            continue
        for prop in ET.parse(path).getroot().iter("property"):
            if not (prop.get("name") or "").startswith("hypothesis-statistics-"):
                continue
            text = base64.b64decode(prop.get("value") or "").decode(errors="replace")
            found = re.findall(r"(\d+) passing, (\d+) failing, and (\d+) invalid", text)
            if found:
                total = [sum(int(f[i]) for f in found) for i in range(3)]
                name = (prop.get("name") or "").rsplit("::", 1)[-1]
                counts[name] = f"{total[0]} passing, {total[1]} failing, {total[2]} invalid examples"
    return counts


def fuzz_rows(cases: list[dict[str, Any]], counts: dict[str, str]) -> list[str]:
    from tests.unit.spec.test_fuzz_spec import BASE_EXAMPLES

    rows = []
    for name, base in BASE_EXAMPLES.items():
        found = [c for c in cases if c["name"] == name]
        if found:
            case = found[-1]
            rows.append(f"| {FUZZ}: `{name}` | {base * 10} examples (profile `reliability`), 0 tracebacks, every "
                        f"rejection names file, line (and field past YAML syntax) | "
                        f"{counts.get(name, '?')} in {case['seconds']:.0f} s | {case['outcome']} |")
    return rows


def existing_rows(cases: list[dict[str, Any]], kept: list[str] | None = None) -> list[str]:
    rows = []
    for file, (scenario, bound, _) in EXISTING.items():
        found = [c for c in cases if c["file"].endswith(Path(file).name) and c["outcome"] != "skipped"]
        if found:
            seconds = sum(c["seconds"] for c in found)
            outcome = "FAILED" if any(c["outcome"] != "passed" for c in found) else "passed"
            tests = ", ".join(f"`{c['name']}`" for c in found)
            rows.append(f"| {scenario} ({file}) | {bound} | {tests}: {seconds:.0f} s | {outcome} |")
        else:
            rows += _kept(kept, f"| {scenario} ({file}) |") or [
                f"| {scenario} ({file}) | {bound} | not rerun here (`--with-existing`); covered by CI | - |"]
    return rows


def data_rows(cases: list[dict[str, Any]]) -> list[str]:
    data = [c for c in cases if c["file"].endswith("test_data_paths.py")]
    if not data:
        return []
    ok = sum(c["outcome"] == "passed" for c in data)
    outcome = "passed" if ok == len(data) else "FAILED"
    return [f"{DATA_ROW} traversal, `~`, absolute, URL/`file:`/drive schemes, percent-encoded, backslashes, "
            f"control characters, symlinks out of the data root | rejected with file, line, field and an example; "
            f"symlink escape fails the data step | {ok}/{len(data)} cases | {outcome} |"]


def _kept(kept: list[str] | None, prefix: str) -> list[str]:
    """Rows of the page as it was that start with `prefix` (a merge keeps what it did not rerun)."""
    return [row for row in kept or [] if row.startswith(prefix)]


def write_doc(entries: list[dict[str, Any]], junits: list[Path], mode: str, note: str = "",
              kept: list[str] | None = None) -> None:
    """The page from `entries` and the junit files; `kept`: rows of the previous page a merge did not rerun."""
    from tests.support.generated_docs import entry_for, stamp

    cases = junit_cases(junits)
    lines = [
        "# Reliability: load, faults and bad input, measured",
        stamp(entry_for(str(DOC.relative_to(ROOT)))),
        "",
        "Generated by `task reliability` (`benchmarks/reliability/run.py`); do not edit by hand. Each scenario",
        "states its bound and what it measured on this machine. CI runs the short form of the same tests",
        "(`tests/reliability`, `tests/unit/spec/test_fuzz_spec.py`) in `task test`.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"mode {mode}; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Everything on 127.0.0.1, real Ray 2.60 head,",
        "MLflow server (sqlite), Prometheus where a scenario needs it; load from `tests/reliability/loadgen.py`",
        LOADGEN_LINE,
        "",
        *([note, ""] if note else []),
        TABLE_HEAD,
        "|---|---|---|---|",
    ]
    for entry in entries:
        name = entry["scenario"] + (" (CI length)" if entry.get("mode") == "ci" else "")
        lines.append(f"| {name} | {entry['bound']} | {_measured(entry)} | {_outcome(entry, cases)} |")
    lines += fuzz_rows(cases, hypothesis_counts(junits)) or _kept(kept, f"| {FUZZ}")
    lines += data_rows(cases) or _kept(kept, DATA_ROW)
    lines += existing_rows(cases, kept)
    lines += NOTES
    lines += ["", "## Raw figures", "", "```json", *[json.dumps(_public(e), default=str) for e in entries], "```", ""]
    DOC.write_text("\n".join(lines))
    print(f"wrote {DOC.relative_to(ROOT)}")


def read_doc(path: Path) -> tuple[list[dict[str, Any]], list[str], str]:
    """The page as `write_doc` left it: its entries (each with the outcome its row shows, as `_kept`),
    its other rows (fuzzing, data paths, existing tests) and its note."""
    text = path.read_text()
    lines = text.splitlines()
    raw = text.split("## Raw figures", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    entries = [json.loads(line) for line in raw.splitlines() if line.strip()]
    rows = [line for line in lines[lines.index(TABLE_HEAD) + 2:] if line.startswith("| ")]
    for entry, row in zip(entries, rows, strict=False):
        entry["_kept"] = row.rsplit("|", 2)[-2].strip()
    head = "\n".join(lines[lines.index(LOADGEN_LINE) + 1:lines.index(TABLE_HEAD)]).strip()
    return entries, rows[len(entries):], head


def merge(previous: list[dict[str, Any]], rerun: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`previous` with the entries of every rerun (test, length) replaced by the rerun's, in place; a rerun
    entry the page did not have goes after the last entry of its length."""
    fresh: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in rerun:
        fresh.setdefault(_key(entry), []).append(entry)
    merged: list[dict[str, Any]] = []
    for entry in previous:
        if _key(entry) not in fresh:
            merged.append(entry)
        elif not any(_key(m) == _key(entry) for m in merged):
            merged += fresh[_key(entry)]
    for k, entries in fresh.items():
        if not any(_key(m) == k for m in merged):
            last = max((i for i, m in enumerate(merged) if m.get("mode") == k[1]), default=len(merged) - 1)
            merged[last + 1:last + 1] = entries
    return merged


def _key(entry: dict[str, Any]) -> tuple[str, str]:
    return entry["test"], str(entry.get("mode"))


def merged_note(old: str, rerun: list[dict[str, Any]], only: str, ci_length: bool, junits: list[Path]) -> str:
    when = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    names = "; ".join(sorted({e["scenario"] + (" (CI length)" if e.get("mode") == "ci" else "") for e in rerun}))
    command = f"`run.py --only '{only}'{' --ci-length' if ci_length else ''}`"
    return " ".join(p for p in (old, f"Rerun at {when} with {command} ({run_summary(junits)}) and merged in: "
                                     f"{names}.") if p)


def run_summary(junits: list[Path]) -> str:
    """"N passed, M skipped in S s": what pytest reported for a run, from its junit files."""
    cases = junit_cases(junits)
    counts: dict[str, int] = {}
    for case in cases:
        counts[case["outcome"]] = counts.get(case["outcome"], 0) + 1
    seconds = sum(case["seconds"] for case in cases)
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) + f" in {seconds:.0f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--with-existing", action="store_true", help="also rerun the tests/integration fault tests")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for each pytest run")
    parser.add_argument("--from", dest="source", type=Path, help="rewrite the doc from a results file")
    parser.add_argument("--junit", type=Path, action="append", default=[], help="junit files (with --from)")
    parser.add_argument("--note", default="", help="a sentence for the doc's header (with --from)")
    parser.add_argument("--only", default="", help="rerun the scenarios `pytest -k ONLY` selects; merge them in")
    parser.add_argument("--ci-length", action="store_true", help="with --only: rerun CI's short form")
    args = parser.parse_args()
    if args.ci_length and not args.only:
        parser.error("--ci-length reruns a subset in CI's short form: give the subset with --only")
    sys.path.insert(0, str(ROOT))
    if args.source:
        entries = [json.loads(line) for line in args.source.read_text().splitlines() if line.strip()]
        write_doc(entries, args.junit, entries[0]["mode"] if entries else "?", args.note)
        return 0
    with tempfile.TemporaryDirectory(prefix="ferry-reliability-") as tmp:
        out, junits = Path(tmp) / "results.jsonl", [Path(tmp) / "scenarios.xml"]
        out.touch()
        code = run_pytest(SCENARIOS, out, junits[0], args.timeout, args.only, full=not args.ci_length)
        if args.with_existing:
            for i, (file, (_, _, keyword)) in enumerate(EXISTING.items()):
                junits.append(Path(tmp) / f"existing-{i}.xml")
                code |= run_pytest([file], out, junits[-1], args.timeout, keyword)
        entries = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        if args.only:
            previous, kept, note = read_doc(DOC)
            note = merged_note(note, entries, args.only, args.ci_length, junits)
            write_doc(merge(previous, entries), junits, "full", note, kept)
        else:
            write_doc(entries, junits, "full")
    return code


if __name__ == "__main__":
    sys.exit(main())
