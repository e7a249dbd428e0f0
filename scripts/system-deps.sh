#!/usr/bin/env bash
# Install the Debian packages lookalike's demo and tests use, when missing and we are root.
#   dataset-fashion-mnist  the demo catalog (idx files in /usr/share/datasets/fashion-mnist)
#   redis-server           broker for the Celery workers (tests start their own on 127.0.0.1)
#   chromium               the real browser the web-page tests drive through Playwright
set -euo pipefail
want=("$@")
[ ${#want[@]} -gt 0 ] || want=(dataset-fashion-mnist redis-server chromium)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install -y ${missing[*]})" >&2
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
