// A strict OAuth 2.0 / OpenID client's view of authgate (`oauth4webapi`): discovery through
// `/.well-known/openid-configuration` (OpenID Connect Discovery) and
// `/.well-known/oauth-authorization-server` (RFC 8414), each followed by a resource server's
// RFC 9068 validation of a minted JWT (`validateJwtAccessToken`) with the discovered jwks_uri.
//
// Usage: node discover.mjs <issuer> <audience> <jwt>
// Prints one JSON object: {"oidc": <result>, "oauth2": <result>}, each result
// {"ok": true, "metadata", "claims"} or {"ok": false, "step", "error", "message"}.
// Plain http is allowed only because the test's authgate listens on loopback.
import * as oauth from 'oauth4webapi';

const [issuer, audience, jwt] = process.argv.slice(2);
const insecure = { [oauth.allowInsecureRequests]: true };

async function through(algorithm) {
  let step = 'discoveryRequest';
  try {
    const expected = new URL(issuer);
    const response = await oauth.discoveryRequest(expected, { algorithm, ...insecure });
    step = 'processDiscoveryResponse';
    const metadata = await oauth.processDiscoveryResponse(expected, response);
    step = 'validateJwtAccessToken';
    const request = new Request(`${issuer}/data`, { headers: { authorization: `Bearer ${jwt}` } });
    const claims = await oauth.validateJwtAccessToken(metadata, request, audience, insecure);
    return { ok: true, metadata, claims };
  } catch (err) {
    return { ok: false, step, error: err.code ?? err.name, message: err.message };
  }
}

console.log(JSON.stringify({ oidc: await through('oidc'), oauth2: await through('oauth2') }));
