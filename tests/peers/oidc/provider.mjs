// A real OpenID Connect provider (panva/oidc-provider) for authgate's integration tests.
// usage: node provider.mjs PORT JWKS_FILE
//   JWKS_FILE holds the private signing keys ({"keys": [...]}); it is created with one new
//   RS256 key when missing. Restart with another file to rotate keys.
// Prints `ready <issuer>` when listening. Counts token and JWKS requests at GET /_count.
// Clients: machine (client_credentials), app and rotating (authorization code + refresh
// tokens; rotating's refresh tokens rotate on use), gateway-basic and gateway-post
// (introspection, one per client authentication method), and web (browser sign-in through
// authgate: authorization code with PKCE, refresh tokens always, back-channel logout), whose
// URLs come from the environment: OIDC_WEB_REDIRECT (redirect_uri, comma-separated),
// OIDC_WEB_POST_LOGOUT (post_logout_redirect_uris), OIDC_WEB_BACKCHANNEL
// (backchannel_logout_uri); OIDC_ACCESS_TTL shortens access tokens (seconds). Users log in
// through the development interactions with any name and password. GET /_count also
// counts refresh-token grants (`refresh`).
import { generateKeyPair } from 'node:crypto';
import { promisify } from 'node:util';
import fs from 'node:fs';
import Provider from 'oidc-provider';

const [port, jwksFile] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

let jwks;
if (fs.existsSync(jwksFile)) {
  jwks = JSON.parse(fs.readFileSync(jwksFile, 'utf8'));
} else {
  const { privateKey } = await promisify(generateKeyPair)('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  jwk.kid = `k-${Date.now()}`;
  jwk.alg = 'RS256';
  jwk.use = 'sig';
  jwks = { keys: [jwk] };
  fs.writeFileSync(jwksFile, JSON.stringify(jwks));
}

const accessTTL = Number(process.env.OIDC_ACCESS_TTL || 600);
const list = (name) => (process.env[name] || '').split(',').filter(Boolean);
const resources = {
  'urn:api': { scope: 'read:data write:data', audience: 'api', accessTokenFormat: 'jwt', accessTokenTTL: accessTTL },
  'urn:other': { scope: 'read:data', audience: 'other-api', accessTokenFormat: 'jwt', accessTokenTTL: 600 },
  'urn:opaque': { scope: 'read:data write:data', audience: 'api', accessTokenFormat: 'opaque', accessTokenTTL: 600 },
  'urn:other-opaque': { scope: 'read:data', audience: 'other-api', accessTokenFormat: 'opaque', accessTokenTTL: 600 },
};

const codeClient = (id) => ({
  client_id: id,
  client_secret: `${id}-secret`,
  grant_types: ['authorization_code', 'refresh_token'],
  redirect_uris: [`${issuer}/cb`],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
});
const introspectionClient = (id, method) => ({
  client_id: id,
  client_secret: `${id}-secret`,
  grant_types: [],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: method,
});

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'machine',
    client_secret: 'machine-secret',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
  },
  codeClient('app'),
  codeClient('rotating'),
  introspectionClient('gateway-basic', 'client_secret_basic'),
  introspectionClient('gateway-post', 'client_secret_post'),
  {
    client_id: 'web',
    client_secret: 'web-secret',
    grant_types: ['authorization_code', 'refresh_token'],
    redirect_uris: list('OIDC_WEB_REDIRECT').length ? list('OIDC_WEB_REDIRECT') : [`${issuer}/cb`],
    post_logout_redirect_uris: list('OIDC_WEB_POST_LOGOUT'),
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...(process.env.OIDC_WEB_BACKCHANNEL ? {
      backchannel_logout_uri: process.env.OIDC_WEB_BACKCHANNEL,
      backchannel_logout_session_required: true,
    } : {}),
  },
  ],
  // Every peer of the tests is on loopback, which oidc-provider's SSRF protection refuses
  // to call (back-channel logout to authgate): its dispatcher is left out here.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  pkce: { required: (ctx, client) => client.clientId === 'web' || client.tokenEndpointAuthMethod === 'none' },
  issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token')
    && (client.clientId === 'web' || code.scopes.has('offline_access')),
  jwks,
  rotateRefreshToken: (ctx) => ctx.oidc.client.clientId === 'rotating',
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:api',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (!resources[indicator]) throw new Error(`unknown resource ${indicator}`);
        return resources[indicator];
      },
    },
  },
  extraTokenClaims: (ctx, token) => ({
    preferred_username: token.accountId ?? token.clientId,
    realm_access: { roles: ['machine', 'reader'] },
    groups: ['/ops'],
    tenant: 'acme',
  }),
});

const calls = { token: 0, jwks: 0, refresh: 0 };
provider.on('grant.success', (ctx) => {
  if (ctx.oidc.params.grant_type === 'refresh_token') calls.refresh += 1;
});
provider.on('backchannel.error', (ctx, err, client) => {
  console.error(`backchannel error for ${client.clientId}: ${err.message}`);
});
provider.use(async (ctx, next) => {
  if (ctx.path === '/_count') {
    ctx.body = calls;
    return;
  }
  if (ctx.path === '/token') calls.token += 1;
  if (ctx.path === '/jwks') calls.jwks += 1;
  await next();
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
