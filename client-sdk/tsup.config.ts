import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { build, defineConfig } from 'tsup';

const USE_CLIENT = '"use client";\n';

/** The entries that hold React code: marked `"use client"`. */
const CLIENT_ENTRIES = ['react', 'ui'];

/**
 * Marks the React entries' files as client components for the Next.js App Router (and other RSC bundlers).
 * tsup's `banner` would mark every entry, and a directive added while bundling is dropped by the CJS pass, so
 * it is prepended to the finished files.
 */
async function markUseClient(outDir: string): Promise<void> {
  for (const file of CLIENT_ENTRIES.flatMap((e) => [`${e}.js`, `${e}.cjs`])) {
    const path = join(outDir, file);
    const code = await readFile(path, 'utf8');
    if (!code.startsWith(USE_CLIENT)) await writeFile(path, USE_CLIENT + code);
  }
}

/**
 * `herald.global.js`: the main entry as one minified script defining the global `Herald`, for pages without a
 * bundler (`<script src=…>` in a Django template). Built after the others, so their `clean` cannot race it.
 */
async function buildGlobal(outDir: string): Promise<void> {
  await build({
    config: false,
    entry: { herald: 'src/index.ts' },
    format: ['iife'],
    globalName: 'Herald',
    outDir,
    minify: true,
    target: 'es2020',
    clean: false,
    dts: false,
    silent: true,
  });
}

// A function, so an `outDir` given on the command line or to `build()` reaches `onSuccess`.
export default defineConfig((overrides) => {
  const outDir = overrides.outDir ?? 'dist';
  return {
    entry: { index: 'src/index.ts', react: 'src/react/index.ts', ui: 'src/ui/index.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    // One copy of the client shared by both entry points (so `instanceof HeraldError` holds across them).
    splitting: true,
    clean: true,
    target: 'es2020',
    external: ['react', 'react/jsx-runtime', 'react-dom'],
    outDir,
    onSuccess: async () => {
      await markUseClient(outDir);
      // `@herald/client/ui/styles.css`: the components' styles, as written (a CSS file is not bundled).
      await copyFile('src/ui/styles.css', join(outDir, 'ui.css'));
      await buildGlobal(outDir);
    },
  };
});
