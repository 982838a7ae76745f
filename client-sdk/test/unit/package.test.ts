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
  it('marks the React entries (react, ui), and only them, "use client" (ESM and CJS); herald.global.js defines `Herald`', async () => {
    const out = mkdtempSync(join(tmpdir(), 'herald-sdk-build-'));
    try {
      await build({ outDir: out, dts: false, silent: true });
      const head = (f: string) => readFileSync(join(out, f), 'utf8').split('\n', 1)[0];
      expect(head('react.js')).toBe('"use client";');
      expect(head('react.cjs')).toBe('"use client";');
      expect(head('ui.js')).toBe('"use client";');
      expect(head('ui.cjs')).toBe('"use client";');
      // The components' styles ship as the CSS file the `./ui/styles.css` export names.
      expect(readFileSync(join(out, 'ui.css'), 'utf8')).toContain('--herald-accent');
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

  it('exports ./ui (types first, ESM and CJS) and ./ui/styles.css; React is an optional peer', () => {
    const p = pkg as unknown as {
      exports: Record<string, unknown>;
      peerDependenciesMeta: Record<string, { optional?: boolean }>;
      typesVersions: Record<string, Record<string, string[]>>;
      repository?: { url?: string };
    };
    expect(p.exports['./ui']).toEqual({
      import: { types: './dist/ui.d.ts', default: './dist/ui.js' },
      require: { types: './dist/ui.d.cts', default: './dist/ui.cjs' },
    });
    expect(p.exports['./ui/styles.css']).toBe('./dist/ui.css');
    expect(p.typesVersions['*']!.ui).toEqual(['./dist/ui.d.ts']);
    expect(p.peerDependenciesMeta.react?.optional).toBe(true);
    expect(p.repository?.url).toMatch(/\.git$/);
  });

  it('ships the Apache-2.0 LICENSE its license field names, and has keywords', () => {
    expect(pkg.license).toBe('Apache-2.0');
    expect(pkg.files).toContain('LICENSE');
    expect(readFileSync(join(root, 'LICENSE'), 'utf8')).toMatch(/^\s*Apache License\s+Version 2\.0, January 2004/);
    expect(pkg.keywords?.length).toBeGreaterThan(0);
  });
});
