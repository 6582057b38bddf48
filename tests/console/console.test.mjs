// The web console in a real headless Chromium (Debian's), driven by playwright-core, against a
// real plura-server with agents logged in through the API.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, launchBrowser, accessibilityViolations } from './support.mjs';

// No spaces: a hostname may not hold any, and markup does not need them.
const XSS = '<img/src=x/onerror=alert(1)>';

let server;
let base;
let cli;
let screenshots;
let tokens = {};
let enrollment;
let browser;
const beating = new Map(); // agent id -> heartbeat timer

async function loginAgent(ip, hostname, { kind = 'waf', os = 'Ubuntu 24.04', heartbeat = true, machineId, cloud } = {}) {
  const response = await fetch(`${base}/api/v1/agents/login`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${enrollment}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ ip, hostname, version: '5.0.1', os, kind, machine_id: machineId, cloud }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  const { agent_id: id, agent_key: key } = await response.json();
  clearInterval(beating.get(id));
  if (heartbeat) {
    beating.set(id, setInterval(() => {
      fetch(`${base}/api/v1/agents/${id}/heartbeat`, {
        method: 'POST', headers: { Authorization: `Bearer ${key}` },
      }).catch(() => {});
    }, 500));
  }
  return id;
}

async function apiGet(path) {
  const response = await fetch(`${base}${path}`, { headers: { Authorization: `Bearer ${tokens.admin}` } });
  assert.equal(response.status, 200);
  return response.json();
}

before(async () => {
  server = await startServer({ args: ['--heartbeat-interval', '1s', '--allow-loopback-webhooks'] });
  ({ base, cli } = server);
  tokens.admin = server.admin;
  screenshots = process.env.PLURA_SCREENSHOTS || join(server.work, 'screenshots');
  enrollment = cli('enrollment-token');
  tokens.operator = cli('token', 'create', '--role', 'operator', '--name', 'ops');
  tokens.monitor = cli('token', 'create', '--role', 'monitor', '--name', 'noc');
  await loginAgent('10.0.0.9', 'waf-9');
  await loginAgent('10.0.0.10', 'waf-10');
  await loginAgent('10.0.1.1', 'web-gateway');
  await loginAgent('10.0.2.1', 'edr-a', { kind: 'edr', os: 'Rocky 9' });
  await loginAgent('10.0.2.2', 'edr-b', { kind: 'edr', os: 'Rocky 9' });
  browser = await launchBrowser();
  mkdirSync(screenshots, { recursive: true });
  console.log(`screenshots: ${screenshots}`);
});

after(async () => {
  for (const timer of beating.values()) clearInterval(timer);
  await browser?.close();
  server?.stop();
});

/** A signed-in console page for `role`, in English unless `locale` says otherwise. */
/** A screenshot of one element of a page that draws itself again at each change: taken again if a
 * redraw replaced the element meanwhile. */
async function elementScreenshot(page, selector, path) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await page.locator(selector).screenshot({ path });
    } catch (e) {
      if (attempt >= 5 || !/not attached/.test(e.message)) throw e;
    }
  }
}

async function signIn(role, { locale = 'en-US' } = {}) {
  const context = await browser.newContext({ locale, acceptDownloads: true, viewport: { width: 1440, height: 900 } });
  const page = await context.newPage();
  const dialogs = [];
  page.on('dialog', (dialog) => { dialogs.push(dialog.message()); });
  page.dialogs = dialogs;
  await page.goto(base);
  await page.fill('#token', tokens[role]);
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=agents] tbody tr[data-agent-id]');
  await page.waitForSelector('[data-testid=live].on');
  return page;
}

const rowOf = (page, hostname) => page.locator(`tr[data-hostname="${hostname}"]`);

test('each role is offered only what it may do', async () => {
  for (const [role, offered] of Object.entries({
    monitor: { toggle: false, group: false, delete: false, register: false },
    operator: { toggle: true, group: true, delete: false, register: false },
    admin: { toggle: true, group: true, delete: true, register: true },
  })) {
    const page = await signIn(role);
    assert.equal(await page.textContent('[data-testid=role]'), role);
    assert.equal(await page.locator('[data-testid=toggle]').first().isEnabled(), offered.toggle, `${role} toggle`);
    assert.equal(await page.locator('[data-testid=assign-group]').count(), offered.group ? 1 : 0, `${role} group`);
    assert.equal(await page.locator('[data-testid=delete]').count(), offered.delete ? 1 : 0, `${role} delete`);
    assert.equal(await page.locator('[data-testid=register]').count(), offered.register ? 1 : 0, `${role} register`);
    await page.context().close();
  }
});

