// Signs arbitrary claims with the provider's first key, as the provider would (RS256, at+jwt).
// usage: node sign.mjs JWKS_FILE CLAIMS_JSON   (prints the JWT)
import fs from 'node:fs';
import { SignJWT, importJWK } from 'jose';

const [file, claims] = process.argv.slice(2);
const jwk = JSON.parse(fs.readFileSync(file, 'utf8')).keys[0];
const key = await importJWK(jwk, 'RS256');
const jwt = await new SignJWT(JSON.parse(claims))
  .setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'at+jwt' })
  .sign(key);
console.log(jwt);
