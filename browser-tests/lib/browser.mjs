// Debian's chromium driven by playwright-core (no browser download), one
// fresh context per user, plus the checks every screen gets: axe-core's
// WCAG 2.1 A/AA rules, no script errors or CSP violations, no alert() from
// hostile text, and no name or message text in URLs and titles.

import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { AxeBuilder } from '@axe-core/playwright';
import { ROOT } from './procs.mjs';

export const VIEWPORT = { width: 1280, height: 800 };

/** How long one UI step (a click, a text to appear) may take. */
export const STEP_MS = 15_000;

/** Where this run's screenshots go: docs/screenshots with --screenshots, else target/browser-tests. */
export const SHOTS = process.env.SOTTO_SCREENSHOTS === 'docs'
  ? path.join(ROOT, 'docs', 'screenshots')
  : path.join(ROOT, 'target', 'browser-tests');
fs.mkdirSync(SHOTS, { recursive: true });

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** Findings across the run, checked by the suite's last tests. */
export const findings = {
  /** screen name → axe violations (only screens with some) */
  axe: new Map(),
  /** screen names axe ran on */
  axeScreens: [],
  /** console errors, page errors, CSP violations, dialogs */
  scriptProblems: [],
  /** URLs or titles that held a secret word */
  leaks: [],
};

/**
 * A browser context and page for one user. `secrets` are words (names,
 * message texts) that must never appear in a URL or a <title>.
 */
export async function openAs(browser, user, secrets) {
  const context = await browser.newContext({ viewport: VIEWPORT, acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on('console', (msg) => {
    // A 4xx answer (401 after a wrong passphrase, 422 for a form to correct)
    // is logged by chromium as an error but is the app working as meant.
    if (msg.type() !== 'error' || /status of 4\d\d/.test(msg.text())) return;
    findings.scriptProblems.push(`${user.name}: console error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => findings.scriptProblems.push(`${user.name}: page error: ${err.message}`));
  page.on('dialog', async (dialog) => {
    // The app itself may confirm with a dialog; hostile text must never open one.
    findings.scriptProblems.push(`${user.name}: a ${dialog.type()} dialog opened: ${dialog.message()}`);
    await dialog.dismiss().catch(() => {});
  });
  page.on('framenavigated', async (frame) => {
    if (frame !== page.mainFrame()) return;
    checkNoSecrets(user, secrets, 'URL', frame.url());
  });
  page.on('load', async () => {
    const title = await page.title().catch(() => '');
    checkNoSecrets(user, secrets, 'title', title);
  });
  const session = { user, context, page, secrets };
  return session;
}

function checkNoSecrets(user, secrets, where, text) {
  const decoded = safeDecode(text).toLowerCase();
  for (const s of secrets()) {
    if (s && decoded.includes(s.toLowerCase())) {
      findings.leaks.push(`${user.name}: the ${where} ${JSON.stringify(text)} holds ${JSON.stringify(s)}`);
    }
  }
}

function safeDecode(s) {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

/** Runs axe (WCAG 2.1 A/AA) on the page as it is now and records any violations under `screen`. */
export async function axe(page, screen) {
  findings.axeScreens.push(screen);
  const result = await new AxeBuilder({ page })
    .withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'])
    .analyze();
  if (result.violations.length > 0) {
    findings.axe.set(screen, result.violations);
  }
  return result.violations;
}

/** Formats axe violations: rule, impact, help, and the first few offending elements. */
export function describeViolations(map) {
  const out = [];
  for (const [screen, violations] of map) {
    for (const v of violations) {
      const targets = v.nodes.slice(0, 4).map((n) => `      ${n.target.join(' ')}: ${n.failureSummary?.split('\n').slice(1).join('; ')}`);
      out.push(`  [${screen}] ${v.id} (${v.impact}): ${v.help}\n${targets.join('\n')}`);
    }
  }
  return out.join('\n');
}

/** A 1280x800 screenshot (the viewport, not the full page) named NAME.png. */
export async function screenshot(page, name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  return file;
}

/**
 * Polls `probe` (which returns a value, or undefined/false while not there
 * yet) until it returns something, up to `ms`; fails saying what was awaited
 * and what `lastSeen` reported at the end.
 */
export async function waitUntil(what, probe, { ms = STEP_MS, every = 200, lastSeen } = {}) {
  const deadline = Date.now() + ms;
  let lastError;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false && v !== null) return v;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      let seen = '';
      if (lastSeen) seen = `\nlast seen: ${await Promise.resolve().then(lastSeen).catch((e) => `(${e.message})`)}`;
      if (lastError) seen += `\nlast error: ${lastError.message}`;
      throw new Error(`waited ${ms / 1000} s for ${what}${seen}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

/** Waits until `locator`'s text contains `text` (a string or RegExp). */
export async function expectText(locator, text, what, ms = STEP_MS) {
  const matches = (t) => (text instanceof RegExp ? text.test(t) : t.includes(text));
  return waitUntil(
    `${what} to show ${text}`,
    async () => {
      const t = await locator.innerText({ timeout: 1000 });
      return matches(t) ? t : undefined;
    },
    { ms, lastSeen: () => locator.innerText({ timeout: 1000 }).then((t) => JSON.stringify(t.slice(0, 600))) },
  );
}

/** Reloads `page` until `probe` succeeds, for screens that are not live (e.g. the warnings board). */
export async function reloadUntil(page, what, probe, ms = 30_000) {
  return waitUntil(
    what,
    async () => {
      const v = await probe();
      if (v) return v;
      await page.reload({ waitUntil: 'load' });
      return undefined;
    },
    { ms, every: 500, lastSeen: () => page.locator('main').innerText({ timeout: 1000 }).then((t) => JSON.stringify(t.slice(0, 600))) },
  );
}
