#!/usr/bin/env bash
# The Debian packages whose binaries the tests and benchmarks run (tests/support/binaries.py names the same
# ones): Prometheus and Alertmanager (`ferry up`, the monitoring tests; promtool and amtool come with them),
# the shell linter that actionlint checks `run:` scripts with (shellcheck), Redis (the online feature state), nodejs (the plan workflow's
# github-script) and wrk (the serving benchmark). Installs what is missing as root or through passwordless sudo, and exits 1,
# naming the packages, when it cannot: a test that needs one fails under CI=true (`task setup` ignores the
# failure outside CI, where those tests skip with the install command).
set -euo pipefail

declare -A PACKAGE=(  # binary -> the Debian package that ships it
  [prometheus]=prometheus
  [promtool]=prometheus
  [prometheus-alertmanager]=prometheus-alertmanager
  [amtool]=prometheus-alertmanager
  [shellcheck]=shellcheck
  [node]=nodejs
  [wrk]=wrk
  [redis-server]=redis-server
)

missing_packages() {
  local binary
  for binary in "${!PACKAGE[@]}"; do
    command -v "$binary" >/dev/null || echo "${PACKAGE[$binary]}"
  done | sort -u
}

fail() {
  echo "error: cannot install the Debian packages $*" >&2
  echo "       install them (Debian: sudo apt-get install ${missing[*]}), or run this script as root;" >&2
  echo "       until then the tests that run them fail under CI=true and skip elsewhere" >&2
  exit 1
}

mapfile -t missing < <(missing_packages)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  fail "${missing[*]}: this needs root or passwordless sudo"
fi
command -v apt-get >/dev/null || fail "${missing[*]}: no apt-get on this machine"

echo "installing the Debian packages ${missing[*]}"
"${as_root[@]}" apt-get update -qq >/dev/null || fail "${missing[*]}: apt-get update failed"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
  >/dev/null || fail "${missing[*]}: apt-get install failed"
# Where systemd runs, the packages start system services on 9090/9093/6379: the tests start their own on loopback.
if [ -d /run/systemd/system ]; then
  "${as_root[@]}" systemctl disable --now prometheus prometheus-alertmanager redis-server >/dev/null 2>&1 || true
fi

mapfile -t missing < <(missing_packages)
[ ${#missing[@]} -eq 0 ] || fail "${missing[*]}: still missing after apt-get install"
echo "setup: Debian packages installed in ${SECONDS} s"
