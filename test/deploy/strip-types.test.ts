// The image runs the agent as JavaScript made by images/strip-types.js at build time.
// Here the same script converts a copy of the sources, and the copy must run: every
// module of the agent loads (a .ts specifier left behind would fail only when loaded),
// and the command answers as the checkout's does.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { pathToFileURL } from 'node:url';

const repo = path.resolve(import.meta.dirname, '..', '..');
const work = mkdtempSync(path.join(tmpdir(), 'portlb-strip-'));
after(() => rmSync(work, { recursive: true, force: true }));

const files = (dir: string): string[] =>
  readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name));

test('the stripped sources load and run as the TypeScript does', async () => {
  for (const d of ['lb-agent/bin', 'lb-agent/src', 'protos'])
    cpSync(path.join(repo, d), path.join(work, d), { recursive: true });
  cpSync(path.join(repo, 'package.json'), path.join(work, 'package.json'));
  symlinkSync(path.join(repo, 'node_modules'), path.join(work, 'node_modules'));
  // The native addon is found beside the sources it belongs to.
  rmSync(path.join(work, 'lb-agent', 'native'), { recursive: true, force: true });
  symlinkSync(path.join(repo, 'lb-agent', 'native'), path.join(work, 'lb-agent', 'native'));

  const src = path.join(work, 'lb-agent', 'src');
  const out = execFileSync(process.execPath, [path.join(repo, 'images', 'strip-types.js'), src], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  assert.match(out, /strip-types: \d+ modules/);
  const converted = files(src);
  assert.deepEqual(
    converted.filter((f) => f.endsWith('.ts')),
    [],
    'no TypeScript left (tests deleted, modules converted)',
  );
  const modules = converted.filter((f) => f.endsWith('.js') && path.basename(f) !== 'main.js');
  assert.ok(modules.length > 50, `${modules.length} modules`);
  // main.js runs the command line when loaded: it is run below instead.
  for (const m of modules) await import(pathToFileURL(m).href);

  const run = (bin: string, args: string[]) =>
    execFileSync(process.execPath, [bin, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const stripped = run(path.join(work, 'lb-agent', 'bin', 'portlb.js'), ['--help']);
  assert.equal(stripped, run(path.join(repo, 'lb-agent', 'bin', 'portlb.js'), ['--help']));
  // A subcommand (loaded lazily by main.js) through the stripped tree.
  assert.match(
    run(path.join(work, 'lb-agent', 'bin', 'portlb.js'), ['config', '--help']),
    /Usage: portlb config/,
  );
});
