/**
 * The SDK's REST types cannot drift from the gateway's OpenAPI document (`docs/openapi.json`): the generated
 * types are that document's, and `src/contract.ts` holds the hand-written types equal to them at compile time.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const SDK = join(__dirname, '../..');
const bin = (name: string) => join(SDK, 'node_modules/.bin', name);

describe('the OpenAPI contract', () => {
  it('src/generated/openapi.ts is generated from the committed docs/openapi.json', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'herald-openapi-')), 'openapi.ts');
    const run = spawnSync(bin('openapi-typescript'), ['../docs/openapi.json', '-o', out], {
      cwd: SDK,
      encoding: 'utf8',
    });
    expect(run.status, run.stderr).toBe(0);
    const committed = readFileSync(join(SDK, 'src/generated/openapi.ts'), 'utf8');
    expect(committed === readFileSync(out, 'utf8'), 'stale: run `npm run generate` in client-sdk/').toBe(true);
  });

  it("the SDK's REST types are the document's (src/contract.ts compiles)", () => {
    const run = spawnSync(bin('tsc'), ['-p', 'tsconfig.json'], { cwd: SDK, encoding: 'utf8' });
    expect(run.status, `${run.stdout}${run.stderr}`).toBe(0);
  });
});
