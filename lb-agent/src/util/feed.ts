import { execFile } from 'node:child_process';

/**
 * Runs a command with `input` on its stdin (nft -f -, iptables-restore, ipset restore);
 * rejects with its exit code and stderr in the message (and as `stderr`). A command that
 * exits without reading all of its input fails the call (the write's EPIPE would otherwise
 * be an uncaught exception: it took an agent down).
 */
export function feed(cmd: string, args: string[], input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args);
    let stderr = '';
    let unread: Error | undefined;
    child.stderr?.on('data', (d) => (stderr += d));
    child.stdin?.on('error', (err) => (unread = err));
    child.on('error', reject);
    child.on('close', (code) => {
      const what = `${cmd} ${args.join(' ')}`;
      if (code !== 0)
        reject(Object.assign(new Error(`${what} exited ${code}: ${stderr.trim()}`), { stderr }));
      else if (unread)
        reject(
          new Error(
            `${what} exited 0 but did not read its input (${unread.message}); nothing known was applied`,
          ),
        );
      else resolve();
    });
    if (input) child.stdin?.end(input);
    else child.stdin?.end();
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
