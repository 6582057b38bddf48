// What the console tests share: a real plura-server binary on loopback over a fresh SQLite
// database, its command line, and Debian's Chromium.
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';
import AxeBuilder from '@axe-core/playwright';

const target = process.env.CARGO_TARGET_DIR || resolve(import.meta.dirname, '../../target');
const serverBin = process.env.PLURA_SERVER_BIN || join(target, 'debug', 'plura-server');

/** A loopback port free now (for a server that must know its own address before it starts). */
export async function freePort() {
  const probe = createServer();
  await new Promise((done) => probe.listen(0, '127.0.0.1', done));
  const { port } = probe.address();
  await new Promise((done) => probe.close(done));
  return port;
}

/**
 * Starts `plura-server serve` with `args` over a fresh database; answers where it listens, the
 * first admin token, its work directory, its process, and its command line (`cli`) on the same
 * database.
 */
export async function startServer({ args = [], listen = '127.0.0.1:0', env = {} } = {}) {
  const work = mkdtempSync(join(tmpdir(), 'plura-console-'));
  const database = `sqlite://${work}/console.db`;
  const child = spawn(serverBin, ['serve', '--listen', listen, '--database', database, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (chunk) => { stderr += chunk; });
  const base = await new Promise((resolveBase, reject) => {
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      // The server says where it listens, on stdout, after the first-start token.
      const match = stdout.match(/^Listening on (\S+)$/m);
      if (match) resolveBase(match[1]);
    });
    child.on('exit', (code) => reject(new Error(`plura-server exited (${code}): ${stderr}`)));
  });
  // The first start writes the admin token to an owner-only file and says where.
  const file = stdout.match(/^First start: the admin API token is in (.+)$/m);
  assert.ok(file, `first start names the admin token's file: ${stdout}`);
  const admin = readFileSync(file[1], 'utf8').trim();
  assert.ok(admin.startsWith('plura_'), 'the file holds the token');
  const cli = (...cliArgs) => {
    const out = execFileSync(serverBin, [...cliArgs, '--database', database], { encoding: 'utf8' });
    return out.trim().split('\n').pop().trim();
  };
  return { base, admin, work, cli, process: child, stop: () => child.kill('SIGTERM') };
}

/** Debian's Chromium, headless, kept off the network beyond what the tests ask. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.PLURA_CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

/** What axe-core finds against WCAG 2.1 A and AA on the page as it is: one line per rule broken,
 * naming a few of the elements that break it. */
export async function accessibilityViolations(page) {
  const results = await new AxeBuilder({ page })
    .withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'])
    .analyze();
  return results.violations.map((violation) => {
    const where = violation.nodes.slice(0, 3).map((node) => node.target.join(' ')).join('; ');
    return `${violation.id} (${violation.nodes.length}): ${where}`;
  });
}