test('a user signs in with a name and password, and out again', async () => {
  const password = cli('user', 'create', '--name', 'kim', '--role', 'operator');
  const page = await browser.newPage();
  await page.goto(base);
  await page.click('[data-testid=signin-password]');
  await page.fill('#username', 'kim');
  await page.fill('#password', 'not-the-password');
  await page.click('button[type=submit]');
  await page.waitForSelector('.signin .error');
  await page.fill('#password', password);
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=agents] tbody tr[data-agent-id]');
  assert.equal(await page.textContent('[data-testid=whoami]'), 'kim');
  assert.equal(await page.textContent('[data-testid=role]'), 'operator');
  await page.click('text=Sign out');
  await page.waitForSelector('[data-testid=signin]');
  await page.close();
});

test('a wrong token is refused at sign-in', async () => {
  const page = await browser.newPage();
  await page.goto(base);
  await page.fill('#token', 'plura_wrong');
  await page.click('button[type=submit]');
  await page.waitForSelector('.signin .error');
  await page.close();
});

test('a new agent appears live, and a silent one turns red live', async () => {
  const page = await signIn('monitor');
  const silent = await loginAgent('10.0.9.1', 'quiet-host', { heartbeat: false });
  const loggedIn = Date.now();
  const row = rowOf(page, 'quiet-host');
  await row.waitFor({ timeout: 5000 });
  // Reported, not asserted: this machine is shared and noisy.
  console.log(`live: a new agent showed ${Date.now() - loggedIn} ms after its login`);
  assert.equal(await row.locator('[data-testid=status]').getAttribute('data-status'), 'running');
  // No heartbeat: the server stops it after 3 intervals (3 s), and the icon follows, unreloaded.
  await page.waitForSelector(`tr[data-agent-id="${silent}"] [data-status=stopped]`, { timeout: 15000 });
  await page.context().close();
});

test('filters and search narrow the list; the CSV holds the filtered rows', async () => {
  const page = await signIn('monitor');
  await page.selectOption('[data-testid=filter-kind]', 'edr');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-agent-id]').length === 2);
  const hostnames = await page.locator('[data-testid=hostname]').allTextContents();
  assert.deepEqual(hostnames.sort(), ['edr-a', 'edr-b']);

  const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=csv]')]);
  const csv = readFileSync(await download.path(), 'utf8').trim().split('\r\n');
  assert.equal(csv.length, 3, csv.join('\n'));
  assert.ok(csv[0].startsWith('"id","ip","hostname","status"'), csv[0]);
  assert.ok(csv.slice(1).every((line) => line.includes(',"edr",')), csv.join('\n'));

  await page.selectOption('[data-testid=filter-kind]', '');
  await page.fill('[data-testid=search]', 'GATEWAY');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-agent-id]').length === 1);
  assert.deepEqual(await page.locator('[data-testid=hostname]').allTextContents(), ['web-gateway']);
  await page.context().close();
});

test('agent-supplied text is shown as text, never run as HTML', async () => {
  // A hostname cannot hold markup (it is a DNS name); the OS, free text, can.
  await loginAgent('10.0.6.6', 'xss-probe', { os: XSS });
  const page = await signIn('admin');
  await page.fill('[data-testid=search]', '10.0.6.6');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-agent-id]').length === 1);
  assert.ok((await page.locator('tr[data-agent-id]').textContent()).includes(XSS));
  assert.equal(await page.locator('[data-testid=agents] img').count(), 0);
  await page.locator('[data-testid=hostname]').click();
  await page.waitForSelector('[data-testid=detail]');
  assert.equal(await page.locator('[data-testid=detail] img').count(), 0);
  await page.waitForTimeout(300);
  assert.deepEqual(page.dialogs, [], 'no script ran');
  await page.context().close();
});

