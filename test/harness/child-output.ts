// A child's result as the last line of its standard output, read once that output has
// closed: a process's 'exit' can come before the last of its output has been read (the
// load client's JSON was lost that way once in CI, "Unexpected end of JSON input").
import type { ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';

export function lastJsonLine<T>(
  child: ChildProcessByStdio<null, Readable, Readable>,
  what: string,
  onStderr?: (text: string) => void,
): Promise<T> {
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => {
    err += d;
    onStderr?.(err);
  });
  return new Promise<T>((resolve, reject) => {
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${what} exited ${code}: ${err}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as T);
      } catch (e) {
        reject(new Error(`${what} output unreadable: ${out} ${err} ${(e as Error).message}`));
      }
    });
  });
}
