#!/usr/bin/env bash
# Prometheus and Alertmanager binaries for the monitoring tests; optional for everything else.
set -u
if command -v prometheus >/dev/null && { command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null; }; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus prometheus-alertmanager >/dev/null \
    || echo "warning: could not install prometheus/prometheus-alertmanager; monitoring tests will be skipped"
else
  echo "note: install the Debian packages prometheus and prometheus-alertmanager (needs root and apt-get)"
fi