test('a taken-over identity is marked in the list and told in its history', async () => {
  await loginAgent('10.0.7.7', 'pool-7', { machineId: 'i-0aaa' });
  await loginAgent('10.0.7.7', 'pool-7', { machineId: 'i-0bbb' });
  const page = await signIn('admin');
  await page.fill('[data-testid=search]', '10.0.7.7');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-agent-id]').length === 1);
  assert.equal(await page.locator('[data-testid=takeover]').count(), 1);
  await page.locator('[data-testid=hostname]').click();
  await page.click('[data-testid=tab-history]');
  await page.waitForSelector('[data-testid=history]');
  assert.match(await page.locator('[data-testid=history]').textContent(), /machine id i-0aaa -> i-0bbb/);
  await page.context().close();
});

test('a row opens its details and history; screenshots of the list and the detail', async () => {
  const page = await signIn('admin');
  await page.screenshot({ path: join(screenshots, 'list.png'), fullPage: true });
  await rowOf(page, 'waf-9').click();
  await page.waitForSelector('[data-testid=detail] dl');
  const facts = await page.textContent('[data-testid=detail] dl');
  assert.ok(facts.includes('10.0.0.9') && facts.includes('Ubuntu 24.04') && facts.includes('5.0.1'), facts);
  await page.screenshot({ path: join(screenshots, 'detail.png') });
  await page.click('[data-testid=tab-history]');
  await page.waitForSelector('[data-testid=history] .event.registered');
  await page.screenshot({ path: join(screenshots, 'history.png') });
  await page.context().close();
});

test('an operator switches an agent OFF and assigns a group to several', async () => {
  const page = await signIn('operator');
  await rowOf(page, 'waf-10').locator('[data-testid=toggle]').click();
  await page.waitForSelector('tr[data-hostname="waf-10"] [data-testid=toggle][aria-checked=false]');
  page.once('dialog', (dialog) => dialog.accept('dmz'));
  await rowOf(page, 'waf-9').locator('[data-testid=select]').check();
  await rowOf(page, 'waf-10').locator('[data-testid=select]').check();
  await page.click('[data-testid=assign-group]');
  await page.waitForFunction(() => [...document.querySelectorAll('tr[data-agent-id]')]
    .filter((r) => r.textContent.includes('dmz')).length === 2);
  const list = await apiGet('/api/v1/agents?group=dmz');
  assert.equal(list.total, 2);
  assert.equal(list.items.find((a) => a.hostname === 'waf-10').enabled, false);
  await page.context().close();
});

test('an admin deletes a row after confirming', async () => {
  const id = await loginAgent('10.0.7.7', 'doomed');
  clearInterval(beating.get(id));
  const page = await signIn('admin');
  await rowOf(page, 'doomed').locator('[data-testid=select]').check();
  page.once('dialog', (dialog) => dialog.accept());
  await page.click('[data-testid=delete]');
  await rowOf(page, 'doomed').waitFor({ state: 'detached' });
  const audit = await apiGet('/api/v1/audit');
  assert.equal(audit.items[0].hostname, 'doomed');
  await page.context().close();
});

test('Korean labels for a Korean browser, with a switch to English', async () => {
  const page = await signIn('monitor', { locale: 'ko-KR' });
  assert.ok((await page.textContent('header h1')).includes('시스템 관리'));
  await page.click('[data-testid=language]');
  assert.ok((await page.textContent('header h1')).includes('System Management'));
  await page.context().close();
});

