"""bench/peers.py: `bench/run --peers`, authgate beside ECMWF's auth-o-tron in the same run.

Installs auth-o-tron AUTHOTRON_VERSION from crates.io into bench/.peers/ (git ignores it;
skipped when that version is already there), runs it on free loopback ports with a config
equivalent to authgate's scenarios, and measures three rows with bench/run's wrk settings:

- basic: `bench:bench-password` repeated (auth-o-tron's `plain` provider), beside (d);
- bearer: an IdP JWT repeated, verified against the IdP's JWKS (auth-o-tron's `jwt`
  provider). auth-o-tron 0.3.7 verifies RS256, RS512 and HS512 only (jwt_provider.rs), not
  (e)'s ES256: so the IdP here is an authgate that mints RS256 (a PEM key of tests/fixtures),
  and authgate is measured on that very JWT and JWKS too, its runs alternating with
  auth-o-tron's; (e)'s ES256 figure is printed under the table;
- invalid: the invalid token of (c), repeated (a 401 from both), beside (c).

The ratio is authgate / auth-o-tron in req/s (medians); a row meets the target when it is
>= PEER_RATIO, or when authgate is within BARE_ROOM of the bare baseline of the same run
(no room left to be faster). bench/run passes itself in as `bench` (its helpers).
"""

import base64
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTHOTRON_VERSION = "0.3.7"
PEERS_DIR = os.path.join(ROOT, "bench", ".peers")
AUTHOTRON = os.path.join(PEERS_DIR, "bin", "authotron")
RS256_KEY = os.path.join(ROOT, "tests", "fixtures", "rs256-test-only.pem")
PEER_RATIO = 2.5
BARE_ROOM = 0.90
# The authgate scenarios the peer rows stand beside: --peers adds them to --only.
NEEDS = {"c", "d", "e"}
# The requests of bench/run's run_all: its auth headers, (d)'s Basic credentials and
# (c)'s invalid token; the API token of (a) is the first line of the run's tokens.txt.
AUTH_HEADERS = ["X-Original-URI: /data", "X-Original-Method: GET", "Host: api.example.org"]
BASIC = "Authorization: Basic " + base64.b64encode(b"bench:bench-password").decode()
INVALID = "Authorization: Bearer agt_" + "A" * 43
# (row, title, authgate's result: a scenario of bench/run or this file's own RS256 run).
ROWS = [
    ("basic", "Basic auth, repeated", "d"),
    ("bearer", "IdP JWT via JWKS, repeated", "e_rs256"),
    ("invalid", "invalid token (401)", "c"),
]


def installed():
    """auth-o-tron AUTHOTRON_VERSION is in bench/.peers (cargo install's own record says so)."""
    try:
        with open(os.path.join(PEERS_DIR, ".crates.toml")) as f:
            record = f.read()
    except OSError:
        return False
    return os.access(AUTHOTRON, os.X_OK) and f'"authotron {AUTHOTRON_VERSION} ' in record


def install(log):
    if installed():
        return
    log(f"bench/run: installing auth-o-tron {AUTHOTRON_VERSION} into {PEERS_DIR} (cargo install)")
    # cargo builds in a temporary directory of its own, never in a target dir of the caller.
    env = {k: v for k, v in os.environ.items() if k != "CARGO_TARGET_DIR"}
    subprocess.run(["cargo", "install", "--locked", "--version", AUTHOTRON_VERSION, "authotron",
                    "--root", PEERS_DIR], check=True, env=env)
    if not installed():
        raise SystemExit(f"bench/run: cargo install left no authotron {AUTHOTRON_VERSION} in {PEERS_DIR}")


