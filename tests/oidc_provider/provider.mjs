// A real OpenID Provider for the test suite: panva's certified oidc-provider, configured from one
// JSON file and served over HTTPS by Node's own https server (no proxy in front, so the provider's
// cookies are Secure because the socket is TLS, and `proxy` stays off).
//
//   node provider.mjs CONFIG.json
//
// The config file holds every secret (client secrets, cookie keys, users' passwords, the path of
// the private JWKS); nothing secret is taken from the command line or the environment.
// SIGHUP re-reads the config and the JWKS file and swaps in a new Provider instance on the same
// listening socket: the in-memory adapter's storage is module-level, so sessions, grants and
// refresh tokens survive a key rotation, and no connection is refused while it happens.
// Written for oidc-provider 8.x (see package.json); tests/oidc_fixture.py drives it.

import { readFileSync } from 'node:fs';
import * as https from 'node:https';
import { timingSafeEqual } from 'node:crypto';

import Provider, { errors } from 'oidc-provider';

const PREFIX = 'oidc-provider fixture:';

// A problem with the config, reported as one line: fatal at start, refused (old config kept)
// on SIGHUP.
class ConfigError extends Error {}

function fail(message) {
  // One line, no stack: the fixture's log shows what to fix.
  process.stderr.write(`${PREFIX} ${message}\n`);
  process.exit(2);
}