test('zone and Auto Scaling group columns filter the list; a login from another address is marked', async () => {
  const cloud = (zone, asg) => ({ instance_id: `i-${zone.slice(-1)}${asg.length}`, zone, instance_type: 'c6i.large', asg });
  await loginAgent('10.0.8.1', 'asg-a-1', { cloud: cloud('ap-northeast-2a', 'waf-asg') });
  await loginAgent('10.0.8.2', 'asg-c-1', { cloud: cloud('ap-northeast-2c', 'waf-asg') });
  await loginAgent('127.0.0.1', 'same-address');
  const page = await signIn('monitor');
  await page.fill('[data-testid=filter-zone]', 'ap-northeast-2c');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-agent-id]').length === 1);
  const row = rowOf(page, 'asg-c-1');
  assert.equal(await row.locator('[data-testid=zone]').textContent(), 'ap-northeast-2c');
  assert.equal(await row.locator('[data-testid=asg]').textContent(), 'waf-asg');
  assert.match(await row.locator('[data-testid=source-differs]').textContent(), /via 127\.0\.0\.1/);
  await page.fill('[data-testid=filter-zone]', '');
  await page.fill('[data-testid=filter-asg]', 'waf-asg');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-agent-id]').length === 2);
  await page.screenshot({ path: join(screenshots, 'cloud-columns.png'), fullPage: true });
  await page.fill('[data-testid=filter-asg]', '');
  await page.fill('[data-testid=search]', 'same-address');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-agent-id]').length === 1);
  assert.equal(await rowOf(page, 'same-address').locator('[data-testid=source-differs]').count(), 0);
  await page.check('[data-testid=filter-source-differs]');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-agent-id]').length === 0);
  await page.context().close();
});

test('a stopped agent shows why the cloud says it stopped, filters by it, and the groups show their coverage', async () => {
  const cloud = (instance) => ({ instance_id: instance, zone: 'ap-northeast-2a', asg: 'edge-asg' });
  const covering = await loginAgent('10.0.9.1', 'edge-live', { cloud: cloud('i-edge-live') });
  const killed = await loginAgent('10.0.9.2', 'edge-killed', { heartbeat: false, cloud: cloud('i-edge-killed') });
  const scaled = await loginAgent('10.0.9.3', 'edge-scaled', { heartbeat: false, cloud: cloud('i-edge-scaled') });
  for (const id of [killed, scaled]) {
    for (let tries = 0; (await apiGet(`/api/v1/agents/${id}`)).status !== 'stopped'; tries += 1) {
      assert.ok(tries < 100, `agent ${id} stops`);
      await new Promise((resolveWait) => setTimeout(resolveWait, 200));
    }
  }
  // What plura-eni watch would report: one agent silent on a running instance, one scaled in,
  // and the group's live instances, one of them with no agent for an hour.
  const launched = new Date(Date.now() - 3600_000).toISOString();
  const instance = (id) => ({ instance_id: id, zone: 'ap-northeast-2a', launched_at: launched });
  const response = await fetch(`${base}/api/v1/cloud/report`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${tokens.operator}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({
      verdicts: [
        { agent_id: killed, instance_id: 'i-edge-killed', verdict: 'running' },
        { agent_id: scaled, instance_id: 'i-edge-scaled', verdict: 'terminated' },
      ],
      groups: [{ asg: 'edge-asg', instances: [instance('i-edge-live'), instance('i-edge-killed'), instance('i-edge-bare')] }],
    }),
  });
  assert.equal(response.status, 200, await response.text());
  assert.ok(covering);

  const page = await signIn('monitor');
  const group = page.locator('[data-testid=coverage-group][data-asg=edge-asg]');
  await group.waitFor();
  assert.equal(await group.locator('[data-testid=covered]').textContent(), 'covered 1 of 3');
  const uncovered = await group.locator('[data-testid=uncovered]').allTextContents();
  assert.equal(uncovered.length, 2);
  assert.ok(uncovered.some((text) => text.includes('i-edge-bare') && text.includes('no agent has logged in')), uncovered.join(' | '));
  assert.ok(uncovered.some((text) => text.includes('i-edge-killed') && text.includes(`#${killed}`)), uncovered.join(' | '));
  await page.fill('[data-testid=search]', 'edge-');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-agent-id]').length === 3);
  assert.equal(await rowOf(page, 'edge-killed').locator('[data-testid=verdict]').textContent(), 'silent on a running instance');
  assert.equal(await rowOf(page, 'edge-scaled').locator('[data-testid=verdict]').textContent(), 'instance terminated');
  assert.equal(await rowOf(page, 'edge-live').locator('[data-testid=verdict]').count(), 0);
  await page.selectOption('[data-testid=filter-verdict]', 'running');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-agent-id]').length === 1);
  assert.equal(await page.locator('tr[data-agent-id] [data-testid=hostname]').textContent(), 'edge-killed');
  await page.screenshot({ path: join(screenshots, 'cloud-verdicts.png'), fullPage: true });
  await page.context().close();
});

