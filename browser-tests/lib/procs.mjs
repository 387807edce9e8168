// Real processes for the browser suite: a `sotto-relay` with its own data
// directory, and one `sotto app` service per user, each with its own profile
// directory. Like tests/src/lib.rs (the Rust e2e harness), nothing here is a
// mock: the binaries are target/debug/sotto and target/debug/sotto-relay,
// built by scripts/test.sh before the suite runs.
//
// Every process started here is registered and killed when the suite ends,
// whether it passed, failed or was interrupted (see `killAll`).

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = process.env.SOTTO_BIN_DIR ?? path.join(ROOT, 'target', 'debug');

/** The passphrase of every test profile (the Rust harness uses the same). */
export const PASSPHRASE = 'correct horse battery staple';

/** The longest a process may take to start or a command to finish. */
export const PROCESS_TIMEOUT_MS = 60_000;

export function binary(name) {
  const p = path.join(BIN, name);
  if (!fs.existsSync(p)) {
    throw new Error(`${p} not found: run scripts/test.sh, or \`cargo build --workspace --bins\` first`);
  }
  return p;
}

// One temporary directory for the whole run; removed at exit.
export const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sotto-browser-'));
fs.chmodSync(TMP, 0o700);

const children = new Set();

/** Kills every process this suite started (SIGKILL), and removes TMP. Sync, so it also works in an 'exit' handler. */
export function killAll() {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        child.kill('SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }
  children.clear();
  fs.rmSync(TMP, { recursive: true, force: true });
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    killAll();
    process.exit(128 + os.constants.signals[sig]);
  });
}

/** Per-address limits are lifted for loopback, as in tests/src/lib.rs (LOOPBACK_LIMITS). */
const LOOPBACK_LIMITS = {
  SOTTO_RELAY_CONNECTIONS_PER_ADDRESS: '1000000',
  SOTTO_RELAY_UNAUTHENTICATED_CONNECTIONS_PER_ADDRESS: '1000000',
  SOTTO_RELAY_REGISTRATIONS_PER_ADDRESS_PER_HOUR: '1000000',
  SOTTO_RELAY_HANDSHAKES_PER_ADDRESS_PER_SECOND: '1000000',
  SOTTO_RELAY_HANDSHAKES_PER_SECOND: '1000000',
};

/** The environment for the `sotto` binary: none of the caller's SOTTO_* settings leak in. */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('SOTTO_')) env[k] = v;
  }
  return { ...env, SOTTO_LOG: 'warn', ...extra };
}

/** Runs a command to completion (killed after PROCESS_TIMEOUT_MS); throws with its output unless it exits 0. */
export function run(cmd, args, { env = {}, what = `${path.basename(cmd)} ${args.join(' ')}`, allowFail = false } = {}) {
  const out = spawnSync(cmd, args, {
    env: cleanEnv(env),
    encoding: 'utf8',
    timeout: PROCESS_TIMEOUT_MS,
    killSignal: 'SIGKILL',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (out.error?.code === 'ETIMEDOUT') {
    throw new Error(`${what} did not finish within ${PROCESS_TIMEOUT_MS / 1000} s\n${out.stderr}`);
  }
  if (out.error) throw new Error(`cannot run ${what}: ${out.error.message}`);
  if (!allowFail && out.status !== 0) {
    throw new Error(`${what} failed (status ${out.status})\n--- stdout ---\n${out.stdout}\n--- stderr ---\n${out.stderr}`);
  }
  return out;
}

/** Like `run`, without blocking the event loop (so several can run at once). */
export function runAsync(cmd, args, { env = {}, what = `${path.basename(cmd)} ${args.join(' ')}` } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${what} did not finish within ${PROCESS_TIMEOUT_MS / 1000} s\n${stderr}`));
    }, PROCESS_TIMEOUT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${what}: ${e.message}`));
    });
    child.on('close', (status) => {
      clearTimeout(timer);
      children.delete(child);
      if (status === 0) resolve({ stdout, stderr, status });
      else reject(new Error(`${what} failed (status ${status})\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`));
    });
  });
}

/**
 * Starts a long-running process whose stderr goes to a log file; resolves
 * with the first stdout line `match` accepts (keeps draining stdout after).
 */
