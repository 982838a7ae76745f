import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'src/index.ts', react: 'src/react/index.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  // One copy of the client shared by both entry points (so `instanceof HeraldError` holds across them).
  splitting: true,
  clean: true,
  target: 'es2020',
  external: ['react'],
});
