#!/usr/bin/env bash
# CI only (.github/workflows/e2e.yml): wait, bounded, for an Argo Workflow in `ferry` to succeed; fail at once
# when it fails or errors. Usage: wait-workflow.sh WORKFLOW MINUTES
set -euo pipefail
workflow="${1:?usage: wait-workflow.sh WORKFLOW MINUTES}"
minutes="${2:?usage: wait-workflow.sh WORKFLOW MINUTES}"
deadline=$(( $(date +%s) + minutes * 60 ))
while :; do
  phase="$(kubectl -n ferry get workflow "${workflow}" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
  echo "$(date -u +%H:%M:%S) ${workflow}: ${phase:-Pending}"
  case "${phase}" in
    Succeeded) break ;;
    Failed|Error) echo "::error::Workflow ${workflow} ended ${phase}"; exit 1 ;;
  esac
  if [ "$(date +%s)" -ge "${deadline}" ]; then
    echo "::error::Workflow ${workflow} did not finish within ${minutes} minutes"; exit 1
  fi
  sleep 20
done
kubectl -n ferry wait --for=jsonpath='{.status.phase}'=Succeeded "workflow/${workflow}" --timeout=60s
kubectl -n ferry get workflow "${workflow}" -o jsonpath='{range .status.nodes.*}{.displayName}{"\t"}{.phase}{"\n"}{end}'
