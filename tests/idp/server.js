// A real OpenID Provider for portcullis's end-to-end tests and the local demo.
//
// It is `oidc-provider` (a certified OP) configured for the client-credentials grant issuing
// RFC 9068 JWT access tokens through resource indicators (RFC 8707): the `resource` parameter
// becomes the token's `aud`, the granted scopes its `scope`. Discovery, JWKS, introspection
// (RFC 7662) and revocation (RFC 7009) are served by the provider itself.
//
// Signing keys are generated at start (one RS256 and one ES256 key) and never leave this
// process except as public JWKs. A second loopback listener is the test's control plane for
// key rotation:
//
//   POST /rotate?alg=RS256   add a new key and make it current for signing; the old one stays
//                            published, so tokens it signed keep verifying
//   POST /retire?alg=RS256   remove every key of that alg but the current one from the JWKS
//   POST /signing-alg?alg=ES256   sign subsequent access tokens with that algorithm
//   POST /introspection?mode=normal|not-json|no-active|slow
//                            how the introspection endpoint answers: as the provider does, with
//                            a body that is not JSON, with JSON lacking `active`, or only after
//                            3 s (bad-input and deadline tests)
//   GET  /state              kids per algorithm (current first), the signing algorithm, and
//                            how many JWKS requests were served and how long ago the last one
//                            was (so a test can time a rotation against a relying party's
//                            refetch rate limit); how many introspection requests were served
//
// `portcullis-opaque` gets OPAQUE access tokens even with a `resource` (its `aud`), so they are
// checked by introspection; `portcullis-introspector` (client_secret_basic) and
// `portcullis-introspector-post` (client_secret_post) are the clients a relying party
// introspects with.
//
// oidc-provider keeps its keystore private and fixed for the life of a Provider instance, and
// signs with the key named by the resource server's `jwt.sign.kid`. A key change therefore
// builds a new Provider with the new key set and swaps it in behind the same listening server,
// so the issuer URL and port never change. Requests already in flight finish on the old one.
//
// Usage: node server.js [--port N] [--admin-port N]   (0 or absent: the OS picks)
// Prints one line when both listeners are up:
//   idp ready http://127.0.0.1:PORT admin http://127.0.0.1:ADMIN_PORT
// This is a test fixture: it listens on loopback only and its client secrets are public.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.IDP_PORT ?? '0' },
    'admin-port': { type: 'string', default: process.env.IDP_ADMIN_PORT ?? '0' },
    'token-ttl': { type: 'string', default: process.env.IDP_TOKEN_TTL ?? '3600' },
  },
});

const HOST = '127.0.0.1';
const ALL_SCOPES = [
  'read:documents',
  'write:documents',
  'delete:documents',
  'admin',
];
const TOKEN_TTL = Number.parseInt(args['token-ttl'], 10);

// Static clients. `roles` and `claims` are added to their access tokens (see extraTokenClaims).
const CLIENTS = [
  {
    client_id: 'portcullis-test',
    client_secret: 'portcullis-test-secret',
    scope: ALL_SCOPES.join(' '),
    roles: ['admin'],
  },
  {
    client_id: 'portcullis-reader',
    client_secret: 'portcullis-reader-secret',
    scope: 'read:documents',
    roles: ['viewer'],
  },
  // A user-like caller that signed in with a password only, and one that also used a one-time
  // code: `amr`/`acr`/`auth_time` (RFC 8176, OIDC Core) as an OP records them for step-up
  // (RFC 9470) tests. `auth_time` is the time the token is issued.
  {
    client_id: 'portcullis-writer',
    client_secret: 'portcullis-writer-secret',
    scope: 'read:documents write:documents',
    roles: ['user'],
    claims: { amr: ['pwd'], acr: 'urn:example:loa:1' },
  },
  {
    client_id: 'portcullis-mfa',
    client_secret: 'portcullis-mfa-secret',
    scope: 'read:documents write:documents',
    roles: ['user'],
    claims: { amr: ['pwd', 'otp'], acr: 'urn:example:loa:2' },
  },
  // Opaque access tokens (introspection), with the resource as their `aud`.
  {
    client_id: 'portcullis-opaque',
    client_secret: 'portcullis-opaque-secret',
    scope: 'read:documents write:documents',
    roles: ['user'],
    opaque: true,
  },
  // Relying parties calling the introspection endpoint, one per client authentication method.
  {
    client_id: 'portcullis-introspector',
    client_secret: 'portcullis-introspector-secret',
    scope: 'read:documents',
    roles: [],
  },
  {
    client_id: 'portcullis-introspector-post',
    client_secret: 'portcullis-introspector-post-secret',
    scope: 'read:documents',
    roles: [],
    token_endpoint_auth_method: 'client_secret_post',
  },
];

const SUPPORTED_ALGS = ['RS256', 'ES256'];

let keySerial = 0;

