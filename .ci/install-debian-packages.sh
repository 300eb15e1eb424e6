#!/usr/bin/env bash
# Debian packages: Prometheus and Alertmanager for the monitoring tests, wrk for the serving benchmark,
# shellcheck for actionlint (tests/unit/test_github_workflows.py).
# Optional for everything else, so a machine without root or apt-get only gets a note.
set -u
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v wrk >/dev/null || missing+=(wrk)
command -v shellcheck >/dev/null || missing+=(shellcheck)  # actionlint checks `run:` scripts with it
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null \
    || echo "warning: could not install ${missing[*]}; the tests that need them will be skipped"
else
  echo "note: install the Debian packages ${missing[*]} (needs root and apt-get)"
fi
