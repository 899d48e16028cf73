// A Node backend's verification of authgate's JWTs with `jose`, as a long-running process.
//
// Usage: node verify.mjs <jwks_url> <issuer> [<jwks_cache_seconds>]
//
// One `createRemoteJWKSet` (its cache: 10 min by default, or the given max age; a refetch
// on an unknown kid at most every 30 s) for the process's life, as a real backend keeps it.
// Reads one JSON request per stdin line, {"jwt", "audience", "algorithms" (null: the
// library's default), "typ" (null: not checked), "require" (claim names)}, and prints one
// JSON verdict per line: {"ok": true, "header", "claims"} or {"ok": false, "error": <code>,
// "message"}, both with "fetches" (JWKS fetches so far) and "known_before" (the JWT's kid
// was in the last fetched JWKS before this call). Prints "ready" once it reads requests.
import * as readline from 'node:readline';
import { createRemoteJWKSet, customFetch, decodeProtectedHeader, jwtVerify } from 'jose';

const [jwksUrl, issuer, cacheSeconds] = process.argv.slice(2);
let fetches = 0;
let kids = new Set();
const options = {
  [customFetch]: async (url, init) => {
    const response = await fetch(url, init);
    const body = await response.clone().json();
    fetches += 1;
    kids = new Set((body.keys ?? []).map((k) => k.kid));
    return response;
  },
};
if (cacheSeconds !== undefined) options.cacheMaxAge = Number(cacheSeconds) * 1000;
const jwks = createRemoteJWKSet(new URL(jwksUrl), options);

const lines = readline.createInterface({ input: process.stdin });
console.log('ready');
for await (const line of lines) {
  if (!line.trim()) continue;
  const request = JSON.parse(line);
  const verdict = {};
  try {
    verdict.known_before = kids.has(decodeProtectedHeader(request.jwt).kid);
    const { payload, protectedHeader } = await jwtVerify(request.jwt, jwks, {
      issuer,
      audience: request.audience,
      algorithms: request.algorithms ?? undefined,
      typ: request.typ ?? undefined,
      requiredClaims: request.require ?? [],
    });
    Object.assign(verdict, { ok: true, header: protectedHeader, claims: payload });
  } catch (err) {
    Object.assign(verdict, { ok: false, error: err.code ?? err.name, message: err.message });
  }
  verdict.fetches = fetches;
  console.log(JSON.stringify(verdict));
}