def authotron_config(workdir, port, metrics_port, cert_uri):
    """The same users and IdP as authgate's scenarios; no token store (no MongoDB), no
    augmenters; logs at info in JSON like authgate's (one line per success)."""
    path = os.path.join(workdir, f"authotron-{port}.yaml")
    with open(path, "w") as f:
        f.write(f"""version: "2.0.0"
server: {{ host: "127.0.0.1", port: {port} }}
metrics: {{ enabled: true, port: {metrics_port} }}
store: {{ enabled: false }}
services: []
providers:
  - type: plain
    name: bench-users
    realm: bench
    users:
      - {{ username: bench, password: bench-password }}
  - type: jwt
    name: bench-idp
    realm: bench-idp
    cert_uri: "{cert_uri}"
    iam_realm: bench-idp
jwt: {{ iss: "https://authotron.bench", aud: api, exp: 300, secret: bench-secret }}
logging: {{ level: info, format: json }}
""")
    return path


def authotron_run(bench, procs, workdir, opts, cert_uri, headers, expect, what):
    """One cold auth-o-tron, checked with one request, then measured: like bench/run's one_run."""
    port, metrics_port = bench.free_port(), bench.free_port()
    config = authotron_config(workdir, port, metrics_port, cert_uri)
    logfile = open(os.path.join(workdir, f"authotron-{port}.log"), "w")
    # Its log lines go to stdout: into a file, as authgate's (on its stderr) do.
    p = procs.start([AUTHOTRON], env=dict(os.environ, AOT_CONFIG_PATH=config),
                    stdout=logfile, stderr=subprocess.STDOUT)
    bench.wait_port(port, p, "auth-o-tron")
    url = f"http://127.0.0.1:{port}/authenticate"
    status = bench.curl_status(url, AUTH_HEADERS + headers)
    if status != expect:
        raise SystemExit(f"bench/run: auth-o-tron ({what}) answers {status}, expected {expect}"
                         f" (its log: {logfile.name}, BENCH_KEEP=1 keeps it)")
    r = bench.wrk(url, AUTH_HEADERS + headers, opts.duration, opts.connections)
    r["peak_rss_mib"] = bench.peak_rss_mib(p.pid)
    procs.stop(p)
    return r


def authgate_run(bench, procs, workdir, opts, headers, expect, extra):
    """One cold authgate, as in bench/run's one_run."""
    p, port, _ = bench.start_authgate(procs, workdir, extra=extra)
    url = f"http://127.0.0.1:{port}/auth"
    status = bench.curl_status(url, AUTH_HEADERS + headers)
    if status != expect:
        raise SystemExit(f"bench/run: authgate (RS256 JWT) answers {status}, expected {expect}")
    r = bench.wrk(url, AUTH_HEADERS + headers, opts.duration, opts.connections)
    r["peak_rss_mib"] = bench.peak_rss_mib(p.pid)
    procs.stop(p)
    return r


def start_rs256_idp(bench, procs, workdir):
    """(e)'s identity provider, an authgate on the run's store, minting RS256 instead of
    ES256 (mint.algorithm and mint.key_files through its AUTHGATE_ environment)."""
    port, admin_port = bench.free_port(), bench.free_port()
    config = bench.authgate_config(workdir, port, admin_port)
    env = dict(os.environ, AUTHGATE_MINT__ALGORITHM="RS256", AUTHGATE_MINT__KEY_FILES=f'["{RS256_KEY}"]')
    logfile = open(os.path.join(workdir, f"authgate-idp-{port}.log"), "w")
    p = procs.start([bench.AUTHGATE, "serve", "--config", config], env=env,
                    stdout=subprocess.DEVNULL, stderr=logfile)
    bench.wait_port(port, p, "authgate (RS256 IdP)")
    return p, port


