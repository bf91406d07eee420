#!/bin/sh
# The browser tests drive Debian's chromium (headless). Install it when missing and we may
# (root with apt-get); otherwise say what to do. Run by `make test`.
set -e
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[cellbank] installing Debian's chromium for the dashboard test (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "[cellbank] chromium is missing: install Debian's chromium (apt-get install chromium)" >&2
exit 1
