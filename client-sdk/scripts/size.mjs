// Bundle size of each entry point, as an app's bundler would ship it: the built ESM entry with the chunks it
// imports, React left out, minified by esbuild, then gzipped. `node scripts/size.mjs --write` puts the table
// into README.md between the `<!-- sizes -->` markers. Run `npm run build` first.
import { build, transform } from 'esbuild';
import { readFileSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');

/** `file`, or (with `only`) just those exports of it: what tree shaking leaves of the entry. */
async function bundled(file, only) {
  const input = only
    ? { stdin: { contents: `export { ${only.join(', ')} } from './${file}';`, resolveDir: dist, loader: 'js' } }
    : { entryPoints: [join(dist, file)] };
  const out = await build({
    ...input,
    bundle: true,
    minify: true,
    format: 'esm',
    write: false,
    external: ['react', 'react/*', 'react-dom'],
    logLevel: 'silent',
  });
  return Buffer.from(out.outputFiles[0].contents);
}

const kb = (n) => `${(n / 1024).toFixed(1)} kB`;
const rows = [];
for (const [name, file, only] of [
  ['`@herald/client`', 'index.js'],
  ['`@herald/client`: `HeraldClient` alone', 'index.js', ['HeraldClient']],
  ['`@herald/client/react`', 'react.js'],
  ['`@herald/client/ui`', 'ui.js'],
  ['`@herald/client/ui`: `NotificationBell` alone', 'ui.js', ['NotificationBell']],
  ['`@herald/client/ui`: `Toasts` alone', 'ui.js', ['Toasts']],
]) {
  const code = await bundled(file, only);
  rows.push([name, kb(code.length), kb(gzipSync(code, { level: 9 }).length)]);
}
const global = readFileSync(join(dist, 'herald.global.js'));
rows.push(['`herald.global.js` (script tag)', kb(global.length), kb(gzipSync(global, { level: 9 }).length)]);
const css = Buffer.from(
  (await transform(readFileSync(join(dist, 'ui.css'), 'utf8'), { loader: 'css', minify: true })).code,
);
rows.push(['`@herald/client/ui/styles.css`', kb(css.length), kb(gzipSync(css, { level: 9 }).length)]);

const table = [
  '| entry (with everything it imports, React excluded) | minified | gzip |',
  '| --- | ---: | ---: |',
  ...rows.map((r) => `| ${r.join(' | ')} |`),
].join('\n');
console.log(table);

if (process.argv.includes('--write')) {
  const readme = join(root, 'README.md');
  const text = readFileSync(readme, 'utf8');
  const re = /(<!-- sizes -->\n)[\s\S]*?(<!-- \/sizes -->)/;
  if (!re.test(text)) throw new Error('README.md has no <!-- sizes --> … <!-- /sizes --> markers');
  writeFileSync(readme, text.replace(re, `$1${table}\n$2`));
  console.log('README.md updated');
}