def run(bench, procs, workdir, opts, results):
    """The peer rows: auth-o-tron's three, and authgate on the RS256 JWT."""
    missing = [s for s in sorted(NEEDS) if s not in results]
    if missing:
        raise SystemExit(f"bench/run: --peers needs scenarios {', '.join(missing)} of this run")
    with open(os.path.join(workdir, "tokens.txt")) as f:
        token_header = f"Authorization: Bearer {f.readline().strip()}"
    idp, idp_port = start_rs256_idp(bench, procs, workdir)
    jwks = f"http://127.0.0.1:{idp_port}/.well-known/jwks.json"
    jwt = bench.minted_jwt(f"http://127.0.0.1:{idp_port}/auth", AUTH_HEADERS + [token_header])
    bearer = f"Authorization: Bearer {jwt}"
    # (e)'s `jwt` provider, on RS256.
    extra = f"""providers:
  - {{ type: api_token }}
  - type: jwt
    issuer: "https://authgate.bench"
    jwks_uri: "{jwks}"
    audiences: [api]
    algorithms: [RS256]
    claims: {{ scopes_all: scope_all }}
"""
    out = {}
    bench.log("bench/run: peers: authgate and auth-o-tron on the same RS256 JWT, runs alternating")
    runs_authgate, runs_peer = [], []
    for _ in range(opts.runs):
        runs_authgate.append(authgate_run(bench, procs, workdir, opts, [bearer], 200, extra))
        runs_peer.append(authotron_run(bench, procs, workdir, opts, jwks, [bearer], 200, "bearer"))
    out["e_rs256"], out["authotron_bearer"] = bench.median_of(runs_authgate), bench.median_of(runs_peer)
    for row, headers, expect in (("basic", [BASIC], 200), ("invalid", [INVALID], 401)):
        bench.log(f"bench/run: peers: auth-o-tron, {row}")
        out[f"authotron_{row}"] = bench.median_of(
            [authotron_run(bench, procs, workdir, opts, jwks, headers, expect, row) for _ in range(opts.runs)])
    procs.stop(idp)
    return out


def report(results):
    """Prints the peer table; its rows for results.json."""
    peers, base = results["peers"], results["baseline"]["rps"]
    print(f"\nPeers: authgate beside auth-o-tron {AUTHOTRON_VERSION} (req/s, same run, same wrk settings; "
          f"target: authgate / auth-o-tron >= {PEER_RATIO}, or authgate / bare >= {BARE_ROOM:.2f})")
    print(f"{'row':<8} {'request':<27} {'scenario':<10} {'authgate':>8} {'auth-o-tron':>11} {'ag / aot':>8} "
          f"{'bare':>9} {'ag / bare':>9} {'aot p99 ms':>10} {'aot RSS':>8} {'target':>6}")
    rows = []
    for row, title, source in ROWS:
        mine = results[source] if source in results else peers[source]
        theirs = peers[f"authotron_{row}"]
        ratio, to_bare = mine["rps"] / theirs["rps"], mine["rps"] / base
        met = ratio >= PEER_RATIO or to_bare >= BARE_ROOM
        label = f"({source})" if source in results else "(e) RS256"
        rss = f"{theirs['peak_rss_mib']:.1f}" if theirs.get("peak_rss_mib") else "-"
        print(f"{row:<8} {title:<27} {label:<10} {mine['rps']:>8.0f} {theirs['rps']:>11.0f} {ratio:>8.2f} "
              f"{base:>9.0f} {to_bare:>9.2f} {theirs['p99_ms']:>10.3f} {rss:>8} {'ok' if met else 'MISS':>6}")
        rows.append({"id": row, "title": title, "authgate_scenario": source, "authgate": mine,
                     "authotron": theirs, "ratio": ratio, "authgate_to_bare": to_bare,
                     "bare_rps": base, "target_ratio": PEER_RATIO, "target_to_bare": BARE_ROOM, "met": met})
    if results.get("e"):
        print(f"   (e) on ES256, which auth-o-tron {AUTHOTRON_VERSION} cannot verify: {results['e']['rps']:.0f} req/s; "
              f"authgate RS256 / ES256: {peers['e_rs256']['rps'] / results['e']['rps']:.2f}")
    return {"authotron_version": AUTHOTRON_VERSION, "rows": rows}
