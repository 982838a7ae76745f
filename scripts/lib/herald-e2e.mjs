// What the browser end-to-end suites share (web-demo/e2e, admin-console/e2e): a real `herald serve` process
// that prints its address, Debian's chromium with a throwaway profile, and polling. Each suite keeps its own
// configuration and page helpers; playwright-core is resolved by the suite's package, so it is passed in.
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A TOML basic string: a JSON string is one. */
export const tomlString = (s) => JSON.stringify(s);

/**
 * `bin serve --config <dir>/herald.toml`, run from `dir`, its output in `<artifacts>/herald.log`.
 * `launch()` starts it and resolves with the URL it prints (rejects if it exits first or prints nothing within
 * 20 s); `halt()` stops it (SIGTERM, SIGKILL after 5 s); `close()` also removes `dir`.
 */
export function heraldProcess({ bin, dir, artifacts }) {
  mkdirSync(artifacts, { recursive: true });
  const logPath = join(artifacts, 'herald.log');
  const log = createWriteStream(logPath);
  let child;
  const launch = () =>
    new Promise((resolveUrl, reject) => {
      child = spawn(bin, ['serve', '--config', join(dir, 'herald.toml')], {
        cwd: dir,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' },
      });
      child.stderr.pipe(log, { end: false });
      const timer = setTimeout(() => reject(new Error('Herald did not print its address within 20 s')), 20_000);
      let buf = '';
      child.stdout.on('data', (chunk) => {
        log.write(chunk);
        buf += chunk;
        const m = buf.match(/herald listening on (http:\/\/[^\s"]+)/);
        if (m) {
          clearTimeout(timer);
          resolveUrl(m[1]);
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`Herald exited with ${code} before listening; see ${logPath}`));
      });
    });
  const halt = async () => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  };
  return {
    launch,
    halt,
    async close() {
      await halt();
      log.end();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Headless chromium (playwright-core's `chromium`) with a fresh profile: one context, its pages share storage. */
export async function launchChromium(chromium, { executablePath, profilePrefix, args }) {
  if (!existsSync(executablePath)) throw new Error(`no chromium at ${executablePath} (apt-get install chromium)`);
  const profile = mkdtempSync(join(tmpdir(), profilePrefix));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args,
    viewport: { width: 1280, height: 860 },
    deviceScaleFactor: 1,
    colorScheme: 'light',
    reducedMotion: 'reduce',
  });
  return {
    context,
    async close() {
      await context.close().catch(() => undefined);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Poll `fn` every `intervalMs` until it returns a truthy value (thrown errors count as "not yet"). */
export async function until(what, fn, timeoutMs, intervalMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${String(last)})`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
