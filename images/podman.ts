// podman, as portlb's image build and pod tests drive it: runc, the ulimits these
// sandboxes allow (images/containers.conf), no registry ever (--pull=never).
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';

export const repo = path.resolve(import.meta.dirname, '..');
export const CONTAINERS_CONF = path.join(repo, 'images', 'containers.conf');
export const VERSION = (
  JSON.parse(readFileSync(path.join(repo, 'package.json'), 'utf8')) as { version: string }
).version;

/** The images `npm run images` builds, tagged with the package version. */
export const IMAGES = {
  agent: `localhost/portlb/lb-agent:${VERSION}`,
  speaker: `localhost/portlb/bgp-speaker:${VERSION}`,
} as const;

/** Local stand-ins for the registry bases the Dockerfiles name (no registry is reachable). */
export const BASES = {
  debian: 'localhost/portlb-base/debian:bookworm',
  node: (nodeVersion: string) => `localhost/portlb-base/node:${nodeVersion}-bookworm`,
} as const;

/** Flags every build needs here: host network (the Debian mirror), no pulls, low ulimits. */
export const BUILD_FLAGS = [
  '--network',
  'host',
  '--pull=never',
  '--ulimit',
  'nofile=1024:1024',
  '--ulimit',
  'nproc=1024:1024',
];

export const podmanEnv = (): NodeJS.ProcessEnv => ({ ...process.env, CONTAINERS_CONF });

/** Runs podman and returns its stdout; throws with its stderr. */
export function podman(args: string[], input?: string): string {
  try {
    return execFileSync('podman', args, {
      encoding: 'utf8',
      env: podmanEnv(),
      input,
      stdio: ['pipe', 'pipe', 'pipe'],
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`podman ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`);
  }
}

export function imageExists(ref: string): boolean {
  try {
    podman(['image', 'exists', ref]);
    return true;
  } catch {
    return false;
  }
}

/** `name@sha256:...` for a local image: the reference a build pins its base to. */
export function pinnedRef(ref: string): string {
  const digest = podman(['image', 'inspect', '--format', '{{.Digest}}', ref]).trim();
  return `${ref.replace(/:[^:/]+$/, '')}@${digest}`;
}

export function imageSize(ref: string): number {
  return Number(podman(['image', 'inspect', '--format', '{{.Size}}', ref]).trim());
}

/**
 * Runs podman with its output passed through line by line behind a prefix (progress on
 * long builds); rejects with the last lines when it fails.
 */
export function podmanStream(args: string[], prefix: string, input?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('podman', args, { env: podmanEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    const tail: string[] = [];
    const onData = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) {
        if (!line.trim()) continue;
        tail.push(line);
        if (tail.length > 40) tail.shift();
        process.stdout.write(`${prefix}${line}\n`);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`podman ${args[0]} exited ${code}:\n${tail.join('\n')}`)),
    );
    child.stdin.end(input);
  });
}