test('the fleet over time is drawn as inline SVG, for 24 h and 7 d', async () => {
  const page = await signIn('monitor');
  // The server samples the fleet as soon as it leads, then once a minute.
  await page.waitForFunction(() => {
    const chart = document.querySelector('[data-testid=chart] svg');
    return chart && (chart.querySelector('circle') || chart.querySelector('polyline')?.getAttribute('points'));
  }, null, { timeout: 15000 });
  assert.equal(await page.locator('[data-testid=range-24h]').getAttribute('aria-selected'), 'true');
  await page.click('[data-testid=range-7d]');
  await page.waitForSelector('[data-testid=range-7d][aria-selected=true]');
  assert.equal(await page.locator('[data-testid=chart] svg').count(), 1);
  await page.click('[data-testid=range-24h]');
  await elementScreenshot(page, '[data-testid=chart]', join(screenshots, 'fleet-over-time.png'));
  await page.context().close();
});

test('an admin adds a webhook; a takeover is delivered, signed, and listed', async () => {
  const received = [];
  const receiver = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => { body += chunk; });
    request.on('end', () => {
      received.push({ headers: request.headers, body });
      response.writeHead(204).end();
    });
  });
  await new Promise((ready) => receiver.listen(0, '127.0.0.1', ready));
  const url = `http://127.0.0.1:${receiver.address().port}/hook`;
  try {
    const page = await signIn('admin');
    await page.click('[data-testid=view-alerts]');
    await page.fill('[data-testid=webhook-url]', url);
    // The page is drawn again every 3 s and at each change: what is typed stays.
    await loginAgent('10.0.7.9', 'pool-9');
    await page.waitForTimeout(3500);
    assert.equal(await page.inputValue('[data-testid=webhook-url]'), url);
    await page.click('[data-testid=webhook-add]');
    const secret = (await page.locator('[data-testid=webhook-secret] code').textContent({ timeout: 5000 })).trim();
    assert.match(secret, /^plura_whsec_/);
    await page.waitForSelector('[data-testid=webhooks] tr[data-webhook-id]');
    assert.match(await page.textContent('[data-testid=webhooks]'), /127\.0\.0\.1:\d+\/…/);

    await loginAgent('10.0.7.8', 'pool-8', { machineId: 'i-0ccc' });
    await loginAgent('10.0.7.8', 'pool-8', { machineId: 'i-0ddd' });
    await page.waitForSelector('[data-testid=deliveries] [data-delivery-state=delivered]', { timeout: 15000 });
    assert.match(await page.textContent('[data-testid=deliveries]'), /pool-8 \(10\.0\.7\.8\) was taken over/);
    const delivery = received.find((r) => r.headers['x-plura-event'] === 'agent_taken_over');
    assert.ok(delivery, 'the receiver got the takeover');
    const { createHmac } = await import('node:crypto');
    const expected = `sha256=${createHmac('sha256', secret).update(delivery.body).digest('hex')}`;
    assert.equal(delivery.headers['x-plura-signature-256'], expected);
    await page.screenshot({ path: join(screenshots, 'alerts.png'), fullPage: true });
    await page.context().close();
  } finally {
    receiver.close();
  }
});

test('the audit log says who did what; only admins see it', async () => {
  const monitor = await signIn('monitor');
  assert.equal(await monitor.locator('[data-testid=view-audit]').count(), 0);
  await monitor.context().close();
  const page = await signIn('admin');
  await page.click('[data-testid=view-audit]');
  await page.waitForSelector('[data-testid=audit] tr[data-action=token_created]');
  const text = await page.textContent('[data-testid=audit]');
  assert.match(text, /token created/);
  assert.match(text, /"noc", monitor/);
  await page.screenshot({ path: join(screenshots, 'audit.png'), fullPage: true });
  await page.context().close();
});

