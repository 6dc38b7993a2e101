// Pre-mints the benchmark's tokens: one RS256 and one ES256 signing key, their public JWKS
// (shared by Envoy's jwt_authn and portcullis, so both verify exactly the same tokens), and
// for each algorithm N distinct RFC 9068 access tokens (distinct `sub` and `jti`).
//
// Usage: node mint-tokens.mjs OUT_DIR COUNT ISSUER AUDIENCE
// Writes OUT_DIR/jwks.json, OUT_DIR/rs256.txt, OUT_DIR/es256.txt (one token per line), and
// OUT_DIR/rs256-roles.txt: one RS256 token like rs256.txt's first (`sub` bench-user-0) that also
// carries `roles: [editor]`, for bench-grpc's full-policy case (the other files are unchanged,
// so the other cases and bench-envoy verify the same tokens as before).
// Node's own crypto only: no packages needed.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const [outDir, countArg, issuer, audience] = process.argv.slice(2);
if (!outDir || !countArg || !issuer || !audience) {
  console.error('usage: node mint-tokens.mjs OUT_DIR COUNT ISSUER AUDIENCE');
  process.exit(2);
}
const count = Number.parseInt(countArg, 10);
fs.mkdirSync(outDir, { recursive: true });

const b64 = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value))
  .toString('base64url');

const keys = {
  RS256: crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }),
  ES256: crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }),
};
const kids = { RS256: 'bench-rs256', ES256: 'bench-es256' };

const jwks = {
  keys: Object.entries(keys).map(([alg, { publicKey }]) => ({
    ...publicKey.export({ format: 'jwk' }), kid: kids[alg], alg, use: 'sig',
  })),
};
fs.writeFileSync(path.join(outDir, 'jwks.json'), `${JSON.stringify(jwks, null, 2)}\n`);

const now = Math.floor(Date.now() / 1000);
for (const [alg, { privateKey }] of Object.entries(keys)) {
  const lines = [];
  for (let i = 0; i < count; i += 1) {
    lines.push(mint(alg, privateKey, {}, i));
  }
  fs.writeFileSync(path.join(outDir, `${alg.toLowerCase()}.txt`), `${lines.join('\n')}\n`);
}
fs.writeFileSync(path.join(outDir, 'rs256-roles.txt'),
  `${mint('RS256', keys.RS256.privateKey, { roles: ['editor'] }, 0)}\n`);
console.log(`minted ${count} RS256 and ${count} ES256 tokens in ${outDir}`);

// mint(alg, privateKey, extra, i): token i of the algorithm, with the extra claims.
function mint(alg, privateKey, extra, i) {
  const header = b64({ alg, typ: 'at+jwt', kid: kids[alg] });
  const claims = {
    iss: issuer,
    aud: audience,
    sub: `bench-user-${i}`,
    client_id: 'bench',
    scope: 'read:documents',
    iat: now,
    exp: now + 3 * 3600,
    jti: crypto.randomUUID(),
    ...extra,
  };
  const input = `${header}.${b64(claims)}`;
  const signature = crypto.sign('sha256', Buffer.from(input), alg === 'ES256'
    ? { key: privateKey, dsaEncoding: 'ieee-p1363' }
    : privateKey);
  return `${input}.${signature.toString('base64url')}`;
}
