#!/usr/bin/env node
// Builds lb-agent/native (the netlink socket addon) at install time, offline: node-gyp is
// pointed at headers that are already on disk (those shipped with the running Node, or
// the distribution's), so it never tries to download them.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const addonDir = path.join(root, 'lb-agent', 'native');

if (process.platform !== 'linux') {
  console.log(`portlb: netlink addon not built on ${process.platform} (the agent runs on Linux only)`);
  process.exit(0);
}

const candidates = [
  process.env.PORTLB_NODEDIR,
  path.dirname(path.dirname(process.execPath)),
  process.env.npm_config_nodedir,
  '/usr',
  '/usr/local',
].filter(Boolean);
const nodedir = candidates.find((dir) => existsSync(path.join(dir, 'include', 'node', 'node_api.h')));
if (!nodedir) {
  console.error(
    `portlb: no Node headers found (looked for include/node/node_api.h under ${candidates.join(', ')}).\n` +
      'Install them (Debian: apt-get install libnode-dev) or set PORTLB_NODEDIR to a Node distribution directory.',
  );
  process.exit(1);
}

function findNodeGyp() {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) {
    return process.env.npm_config_node_gyp;
  }
  const require = createRequire(import.meta.url);
  for (const base of [
    root,
    path.dirname(process.execPath),
    '/usr/lib/node_modules/npm',
    '/usr/local/lib/node_modules/npm',
  ]) {
    try {
      return require.resolve('node-gyp/bin/node-gyp.js', {
        paths: [base, path.join(base, 'node_modules', 'npm')],
      });
    } catch {}
  }
  console.error('portlb: node-gyp not found; it ships with npm (run this through `npm install`).');
  process.exit(1);
}

execFileSync(process.execPath, [findNodeGyp(), 'rebuild', `--nodedir=${nodedir}`, '--loglevel=warn'], {
  cwd: addonDir,
  stdio: 'inherit',
});
console.log(
  `portlb: built ${path.join('lb-agent', 'native', 'build', 'Release', 'portlb_netlink.node')} (headers: ${nodedir})`,
);
