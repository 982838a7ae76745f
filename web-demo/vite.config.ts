import { defineConfig } from 'vitest/config';

// The gateway a `npm run dev` session talks to (the dev server proxies /api and /ws there, so the page, the REST
// calls and the WebSocket share one origin: http://localhost:5173, which Herald allows by default).
const gateway = process.env.HERALD_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  // Herald serves the demo at / and its files at their paths: absolute asset URLs.
  base: '/',
  // React's automatic JSX runtime through esbuild: no Babel plugin needed.
  esbuild: { jsx: 'automatic' },
  resolve: {
    // @herald/client is linked from ../client-sdk, which has its own node_modules: one React for both.
    dedupe: ['react', 'react-dom'],
  },
  server: {
    proxy: {
      '/api': gateway,
      '/ws': { target: gateway, ws: true },
    },
    // The publish panel imports the repository's event fixtures.
    fs: { allow: ['.', '../tests/fixtures/events', '../client-sdk'] },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: true,
    target: 'es2020',
  },
  test: {
    include: ['src/**/*.test.ts'],
  },
});