test('an admin makes, lists and revokes tokens, and manages users; others see no such page', async () => {
  const operator = await signIn('operator');
  assert.equal(await operator.locator('[data-testid=view-people]').count(), 0);
  await operator.context().close();

  const page = await signIn('admin');
  await page.click('[data-testid=view-people]');
  await page.waitForSelector('[data-testid=tokens] tr[data-token=noc]');
  // The CLI's tokens are listed, never with their secrets.
  const listed = await page.textContent('[data-testid=tokens]');
  assert.ok(!listed.includes(tokens.monitor), 'no secret on the page');

  await page.fill('[data-testid=token-name]', 'grafana');
  await page.selectOption('#token-role', 'monitor');
  await page.selectOption('#token-expires', '90d');
  await page.click('[data-testid=token-create]');
  const made = (await page.locator('[data-testid=secret-once] code').textContent({ timeout: 5000 })).trim();
  assert.match(made, /^plura_/);
  const me = await fetch(`${base}/api/v1/me`, { headers: { Authorization: `Bearer ${made}` } });
  assert.equal(me.status, 200);
  await page.waitForSelector('[data-testid=tokens] tr[data-token=grafana]');
  page.once('dialog', (dialog) => dialog.accept());
  await page.locator('[data-testid=tokens] tr[data-token=grafana] [data-testid=token-revoke]').click();
  await page.waitForSelector('[data-testid=tokens] tr[data-token=grafana]', { state: 'detached' });
  const revoked = await fetch(`${base}/api/v1/me`, { headers: { Authorization: `Bearer ${made}` } });
  assert.equal(revoked.status, 401, 'a revoked token stops working');

  await page.fill('[data-testid=user-name]', 'dana');
  await page.selectOption('#user-role', 'operator');
  await page.click('[data-testid=user-create]');
  const password = (await page.locator('[data-testid=secret-once] code').textContent({ timeout: 5000 })).trim();
  assert.ok(password.length >= 12);
  const session = await (await fetch(`${base}/api/v1/session`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: 'dana', password }),
  })).json();
  await page.waitForSelector('[data-testid=users] tr[data-user=dana]');
  page.once('dialog', (dialog) => dialog.accept());
  await page.locator('[data-testid=users] tr[data-user=dana] [data-testid=user-disable]').click();
  await page.waitForSelector('[data-testid=users] tr[data-user=dana][data-disabled=true]');
  const ended = await fetch(`${base}/api/v1/me`, { headers: { Authorization: `Bearer ${session.token}` } });
  assert.equal(ended.status, 401, "a disabled user's sign-in ends");
  await page.screenshot({ path: join(screenshots, 'people.png'), fullPage: true });
  await page.context().close();
});

test('a search matching more than its count limit says so and pages on', async () => {
  // Last: it adds a thousand systems that the other tests would count.
  const register = async (n) => {
    const response = await fetch(`${base}/api/v1/agents`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${tokens.admin}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ ip: `10.8.${n >> 8}.${n & 255}`, hostname: `bulk-${n}`, kind: 'waf' }),
    });
    assert.equal(response.status, 201, await response.text());
  };
  for (let n = 0; n < 1010; n += 10) {
    await Promise.all(Array.from({ length: 10 }, (_, i) => register(n + i)));
  }
  const page = await signIn('monitor');
  await page.fill('[data-testid=search]', 'bulk-');
  await page.waitForFunction(() => document.querySelector('[data-testid=total]')?.textContent === 'More than 1000 agents');
  const next = page.locator('nav.pager button').last();
  assert.equal(await next.isEnabled(), true);
  // Registered ten at a time, so not necessarily in order of their names.
  const first = await page.locator('[data-testid=hostname]').first().textContent();
  assert.match(first, /^bulk-\d+$/);
  await next.click();
  await page.waitForFunction((was) => document.querySelector('[data-testid=hostname]')?.textContent !== was, first);
  assert.match(await page.textContent('nav.pager'), /Page 2(?! of)/);
  await page.context().close();
});

