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
