import { defineConfig } from 'vitest/config';

// The gateway a `npm run dev` session talks to: the dev server proxies /api there, so the page and the admin API
// share one origin (the admin API answers no CORS).
const gateway = process.env.HERALD_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  // Herald serves the console at /admin/ (server.admin_dir): asset URLs under it.
  base: '/admin/',
  esbuild: { jsx: 'automatic' },
  server: { proxy: { '/api': gateway } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2020',
    // The page's CSP allows no inline script: Vite's module-preload polyfill would be one.
    modulePreload: { polyfill: false },
  },
  test: { include: ['src/**/*.test.ts'] },
});
