#!/usr/bin/env node
// Entry point of the `portlb` command. The sources are TypeScript run by Node's own type
// stripping, which needs Node 24 (the project's runtime).
const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  console.error(
    `portlb needs Node 24 or newer (this is ${process.version}). ` +
      'Run it through npm (`npm run portlb -- ...`, which uses the Node 24 that `npm install` fetched) or install Node 24.',
  );
  process.exit(2);
}
// Compiled code (and stripped TypeScript) is cached on disk: later starts are faster.
const { enableCompileCache } = await import('node:module');
enableCompileCache?.();
// The image ships the sources as JavaScript (images/strip-types.js); a checkout runs them
// as TypeScript.
const { existsSync } = await import('node:fs');
await import(existsSync(new URL('../src/main.js', import.meta.url)) ? '../src/main.js' : '../src/main.ts');
