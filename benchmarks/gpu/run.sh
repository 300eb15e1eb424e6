#!/usr/bin/env bash
# The GPU check in one command, for the device machine's `run` tool (docs/benchmarks/gpu.md says how to call it):
# unpacks the packages benchmarks/gpu/prepare.py carried (.gpu-carry/site.tar.xz) into a temporary folder,
# puts them first on PYTHONPATH with ferry's sources, and runs check.py; results land in $OUT
# (gpu-check.json, gpu.md, check.log). Extra arguments go to check.py (e.g. --device cpu --tiny).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/.gpu-out}"
PY="${PYTHON:-python3}"
ARCHIVE=.gpu-carry/site.tar.xz
mkdir -p "$OUT"
if [[ ! -f "$ARCHIVE" ]]; then
  echo "missing $ARCHIVE: run '.venv/bin/python benchmarks/gpu/prepare.py' first and carry .gpu-carry" >&2
  exit 3
fi
SITE="$(mktemp -d /tmp/ferry-gpu-site.XXXXXX)"
trap 'rm -rf "$SITE"' EXIT
"$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' "$ARCHIVE" "$SITE"
export PYTHONPATH="$SITE:$PWD/platform/src:$PWD/workloads/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
"$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
  "cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")' \
  2>&1 | tee "$OUT/check.log"
set +e
"$PY" benchmarks/gpu/check.py --out "$OUT" --doc "$OUT/gpu.md" "$@" 2>&1 | tee -a "$OUT/check.log"
status=${PIPESTATUS[0]}
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv >>"$OUT/check.log" 2>&1
exit "$status"
