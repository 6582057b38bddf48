// Sign-in through the company's identity provider, end to end in Chromium: a real, certified
// OpenID Provider (npm oidc-provider, its development login and consent pages) on loopback, and a
// real plura-server set up as its relying party. Test hooks on the provider change what it sends
// back, as an attacker between the two would: the state on the way to the callback, or a claim of
// the ID token (re-signed with the provider's own key), to show the server refuses each.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK, SignJWT, decodeJwt } from 'jose';
import { startServer, launchBrowser, freePort, accessibilityViolations } from './support.mjs';

const CLIENT_ID = 'plura-fleet';
const CLIENT_SECRET = 'a-client-secret-for-the-console-tests';

/** The provider's people, by the login typed on its page. */
const people = {
  alice: { preferred_username: 'alice', email: 'alice@example.com', name: 'Alice Kim', groups: ['fleet-admins', 'staff'] },
  bob: { preferred_username: 'bob', email: 'bob@example.com', groups: ['noc'] },
  mallory: { preferred_username: 'mallory', email: 'mallory@example.com', groups: ['contractors'] },
  // Not the local user "admin": a person of the provider who prefers that name.
  impostor: { preferred_username: 'admin', groups: ['noc'] },
};

let provider; // { issuer, close }
let server;
let browser;
/** Changes the provider's answers when set: `callback(url)` the address it sends the browser
 * back to, `idToken(claims)` the ID token's claims. */
let tamper = {};

async function startProvider(consoleBase) {
  const http = createServer();
  await new Promise((done) => http.listen(0, '127.0.0.1', done));
  const issuer = `http://127.0.0.1:${http.address().port}`;
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const key = { ...(await exportJWK(privateKey)), kid: 'console-tests', alg: 'RS256', use: 'sig' };
  const op = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: [`${consoleBase}/auth/oidc/callback`],
      post_logout_redirect_uris: [`${consoleBase}/`],
    }],
    jwks: { keys: [key] },
    claims: { openid: ['sub'], profile: ['preferred_username', 'name'], email: ['email'], groups: ['groups'] },
    pkce: { required: () => true },
    ttl: { Interaction: 600, Session: 600, Grant: 600, AccessToken: 600, IdToken: 600 },
    findAccount: (ctx, id) => people[id] && {
      accountId: id,
      claims: () => ({ sub: id, ...people[id] }),
    },
  });
  op.use(async (ctx, next) => {
    await next();
    const location = ctx.response.get('location') || '';
    if (tamper.callback && location.startsWith(`${consoleBase}/auth/oidc/callback`)) {
      ctx.set('location', tamper.callback(location));
    }
    if (tamper.idToken && ctx.path === '/token' && ctx.body?.id_token) {
      const claims = tamper.idToken(decodeJwt(ctx.body.id_token));
      const idToken = await new SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: key.kid })
        .sign(privateKey);
      ctx.body = { ...ctx.body, id_token: idToken };
    }
  });
  http.on('request', op.callback());
  return { issuer, close: () => http.close() };
}

before(async () => {
  // The provider must know where to send people back, and the server its provider: the
  // server's port is chosen first.
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  provider = await startProvider(base);
  server = await startServer({
    listen: `127.0.0.1:${port}`,
    args: ['--public-url', base, '--oidc-issuer', provider.issuer, '--oidc-client-id', CLIENT_ID,
      '--oidc-admin', 'fleet-admins', '--oidc-monitor', 'noc', 'auditors'],
    env: { PLURA_OIDC_CLIENT_SECRET: CLIENT_SECRET },
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  server?.stop();
  provider?.close();
});

async function api(path, init = {}) {
  const response = await fetch(`${server.base}${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${server.admin}`, 'Content-Type': 'application/json', ...init.headers },
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}

/** Goes from the console's sign-in page through the provider's login and consent as `login`;
 * answers the page where the browser ends, and the CSP violations it met. */
async function throughProvider(login) {
  const context = await browser.newContext({ locale: 'en-US' });
  const page = await context.newPage();
  const blocked = [];
  page.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) blocked.push(message.text());
  });
  await page.goto(server.base);
  await page.click('[data-testid=signin-sso]');
  await page.waitForURL(`${provider.issuer}/**`);
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'whatever the provider checks');
  await page.click('button[type=submit]');
  await page.click('button:has-text("Continue")');
  await page.waitForURL(`${server.base}/**`);
  page.blocked = blocked;
  return page;
}

async function signedIn(login) {
  const page = await throughProvider(login);
  await page.waitForSelector('[data-testid=agents]');
  assert.deepEqual(page.blocked, [], 'nothing was blocked by the content security policy');
  return page;
}

/** What the page says when `login`'s sign-in is refused, with the provider's answers changed by
 * `changes` (see `tamper`). */
async function refusal(login, changes = {}) {
  tamper = changes;
  try {
    const page = await throughProvider(login);
    const text = await page.textContent('[data-testid=notice]');
    await page.context().close();
    return text;
  } finally {
    tamper = {};
  }
}

test('the sign-in page offers SSO and stays accessible', async () => {
  const offer = await fetch(`${server.base}/api/v1/session/sso`).then((r) => r.json());
  assert.equal(offer.issuer, provider.issuer);
  const page = await (await browser.newContext()).newPage();
  await page.goto(server.base);
  await page.waitForSelector('[data-testid=signin-sso]');
  assert.equal(await page.locator('#token').count(), 1, 'the token form stays');
  assert.deepEqual(await accessibilityViolations(page), []);
  await page.context().close();
});

