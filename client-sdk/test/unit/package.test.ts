import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { build } from 'tsup';
import { describe, expect, it } from 'vitest';

const root = join(__dirname, '../..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  license: string;
  files: string[];
  keywords?: string[];
};

describe('the published package', () => {
  it('marks the React entry, and only it, "use client" (ESM and CJS); herald.global.js defines `Herald`', async () => {
    const out = mkdtempSync(join(tmpdir(), 'herald-sdk-build-'));
    try {
      await build({ outDir: out, dts: false, silent: true });
      const head = (f: string) => readFileSync(join(out, f), 'utf8').split('\n', 1)[0];
      expect(head('react.js')).toBe('"use client";');
      expect(head('react.cjs')).toBe('"use client";');
      expect(readFileSync(join(out, 'index.js'), 'utf8')).not.toContain('use client');
      expect(readFileSync(join(out, 'index.cjs'), 'utf8')).not.toContain('use client');

      // The <script> build defines the global `Herald` with the main entry's exports, and needs nothing else.
      const sandbox: { Herald?: Record<string, unknown> } = {};
      runInNewContext(readFileSync(join(out, 'herald.global.js'), 'utf8'), sandbox);
      expect(typeof sandbox.Herald?.HeraldClient).toBe('function');
      expect((sandbox.Herald?.State as Record<string, string>).Unauthorized).toBe('unauthorized');
      expect(Object.keys(sandbox)).toEqual(['Herald']);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 60_000);

  it('ships the Apache-2.0 LICENSE its license field names, and has keywords', () => {
    expect(pkg.license).toBe('Apache-2.0');
    expect(pkg.files).toContain('LICENSE');
    expect(readFileSync(join(root, 'LICENSE'), 'utf8')).toMatch(/^\s*Apache License\s+Version 2\.0, January 2004/);
    expect(pkg.keywords?.length).toBeGreaterThan(0);
  });
});