function startService({ cmd, args, env, logPath, what, match }) {
  const log = fs.openSync(logPath, 'a', 0o600);
  const child = spawn(cmd, args, { env: cleanEnv(env), stdio: ['ignore', 'pipe', log] });
  fs.closeSync(log);
  children.add(child);
  child.on('exit', () => children.delete(child));
  return new Promise((resolve, reject) => {
    let buffered = '';
    let found = false;
    const lines = [];
    const fail = (why) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${what}: ${why}\n--- stdout ---\n${lines.join('\n')}\n--- stderr (${logPath}) ---\n${readTail(logPath)}`));
    };
    const timer = setTimeout(() => fail(`printed nothing usable within ${PROCESS_TIMEOUT_MS / 1000} s`), PROCESS_TIMEOUT_MS);
    child.stdout.setEncoding('utf8').on('data', (d) => {
      buffered += d;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (found) continue;
        lines.push(line);
        const value = match(line);
        if (value !== undefined) {
          found = true;
          clearTimeout(timer);
          resolve({ child, value });
        }
      }
    });
    child.on('error', (e) => fail(`cannot start: ${e.message}`));
    child.on('exit', (code, signal) => {
      if (!found) fail(`exited (${signal ?? `status ${code}`}) before it was ready`);
    });
  });
}

export function readTail(file, bytes = 4000) {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.length > bytes ? `…${text.slice(-bytes)}` : text;
  } catch {
    return '(no log)';
  }
}

/** Sends SIGTERM and waits for the exit; SIGKILL after `ms`. Resolves with how it ended. */
export function stop(child, ms = 10_000) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve('already stopped');
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve(`did not stop within ${ms / 1000} s of SIGTERM; killed`);
    }, ms);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(signal ? `signal ${signal}` : `status ${code}`);
    });
    child.kill('SIGTERM');
  });
}

/** A running `sotto-relay serve` on 127.0.0.1 (port 0) with a fresh data directory. */
export class Relay {
  static async start() {
    const relay = new Relay();
    relay.dir = path.join(TMP, 'relay');
    relay.log = path.join(TMP, 'relay.log');
    run(binary('sotto-relay'), ['init', '--data-dir', relay.dir, '--listen', '127.0.0.1:0']);
    const { child, value } = await startService({
      cmd: binary('sotto-relay'),
      args: ['serve', '--data-dir', relay.dir],
      env: LOOPBACK_LIMITS,
      logPath: relay.log,
      what: 'sotto-relay serve',
      match: (line) => line.match(/^listening on (\S+)/)?.[1],
    });
    relay.child = child;
    relay.addr = value;
    return relay;
  }

  /** A fresh invite link (`sotto-relay invite`) for `uses` registrations. */
  invite(uses = 1) {
    const out = run(binary('sotto-relay'), ['invite', '--data-dir', this.dir, '--uses', String(uses)]);
    const link = out.stdout.trim().split('\n').map((l) => l.trim()).filter(Boolean).pop() ?? '';
    if (!link.startsWith('sotto://join?')) {
      throw new Error(`the last line of \`sotto-relay invite\` is not a link:\n${out.stdout}`);
    }
    return link;
  }
}

/** One person: a profile directory, the `sotto` CLI on it, and (when started) the `sotto app` service. */
export class User {
  constructor(name) {
    this.name = name;
    const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, '-');
    this.home = fs.mkdtempSync(path.join(TMP, `${slug}-`));
    this.log = path.join(TMP, `${slug}-app.log`);
    this.app = null;
    this.url = null;
  }

  /** Runs `sotto --home HOME ARGS` with the test passphrase; throws unless it exits 0. */
  cli(args, opts = {}) {
    return run(binary('sotto'), ['--home', this.home, ...args], {
      env: { SOTTO_PASSPHRASE: PASSPHRASE },
      what: `sotto ${args.join(' ')} (as ${this.name})`,
      ...opts,
    });
  }

  /** Like `cli`, without blocking (for set-up work done in parallel). */
  cliAsync(args) {
    return runAsync(binary('sotto'), ['--home', this.home, ...args], {
      env: { SOTTO_PASSPHRASE: PASSPHRASE },
      what: `sotto ${args.join(' ')} (as ${this.name})`,
    });
  }

  /**
   * Starts `sotto app --no-browser --listen 127.0.0.1:0` on this profile and
   * resolves with its one-time launch URL (its last stdout line).
   * `unlocked`: set SOTTO_PASSPHRASE so the service unlocks at start;
   * `link`: a sotto:// link the app is opened with (as a browser would hand it over).
   */
  async startApp({ unlocked = false, lockAfter, link } = {}) {
    const args = ['app', '--no-browser', '--home', this.home, '--listen', '127.0.0.1:0'];
    if (lockAfter) args.push('--lock-after', lockAfter);
    if (link) args.push(link);
    const { child, value } = await startService({
      cmd: binary('sotto'),
      args,
      env: unlocked ? { SOTTO_PASSPHRASE: PASSPHRASE } : {},
      logPath: this.log,
      what: `sotto app (${this.name})`,
      match: (line) => (/^http:\/\/127\.0\.0\.1:\d+\/launch\?token=\S+$/.test(line) ? line : undefined),
    });
    this.app = child;
    this.url = value;
    const written = fs.readFileSync(path.join(this.home, 'app-url'), 'utf8').trim();
    if (written !== value) {
      throw new Error(`HOME/app-url holds ${JSON.stringify(written)}, not the printed URL ${JSON.stringify(value)}`);
    }
    const mode = fs.statSync(path.join(this.home, 'app-url')).mode & 0o777;
    if (mode !== 0o600) throw new Error(`HOME/app-url has mode ${mode.toString(8)}, not 600`);
    return value;
  }

  /** The app's origin, e.g. http://127.0.0.1:PORT. */
  get origin() {
    return new URL(this.url).origin;
  }

  /** Stops the app with SIGTERM (a clean shutdown) and says how it ended. */
  async stopApp() {
    if (!this.app) return 'not running';
    const how = await stop(this.app);
    this.app = null;
    return how;
  }
}