test('every view has no WCAG 2.1 A or AA violation', async () => {
  const signInContext = await browser.newContext();
  const signInPage = await signInContext.newPage();
  await signInPage.goto(base);
  await signInPage.waitForSelector('#token');
  const found = {};
  found['sign-in'] = await accessibilityViolations(signInPage);
  await signInContext.close();

  const page = await signIn('admin');
  found.agents = await accessibilityViolations(page);
  await rowOf(page, 'waf-9').click();
  await page.waitForSelector('[data-testid=detail] dl');
  found.details = await accessibilityViolations(page);
  await page.click('[data-testid=tab-history]');
  await page.waitForSelector('[data-testid=history] .event.registered');
  found.history = await accessibilityViolations(page);
  for (const [view, ready] of [
    ['alerts', '[data-testid=webhook-url]'],
    ['audit', '[data-testid=audit]'],
    ['people', '[data-testid=tokens]'],
  ]) {
    await page.click(`[data-testid=view-${view}]`);
    await page.waitForSelector(ready);
    found[view] = await accessibilityViolations(page);
  }
  await page.context().close();
  // What a monitor sees (no actions), in Korean.
  const monitor = await signIn('monitor', { locale: 'ko-KR' });
  found['agents, as a monitor, in Korean'] = await accessibilityViolations(monitor);
  await monitor.context().close();
  const broken = Object.entries(found).filter(([, violations]) => violations.length > 0);
  assert.deepEqual(Object.fromEntries(broken), {}, 'views with violations');
});

/** Presses Tab until `selector` has the focus, at most `limit` times. */
async function tabTo(page, selector, limit = 120) {
  for (let presses = 0; presses < limit; presses += 1) {
    if (await page.evaluate((wanted) => document.activeElement?.matches(wanted) ?? false, selector)) return;
    await page.keyboard.press('Tab');
  }
  assert.fail(`Tab never reached ${selector}`);
}

test('the main flows work by keyboard alone, with a visible focus, on a 1280 px screen', async () => {
  // A full fleet's long names: the longest hostname there is, and a long OS.
  const long = ['a', 'b', 'c'].map((letter) => letter.repeat(62)).join('.');
  await loginAgent('10.0.8.1', long, { os: 'Red Hat Enterprise Linux 9.4 (Plow) with a long vendor build tag' });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on('dialog', (dialog) => dialog.accept('keyboard-group'));
  await page.goto(base);

  await tabTo(page, '#token');
  await page.keyboard.type(tokens.operator);
  await page.keyboard.press('Enter');
  await page.waitForSelector('[data-testid=agents] tbody tr[data-agent-id]');

  await tabTo(page, '[data-testid=search]');
  const focusRing = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(focusRing, 'none', 'the focus is visible');
  await page.keyboard.type(long.slice(0, 70));
  await page.waitForSelector(`tr[data-hostname="${long}"]`);
  assert.ok(
    await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth),
    'the page does not scroll sideways at 1280 px',
  );
  await page.keyboard.press('Control+A');
  await page.keyboard.type('edr-');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-agent-id]').length === 2);
  // A filter is a select: typing picks its option.
  await tabTo(page, '[data-testid=filter-kind]');
  await page.keyboard.type('edr');
  await page.waitForFunction(() => document.querySelector('[data-testid=filter-kind]').value === 'edr');
  await tabTo(page, '[data-testid=search]');
  await page.keyboard.type('a');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-agent-id]').length === 1);

  const row = 'tr[data-hostname="edr-a"]';
  await tabTo(page, `${row} [data-testid=open]`);
  await page.keyboard.press('Enter');
  await page.waitForSelector('[data-testid=detail] dl');
  await page.keyboard.press('Escape');
  await page.waitForSelector('[data-testid=detail]', { state: 'detached' });

  await tabTo(page, `${row} [data-testid=toggle]`);
  await page.keyboard.press('Enter');
  await page.waitForSelector(`${row} [data-testid=toggle][aria-checked=false]`);
  await page.keyboard.press('Enter');
  await page.waitForSelector(`${row} [data-testid=toggle][aria-checked=true]`);

  await tabTo(page, `${row} [data-testid=select]`);
  await page.keyboard.press('Space');
  await tabTo(page, '[data-testid=assign-group]');
  await page.keyboard.press('Enter');
  await page.waitForFunction(
    (selector) => document.querySelector(selector)?.textContent.includes('keyboard-group'),
    row,
  );

  await tabTo(page, '[data-testid=sign-out]');
  await page.keyboard.press('Enter');
  await page.waitForSelector('[data-testid=signin]');
  await context.close();
});
