#!/usr/bin/env python3
"""Runs a real Keystone (PyPI `keystone`) for the integration tests.

usage: serve.py VENV WORKDIR PORT

SQLite, fernet tokens, an in-memory cache (without it every validation takes over a second
on these machines) except for revocation events (per-worker caches would disagree), served by gunicorn on 127.0.0.1:PORT. Provisions:
  admin / admin-password      project admin, system scope (keystone-manage bootstrap)
  gateway / gateway-password  project service, role service (authgate's service user)
  alice / alice-password      project demo, role member (implies reader)
  svc / svc-password          project service, role service (a service presenting X-Service-Token)
Prints one line `ready <pid>` when Keystone answers, then waits for gunicorn to exit.
Token lifetime is KEYSTONE_TOKEN_EXPIRATION seconds (default 3600).
"""
import json
import os
import subprocess
import sys
import time
import urllib.request

venv, workdir, port = sys.argv[1], sys.argv[2], sys.argv[3]
url = f"http://127.0.0.1:{port}/v3"
os.makedirs(workdir, exist_ok=True)
conf = os.path.join(workdir, "keystone.conf")
with open(conf, "w") as f:
    f.write(f"""[DEFAULT]
log_file = {workdir}/keystone.log
[database]
connection = sqlite:///{workdir}/keystone.db
[token]
provider = fernet
# Each gunicorn worker has its own memory cache, and a revocation invalidates only the
# cache of the worker that recorded it: token validations and revocation checks (both
# memoized in the token region) and revocation events are not cached.
caching = false
expiration = {os.environ.get("KEYSTONE_TOKEN_EXPIRATION", "3600")}
[fernet_tokens]
key_repository = {workdir}/fernet-keys
[fernet_receipts]
key_repository = {workdir}/fernet-receipts
[credential]
key_repository = {workdir}/credential-keys
[cache]
enabled = true
backend = dogpile.cache.memory
[revoke]
caching = false
""")
env = dict(os.environ, OS_KEYSTONE_CONFIG_FILES=conf, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
manage = [os.path.join(venv, "bin", "keystone-manage"), "--config-file", conf]
if not os.path.exists(os.path.join(workdir, "keystone.db")):
    for args in (["db_sync"],
                 ["fernet_setup", "--keystone-user", "root", "--keystone-group", "root"],
                 ["credential_setup", "--keystone-user", "root", "--keystone-group", "root"],
                 ["bootstrap", "--bootstrap-password", "admin-password",
                  "--bootstrap-public-url", url + "/", "--bootstrap-region-id", "RegionOne"]):
        subprocess.run(manage + args, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

gunicorn = subprocess.Popen(
    [os.path.join(venv, "bin", "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2",
     "--log-level", "warning", "keystone_app:application"],
    env=env, cwd=os.path.dirname(os.path.abspath(__file__)))


def call(method, path, body=None, token=None, ok=(200, 201, 204)):
    req = urllib.request.Request(url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            data = r.read()
            return r.status, r.headers, json.loads(data) if data else None
    except urllib.error.HTTPError as e:
        if e.code in ok:
            return e.code, e.headers, None
        raise


deadline = time.time() + 90
while True:
    try:
        call("GET", "/")
        break
    except Exception:
        if gunicorn.poll() is not None or time.time() > deadline:
            sys.exit("keystone did not start; see " + workdir + "/keystone.log")
        time.sleep(0.3)

password = lambda user, pw, project: {"auth": {"identity": {"methods": ["password"], "password": {
    "user": {"name": user, "domain": {"id": "default"}, "password": pw}}},
    "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
_, headers, _ = call("POST", "/auth/tokens", password("admin", "admin-password", "admin"))
admin = headers["X-Subject-Token"]


def find(kind, name):
    _, _, body = call("GET", f"/{kind}?name={name}", token=admin)
    items = body[kind]
    return items[0]["id"] if items else None


def ensure(kind, name, body):
    existing = find(kind, name)
    if existing:
        return existing
    _, _, created = call("POST", f"/{kind}", {kind[:-1]: body}, token=admin)
    return created[kind[:-1]]["id"]


service_role = ensure("roles", "service", {"name": "service"})
member_role = find("roles", "member")
service_project = ensure("projects", "service", {"name": "service", "domain_id": "default"})
demo_project = ensure("projects", "demo", {"name": "demo", "domain_id": "default"})
for user, pw, project, role in (("gateway", "gateway-password", service_project, service_role),
                                ("svc", "svc-password", service_project, service_role),
                                ("alice", "alice-password", demo_project, member_role)):
    uid = ensure("users", user, {"name": user, "password": pw, "domain_id": "default"})
    call("PUT", f"/projects/{project}/users/{uid}/roles/{role}", token=admin)

print(f"ready {gunicorn.pid}", flush=True)
sys.exit(gunicorn.wait())
