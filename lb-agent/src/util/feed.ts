import { execFile } from 'node:child_process';
import { once } from 'node:events';
import type { Writable } from 'node:stream';

/** Input is written in pieces of this many UTF-16 code units, each as the pipe drains. */
const PIECE = 64 * 1024;

/**
 * Runs a command with `input` on its stdin (nft -f -, iptables-restore, ipset restore);
 * rejects with its exit code and stderr in the message (and as `stderr`). A command that
 * exits without reading all of its input fails the call (the write's EPIPE would otherwise
 * be an uncaught exception: it took an agent down). The input goes in pieces as the pipe
 * takes them: a whole script at once was encoded in one turn of the event loop (the
 * rules of 10,000 VIPs, megabytes, held it for ~100 ms in UML).
 */
export function feed(cmd: string, args: string[], input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args);
    let stderr = '';
    let unread: Error | undefined;
    child.stderr?.on('data', (d) => (stderr += d));
    child.stdin?.on('error', (err) => (unread = err));
    child.on('error', reject);
    const closed = new AbortController();
    child.on('close', (code) => {
      closed.abort();
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
    if (child.stdin) writeInPieces(child.stdin, input, closed.signal).catch((err) => (unread ??= err));
  });
}

async function writeInPieces(stdin: Writable, input: string, closed: AbortSignal): Promise<void> {
  for (let at = 0; at < input.length; ) {
    let end = Math.min(at + PIECE, input.length);
    // Never between the two halves of a surrogate pair (each half alone is not UTF-8).
    const last = input.charCodeAt(end - 1);
    if (end < input.length && last >= 0xd800 && last <= 0xdbff) end++;
    const more = stdin.write(input.slice(at, end));
    at = end;
    // The command exited without reading it all: its EPIPE is already recorded.
    if (!more && at < input.length) await once(stdin, 'drain', { signal: closed });
  }
  stdin.end();
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
