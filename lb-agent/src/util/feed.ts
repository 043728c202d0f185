import { execFile } from 'node:child_process';

/**
 * Runs a command with `input` on its stdin (nft -f -, iptables-restore, ipset restore);
 * rejects with its exit code and stderr in the message (and as `stderr`).
 */
export function feed(cmd: string, args: string[], input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args);
    let stderr = '';
    child.stderr?.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0
        ? resolve()
        : reject(
            Object.assign(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.trim()}`), { stderr }),
          ),
    );
    child.stdin?.end(input);
  });
}

/**
 * A legacy iptables jump from a built-in chain to one of portlb's, first in line (a host
 * firewall's earlier ACCEPT must not bypass it); added once.
 */
export async function ensureJumpFirst(
  bin: string,
  table: string,
  from: string,
  chain: string,
  comment: string,
): Promise<void> {
  const spec = ['-m', 'comment', '--comment', comment, '-j', chain];
  const exists = await feed(bin, ['-w', '-t', table, '-C', from, ...spec], '').then(
    () => true,
    () => false,
  );
  if (!exists) await feed(bin, ['-w', '-t', table, '-I', from, '1', ...spec], '');
}