test('a person in an admin group signs in as admin, and out at the provider too', async () => {
  const page = await signedIn('alice');
  assert.equal(await page.textContent('[data-testid=whoami]'), 'sso:alice');
  assert.equal(await page.textContent('[data-testid=role]'), 'admin');
  const token = await page.evaluate(() => sessionStorage.getItem('plura.token'));
  assert.equal((await api('/api/v1/me', { headers: { Authorization: `Bearer ${token}` } })).status, 200);
  // The sign-in's cookie was for picking it up once: it is gone.
  const cookies = await page.context().cookies();
  assert.deepEqual(cookies.filter((c) => c.name.startsWith('plura_')), []);

  const users = (await api('/api/v1/users')).body.items;
  const alice = users.find((u) => u.name === 'sso:alice');
  assert.equal(alice.role, 'admin');
  assert.equal(alice.sso_issuer, provider.issuer);
  const audit = (await api('/api/v1/audit')).body.items;
  assert.ok(audit.some((r) => r.action === 'sso_signed_in' && r.actor === 'sso:alice'
    && r.detail.includes('groups=fleet-admins')), JSON.stringify(audit.slice(0, 3)));

  await page.click('[data-testid=sign-out]');
  await page.waitForURL(`${provider.issuer}/**`);
  await page.click('button:has-text("Yes, sign me out")');
  await page.waitForURL(`${server.base}/`);
  await page.waitForSelector('[data-testid=signin]');
  assert.equal((await api('/api/v1/me', { headers: { Authorization: `Bearer ${token}` } })).status, 401,
    'the session ended at sign-out');
  await page.context().close();
});

test('a person in a monitor group signs in as monitor; their role follows their groups', async () => {
  let page = await signedIn('bob');
  assert.equal(await page.textContent('[data-testid=role]'), 'monitor');
  await page.context().close();

  people.bob.groups = ['fleet-admins'];
  page = await signedIn('bob');
  assert.equal(await page.textContent('[data-testid=role]'), 'admin', 'the role is set again at each sign-in');
  await page.context().close();
  people.bob.groups = ['noc'];
});

test('a person of the provider named admin is not the local admin', async () => {
  server.cli('user', 'create', '--name', 'admin', '--role', 'admin');
  const page = await signedIn('impostor');
  assert.equal(await page.textContent('[data-testid=whoami]'), 'sso:admin');
  assert.equal(await page.textContent('[data-testid=role]'), 'monitor');
  await page.context().close();
  const users = (await api('/api/v1/users')).body.items.map((u) => [u.name, u.role, u.sso_issuer]);
  assert.deepEqual(users.filter(([name]) => name.endsWith('admin')),
    [['admin', 'admin', null], ['sso:admin', 'monitor', provider.issuer]]);
  // A password cannot be given to them, nor can they sign in with one.
  const set = await api('/api/v1/users/sso%3Aadmin', { method: 'PATCH', body: JSON.stringify({ password: 'a-long-enough-password' }) });
  assert.equal(set.status, 409, JSON.stringify(set.body));
  const withPassword = await fetch(`${server.base}/api/v1/session`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: 'sso:admin', password: '' }),
  });
  assert.equal(withPassword.status, 401);
});

test('a person in no mapped group is refused, and nothing is made', async () => {
  const text = await refusal('mallory');
  assert.match(text, /sso:mallory is not allowed to use PLURA Fleet: the groups claim \(contractors\)/);
  const users = (await api('/api/v1/users')).body.items;
  assert.ok(!users.some((u) => u.name.includes('mallory')));
  const audit = (await api('/api/v1/audit')).body.items;
  assert.ok(audit.some((r) => r.action === 'sso_refused' && r.actor === 'sso:mallory'));
});

test('a person disabled by an admin stays out', async () => {
  const disabled = await api('/api/v1/users/sso%3Abob', { method: 'PATCH', body: JSON.stringify({ disabled: true }) });
  assert.equal(disabled.status, 200);
  assert.match(await refusal('bob'), /sso:bob was disabled by an administrator/);
  const bob = (await api('/api/v1/users')).body.items.find((u) => u.name === 'sso:bob');
  assert.ok(bob.disabled_at, 'a sign-in does not enable them again');
});

test('a tampered state is refused', async () => {
  const text = await refusal('alice', {
    callback: (url) => {
      const changed = new URL(url);
      changed.searchParams.set('state', `${changed.searchParams.get('state')}0`);
      return changed.toString();
    },
  });
  assert.match(text, /does not belong to the sign-in this browser started/);
});

test('an ID token for another audience is refused', async () => {
  const text = await refusal('alice', { idToken: (claims) => ({ ...claims, aud: 'another-application' }) });
  assert.match(text, /The ID token is not meant for this server: its audience is not the client id plura-fleet/);
});

test('an expired ID token is refused', async () => {
  const now = Math.floor(Date.now() / 1000);
  const text = await refusal('alice', { idToken: (claims) => ({ ...claims, iat: now - 7200, exp: now - 3600 }) });
  assert.match(text, /The ID token has expired/);
  const audit = (await api('/api/v1/audit')).body.items;
  assert.ok(audit.some((r) => r.action === 'sso_refused' && /expired/.test(r.detail)));
});

test('a refusal page is accessible', async () => {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.base}/auth/oidc/callback?code=x&state=y`);
  assert.match(await page.textContent('[data-testid=notice]'), /not started in this browser/);
  assert.deepEqual(await accessibilityViolations(page), []);
  await page.context().close();
});