function generateKey(alg) {
  keySerial += 1;
  const { privateKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  const kid = `${alg.toLowerCase()}-${keySerial}-${crypto.randomBytes(4).toString('hex')}`;
  return {
    ...jwk, kid, alg, use: 'sig',
  };
}

// Current key first for each algorithm.
const keys = Object.fromEntries(SUPPORTED_ALGS.map((alg) => [alg, [generateKey(alg)]]));
let signingAlg = 'RS256';
let issuer;
let provider;

function buildProvider() {
  const jwks = { keys: SUPPORTED_ALGS.flatMap((alg) => keys[alg]) };
  const p = new Provider(issuer, {
    clients: CLIENTS.map(({
      roles: _roles, claims: _claims, opaque: _opaque, ...client
    }) => ({
      token_endpoint_auth_method: 'client_secret_basic',
      ...client,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    })),
    jwks,
    scopes: ['openid', 'offline_access', ...ALL_SCOPES],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (_ctx, _client, oneOf) => oneOf,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resourceIndicator, client) => ({
          scope: ALL_SCOPES.join(' '),
          audience: resourceIndicator,
          accessTokenTTL: TOKEN_TTL,
          accessTokenFormat: CLIENTS.find((c) => c.client_id === client?.clientId)?.opaque
            ? 'opaque'
            : 'jwt',
          jwt: { sign: { alg: signingAlg, kid: keys[signingAlg][0].kid } },
        }),
      },
    },
    extraTokenClaims: (_ctx, token) => {
      const client = CLIENTS.find((c) => c.client_id === token.clientId);
      if (!client) return undefined;
      const user = client.claims
        ? { ...client.claims, auth_time: Math.floor(Date.now() / 1000) }
        : {};
      return { roles: client.roles, ...user };
    },
    ttl: { ClientCredentials: TOKEN_TTL },
  });
  // Errors the OP answers to clients (bad secret, bad scope) are expected in tests; keep
  // stderr for our own failures.
  p.on('server_error', (_ctx, err) => console.error('idp server_error:', err));
  return p;
}

function rebuild() {
  provider = buildProvider();
  handler = provider.callback();
}

let handler = () => {};

function algParam(url) {
  const alg = url.searchParams.get('alg') ?? signingAlg;
  if (!SUPPORTED_ALGS.includes(alg)) {
    throw new Error(`unsupported alg ${alg}; use one of ${SUPPORTED_ALGS.join(', ')}`);
  }
  return alg;
}

let jwksRequests = 0;
let lastJwksRequestAt;
let introspectionRequests = 0;
let introspectionMode = 'normal';
const INTROSPECTION_MODES = ['normal', 'not-json', 'no-active', 'slow'];

function state() {
  return {
    issuer,
    signing_alg: signingAlg,
    jwks_requests: jwksRequests,
    introspection_requests: introspectionRequests,
    introspection_mode: introspectionMode,
    ms_since_last_jwks_request: lastJwksRequestAt === undefined
      ? null
      : Date.now() - lastJwksRequestAt,
    keys: Object.fromEntries(SUPPORTED_ALGS.map((alg) => [alg, keys[alg].map((k) => k.kid)])),
  };
}

function admin(req, res) {
  const url = new URL(req.url, `http://${HOST}`);
  const reply = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  try {
    if (req.method === 'GET' && url.pathname === '/state') {
      return reply(200, state());
    }
    if (req.method === 'POST' && url.pathname === '/rotate') {
      const alg = algParam(url);
      const key = generateKey(alg);
      keys[alg].unshift(key);
      rebuild();
      return reply(200, { current: key.kid, ...state() });
    }
    if (req.method === 'POST' && url.pathname === '/retire') {
      const alg = algParam(url);
      const removed = keys[alg].splice(1).map((k) => k.kid);
      rebuild();
      return reply(200, { removed, ...state() });
    }
    if (req.method === 'POST' && url.pathname === '/introspection') {
      const mode = url.searchParams.get('mode') ?? 'normal';
      if (!INTROSPECTION_MODES.includes(mode)) {
        throw new Error(`unknown mode ${mode}; use one of ${INTROSPECTION_MODES.join(', ')}`);
      }
      introspectionMode = mode;
      return reply(200, state());
    }
    if (req.method === 'POST' && url.pathname === '/signing-alg') {
      signingAlg = algParam(url);
      rebuild();
      return reply(200, state());
    }
    return reply(404, { error: 'not_found' });
  } catch (err) {
    return reply(400, { error: String(err.message ?? err) });
  }
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, HOST, () => resolve(server.address().port));
  });
}

const opServer = http.createServer((req, res) => {
  if (req.url === '/jwks' || req.url.startsWith('/jwks?')) {
    jwksRequests += 1;
    lastJwksRequestAt = Date.now();
  }
  if (req.url === '/token/introspection' || req.url.startsWith('/token/introspection?')) {
    introspectionRequests += 1;
    if (introspectionMode === 'not-json') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html>maintenance</html>');
      return;
    }
    if (introspectionMode === 'no-active') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ sub: 'someone', scope: 'read:documents' }));
      return;
    }
    if (introspectionMode === 'slow') {
      setTimeout(() => handler(req, res), 3000);
      return;
    }
  }
  handler(req, res);
});
const adminServer = http.createServer(admin);

const opPort = await listen(opServer, Number.parseInt(args.port, 10));
issuer = `http://${HOST}:${opPort}`;
rebuild();
const adminPort = await listen(adminServer, Number.parseInt(args['admin-port'], 10));

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}

console.log(`idp ready ${issuer} admin http://${HOST}:${adminPort}`);