function readJson(path, what) {
  let text;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${what} ${path}: ${err.code || err.message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${what} ${path} is not valid JSON: ${err.message}`);
  }
}

function loadConfig(path) {
  const config = readJson(path, 'config file');
  for (const key of ['issuer', 'port', 'tls_cert_file', 'tls_key_file', 'jwks_file', 'cookie_keys', 'clients', 'users']) {
    if (config[key] === undefined) throw new ConfigError(`${path}: key "${key}" is missing`);
  }
  const jwks = readJson(config.jwks_file, 'JWKS file');
  if (!Array.isArray(jwks.keys) || jwks.keys.length === 0) {
    throw new ConfigError(`${config.jwks_file}: "keys" must be a non-empty list`);
  }
  return { ...config, jwks };
}

function html(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>${html(title)}</title></head>`
    + `<body><main><h1>${html(title)}</h1>${body}</main></body></html>`;
}

function loginPage(uid, clientId, error) {
  const message = error ? `<p id="login-error" role="alert">${html(error)}</p>` : '';
  return page('Test IdP sign-in', `<p>Signing in to <code id="client-id">${html(clientId)}</code></p>${message}`
    + `<form id="login-form" method="post" action="/interaction/${html(uid)}/login" autocomplete="off">`
    + '<label>Username <input id="username" name="username" required autofocus></label>'
    + '<label>Password <input id="password" name="password" type="password" required></label>'
    + '<button id="login-submit" type="submit">Sign in</button></form>');
}

function sameSecret(given, expected) {
  const a = Buffer.from(String(given));
  const b = Buffer.from(String(expected));
  return a.length === b.length && timingSafeEqual(a, b);
}

function providerConfiguration(config) {
  const users = config.users;
  const resourceServers = config.resource_servers || {};
  const ca = config.backchannel_ca_files?.map((file) => readFileSync(file, 'utf8'));
  const backchannelAgent = ca ? new https.Agent({ ca }) : undefined;
  return {
    clients: config.clients,
    jwks: config.jwks,
    // Prefixed names: two issuers on one host (localhost, any port) would otherwise overwrite
    // each other's `_session` cookie, since cookies ignore the port.
    cookies: {
      keys: config.cookie_keys,
      names: Object.fromEntries(['session', 'interaction', 'resume'].map(
        (n) => [n, `${config.cookie_prefix || 'op'}_${n}`],
      )),
      long: { httpOnly: true, sameSite: 'none', signed: true },
      short: { httpOnly: true, sameSite: 'lax', signed: true },
    },
    // Explicit lifetimes (seconds; the config's `ttl` overrides any), so a test can make an ID
    // token or a session short without waiting for the library's defaults.
    ttl: {
      AccessToken: 600, ClientCredentials: 600, IdToken: 3600, RefreshToken: 86400,
      Grant: 86400, Session: 86400, Interaction: 600, ...config.ttl,
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    // Put the granted scopes' claims (groups included) in the ID token, as Keycloak, Okta and
    // Entra ID do, instead of only at the userinfo endpoint.
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    pkce: { methods: ['S256'], required: () => true },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true, logoutSource },
      backchannelLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => false,
        getResourceServerInfo(ctx, resourceIndicator) {
          const server = Object.hasOwn(resourceServers, resourceIndicator) ? resourceServers[resourceIndicator] : undefined;
          if (!server) throw new errors.InvalidTarget(`unknown resource indicator ${resourceIndicator}`);
          return {
            scope: server.scope || '',
            audience: server.audience || resourceIndicator,
            accessTokenTTL: server.ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    // Refresh tokens for every client allowed the refresh_token grant (Keycloak's behaviour), not
    // only with offline_access (which 8.x drops unless prompt=consent); rotated on every use
    // unless the config says otherwise, so a replayed refresh token is detectably refused.
    issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => config.rotate_refresh_tokens !== false,
    clientBasedCORS: () => false,
    httpOptions: () => (backchannelAgent ? { agent: backchannelAgent } : {}),
    async findAccount(ctx, sub) {
      const user = users[sub];
      if (!user) return undefined;
      return { accountId: sub, claims: () => ({ sub, ...user.claims }) };
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Test IdP error', Object.entries(out)
        .map(([key, value]) => `<p><strong>${html(key)}</strong>: <span class="${html(key)}">${html(value)}</span></p>`).join(''));
    },
  };
}

async function logoutSource(ctx, form) {
  ctx.body = page('Sign out of the test IdP?', `${form}`
    + '<button id="logout-yes" type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>'
    + '<button id="logout-no" type="submit" form="op.logoutForm">No, stay signed in</button>');
}

function buildProvider(config) {
  const provider = new Provider(config.issuer, providerConfiguration(config));
  provider.on('server_error', (ctx, err) => process.stderr.write(`${PREFIX} server_error ${err.stack}\n`));
  provider.on('backchannel.error', (ctx, err, client) => process.stderr.write(
    `${PREFIX} back-channel logout to ${client.clientId} failed: ${err.message}\n`,
  ));
  provider.on('backchannel.success', (ctx, client) => process.stdout.write(
    `${PREFIX} back-channel logout delivered to ${client.clientId}\n`,
  ));
  return provider;
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 65536) throw new Error('form body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(body);
}

// The consent a first-party client gets without a page: every scope, claim and resource scope
// the request asks for (the appliance is registered by its operator, as with Keycloak's
// "consent required: off").
async function grantEverything(provider, details) {
  const { prompt: { details: missing }, params, session, grantId } = details;
  const grant = grantId ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

async function interaction(provider, users, req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  if (prompt.name === 'consent') {
    const grantId = await grantEverything(provider, details);
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  if (prompt.name !== 'login') {
    send(res, 400, page('Test IdP error', `<p>unsupported prompt ${html(prompt.name)}</p>`));
    return;
  }
  if (req.method === 'GET') {
    send(res, 200, loginPage(uid, params.client_id));
    return;
  }
  const form = await readForm(req);
  const username = form.get('username') || '';
  const user = Object.hasOwn(users, username) ? users[username] : undefined;
  if (!user || !sameSecret(form.get('password') || '', user.password)) {
    send(res, 200, loginPage(uid, params.client_id, 'Invalid username or password.'));
    return;
  }
  await provider.interactionFinished(req, res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
}

// The config and the Provider built from it; a Provider's own validation errors (a bad client
// registration, a malformed key) count as config errors.
function configure(path) {
  const config = loadConfig(path);
  let provider;
  try {
    provider = buildProvider(config);
  } catch (err) {
    throw new ConfigError(`${path}: ${err.message}`);
  }
  return { config, provider, handler: provider.callback() };
}

function main() {
  const configPath = process.argv[2];
  if (!configPath || process.argv.length !== 3) fail('usage: node provider.mjs CONFIG.json');
  let config;
  let provider;
  let handler;
  try {
    ({ config, provider, handler } = configure(configPath));
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }

  let tls;
  try {
    tls = { cert: readFileSync(config.tls_cert_file), key: readFileSync(config.tls_key_file) };
  } catch (err) {
    fail(`cannot read the TLS certificate or key (tls_cert_file/tls_key_file): ${err.code || err.message}`);
  }
  const server = https.createServer(tls, (req, res) => {
    const { pathname } = new URL(req.url, config.issuer);
    if (/^\/interaction\/[^/]+(\/login)?$/.test(pathname)) {
      const current = provider;
      interaction(current, config.users, req, res).catch((err) => {
        // An expired or unknown interaction is the user's problem (a stale tab), not a crash.
        const status = err instanceof errors.OIDCProviderError ? err.statusCode : 500;
        if (status === 500) process.stderr.write(`${PREFIX} interaction failed: ${err.stack}\n`);
        if (!res.headersSent) send(res, status, page('Test IdP error', `<p class="error">${html(err.message)}</p>`));
      });
      return;
    }
    handler(req, res);
  });

  process.on('SIGHUP', () => {
    let next;
    try {
      next = configure(configPath);
    } catch (err) {
      process.stderr.write(`${PREFIX} reload refused, old config kept: ${err.message}\n`);
      return;
    }
    if (next.config.port !== config.port || next.config.issuer !== config.issuer) {
      process.stderr.write(`${PREFIX} reload refused, old config kept: issuer and port change only with a restart\n`);
      return;
    }
    ({ config, provider, handler } = next);
    process.stdout.write(`${PREFIX} reloaded, signing kid ${config.jwks.keys[0].kid}\n`);
  });
  // The fixture holds our stdin: when it goes away (even killed), so do we.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
  process.on('SIGTERM', () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });

  server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${config.port}: ${err.code || err.message}`));
  server.listen(config.port, config.host || '127.0.0.1', () => {
    process.stdout.write(`${PREFIX} listening, issuer ${config.issuer}, signing kid ${config.jwks.keys[0].kid}\n`);
  });
}

main();
