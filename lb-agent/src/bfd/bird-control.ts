// BIRD's control socket (what birdc speaks): one command per line; each reply line starts
// with a four-digit code and '-' when more lines follow, ' ' on the last one; a line
// starting with a space continues the previous code. 0xxx end a command, 1xxx carry
// tables, 8xxx and 9xxx are errors. portlb drives a BFD-only BIRD through it.
import { connect, type Socket } from 'node:net';
import { PortlbError } from '../errors.ts';

export class BirdError extends PortlbError<'BIRD_UNREACHABLE' | 'BIRD_TIMEOUT' | 'BIRD_REFUSED'> {}

export interface BirdReply {
  code: number;
  /** Every line of the reply, with its code (continuations carry the previous one). */
  lines: { code: number; text: string }[];
}

/** Splits a reply into lines; undefined until the last line has arrived. */
export function parseBirdReply(text: string): { reply: BirdReply; rest: string } | undefined {
  const lines: BirdReply['lines'] = [];
  let at = 0;
  let code = 0;
  for (;;) {
    const end = text.indexOf('\n', at);
    if (end < 0) return undefined;
    const line = text.slice(at, end);
    at = end + 1;
    const m = /^(\d{4})([- ])(.*)$/.exec(line);
    if (!m) {
      lines.push({ code, text: line.replace(/^ /, '') });
      continue;
    }
    code = Number(m[1]);
    lines.push({ code, text: m[3]! });
    if (m[2] === ' ') return { reply: { code, lines }, rest: text.slice(at) };
  }
}

/** One connection to BIRD, one command at a time. */
export class BirdControl {
  private socket: Socket | undefined;
  private buffer = '';
  private waiting: ((r: BirdReply) => void) | undefined;
  private failed: ((e: Error) => void) | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  readonly path: string;
  readonly timeoutMs: number;

  constructor(path: string, timeoutMs = 5000) {
    this.path = path;
    this.timeoutMs = timeoutMs;
  }

  /** Runs one command; rejects with BirdError when BIRD is unreachable, silent or refuses. */
  command(line: string): Promise<BirdReply> {
    const run = this.chain.then(() => this.exchange(line));
    this.chain = run.catch(() => {});
    return run;
  }

  close(): void {
    const socket = this.socket;
    this.socket = undefined;
    this.buffer = '';
    socket?.destroy();
  }

  private async open(): Promise<void> {
    if (this.socket) return;
    const socket = connect(this.path);
    this.socket = socket;
    socket.setEncoding('utf8');
    // Events of a connection given up on (a timeout closes it) must not reach the next
    // one's command: a late reply would be taken for the next command's.
    socket.on('data', (chunk: string) => {
      if (this.socket !== socket) return;
      this.buffer += chunk;
      const parsed = parseBirdReply(this.buffer);
      if (!parsed) return;
      this.buffer = parsed.rest;
      const done = this.waiting;
      this.waiting = undefined;
      done?.(parsed.reply);
    });
    const drop = (err: Error) => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.buffer = '';
      this.failed?.(err);
    };
    socket.on('error', drop);
    socket.on('close', () => drop(new Error('BIRD closed the control connection')));
    // The greeting (0001 BIRD x.y ready.) is the first reply.
    await this.await(undefined);
  }

  private async exchange(line: string): Promise<BirdReply> {
    try {
      await this.open();
      const reply = await this.await(line);
      if (reply.code >= 8000) {
        throw new BirdError(
          'BIRD_REFUSED',
          `BIRD refused "${line}": ${reply.lines.map((l) => l.text).join('; ')}`,
        );
      }
      return reply;
    } catch (err) {
      if (err instanceof BirdError && err.code === 'BIRD_REFUSED') throw err;
      this.close();
      if (err instanceof BirdError) throw err;
      throw new BirdError('BIRD_UNREACHABLE', `BIRD control socket ${this.path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  private await(line: string | undefined): Promise<BirdReply> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(
          new BirdError(
            'BIRD_TIMEOUT',
            `BIRD did not answer "${line ?? 'hello'}" within ${this.timeoutMs} ms`,
          ),
        );
      }, this.timeoutMs);
      this.waiting = (r) => {
        clearTimeout(timer);
        resolve(r);
      };
      this.failed = (e) => {
        clearTimeout(timer);
        this.waiting = undefined;
        reject(e);
      };
      if (line !== undefined) this.socket?.write(`${line}\n`);
    });
  }
}
