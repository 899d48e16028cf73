#!/usr/bin/env bash
# Runs every test. Installs what the tests need when it is missing (Debian packages via
# apt-get, as root or through sudo), then runs `cargo test`. Extra arguments go to cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)

if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # policy-rc.d 101: the package must not start a system nginx on port 80; tests start their own.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A real OpenStack Keystone for tests/keystone.rs, in its own virtualenv (Python >= 3.11).
venv=tests/peers/keystone/.venv
if [ ! -x "$venv/bin/keystone-manage" ]; then
  echo "scripts/test.sh: installing Keystone into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tests/peers/keystone/requirements.txt
fi

exec cargo test --locked "$@"
