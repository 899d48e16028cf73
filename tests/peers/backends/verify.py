"""A Python backend's verification of authgate's JWTs with PyJWT, as a long-running process.

Usage: verify.py <jwks_url> <issuer> [<jwks_cache_seconds>]

One `PyJWKClient` (with its JWK Set cache, default 300 s, or the given lifespan) for the
process's life, as a real backend keeps it. Reads one JSON request per stdin line,
{"jwt", "audience", "algorithms" (null: the library's default), "require" (claim names)},
and prints one JSON verdict per line: {"ok": true, "header", "claims"} or
{"ok": false, "error": "<exception class>", "message"}, both with "fetches" (JWKS fetches
so far) and "known_before" (the JWT's kid was in the last fetched JWKS before this call).
Prints "ready" once it reads requests.
"""

import json
import sys

import jwt

jwks_url, issuer = sys.argv[1], sys.argv[2]
lifespan = float(sys.argv[3]) if len(sys.argv) > 3 else None


class CountingClient(jwt.PyJWKClient):
    """PyJWKClient that remembers how often it fetched and which kids it saw last."""

    fetches = 0
    kids: set = set()

    def fetch_data(self):
        data = super().fetch_data()
        CountingClient.fetches += 1
        CountingClient.kids = {k.get("kid") for k in data.get("keys", [])}
        return data


client = CountingClient(jwks_url) if lifespan is None else CountingClient(jwks_url, lifespan=lifespan)
print("ready", flush=True)

for line in sys.stdin:
    if not line.strip():
        continue
    request = json.loads(line)
    token = request["jwt"]
    verdict = {}
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        verdict["known_before"] = kid in CountingClient.kids
        key = client.get_signing_key_from_jwt(token)
        complete = jwt.decode_complete(
            token,
            key,
            algorithms=request.get("algorithms"),
            audience=request["audience"],
            issuer=issuer,
            options={"require": request.get("require", [])},
        )
        verdict.update(ok=True, header=complete["header"], claims=complete["payload"])
    except Exception as e:  # every refusal is a verdict, not a crash
        verdict.update(ok=False, error=type(e).__name__, message=str(e))
    verdict["fetches"] = CountingClient.fetches
    print(json.dumps(verdict), flush=True)
