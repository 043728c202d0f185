// Image build only: turns the agent's TypeScript sources in DIR into JavaScript in place,
// with the transform Node applies when it loads a .ts file (module.stripTypeScriptTypes),
// and relative imports renamed from .ts to .js. Tests go. Node then never loads its type
// stripper (a WebAssembly module) at all: the agent's process is about 25 MB smaller
// (bench/README.md). Never run it on a checkout: it deletes the .ts files it converts.
//   node images/strip-types.js lb-agent/src
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { stripTypeScriptTypes } from 'node:module';
import path from 'node:path';

const dir = process.argv[2];
if (!dir || process.argv.includes('--help')) {
  console.log(
    'Usage: node images/strip-types.js DIR  (image build only: converts DIR/**/*.ts to .js in place)',
  );
  process.exit(dir ? 0 : 2);
}

// Every relative module specifier ending in .ts: static and dynamic imports, re-exports,
// side-effect imports.
const SPECIFIER = /(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"\n]+)\.ts\2/g;
const LEFT = /['"]\.{1,2}\/[^'"\n]+\.ts['"]/;

let converted = 0;
const problems = [];
function walk(d) {
  for (const name of readdirSync(d)) {
    const file = path.join(d, name);
    if (statSync(file).isDirectory()) {
      walk(file);
      continue;
    }
    if (!name.endsWith('.ts')) continue;
    if (name.endsWith('.test.ts') || name === 'fixtures.ts') {
      rmSync(file);
      continue;
    }
    const js = stripTypeScriptTypes(readFileSync(file, 'utf8'), { mode: 'strip' }).replace(
      SPECIFIER,
      '$1$2$3.js$2',
    );
    // A .ts specifier in a form the pattern does not know would fail only when loaded.
    const left = js.split('\n').find((line) => LEFT.test(line) && !line.trim().startsWith('//'));
    if (left) problems.push(`${file}: ${left.trim()}`);
    writeFileSync(file.replace(/\.ts$/, '.js'), js);
    rmSync(file);
    converted++;
  }
}
walk(dir);
if (problems.length) {
  console.error(`strip-types: a .ts module specifier left in:\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log(`strip-types: ${converted} modules in ${dir} are JavaScript now`);
