// Keeps the BFD-only BIRD beside gobgpd provisioned with the agent's peers and reads its
// session states. BIRD runs in its own container (or unit); the agent owns its
// configuration: it writes the file they share and asks BIRD to reload it, again after
// every BIRD restart (seen in `show status`). A BIRD that cannot be reached makes the
// sessions "unknown", never "down": what the router sees is what counts, and BIRD may
// well be answering it.
import { rename, writeFile } from 'node:fs/promises';
import { describeError } from '../errors.ts';
import type { Clock } from '../util/clock.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import { type BfdSession, type BfdSettings, parseBfdSessions, renderBirdConfig } from './bird-config.ts';
import { BirdControl } from './bird-control.ts';

export interface BfdResponderOptions {
  settings: BfdSettings;
  socket: string;
  configFile: string;
  clock: Clock;
  logger?: Logger;
  pollMs?: number;
}

export interface BfdView {
  /** BIRD answered the last poll. */
  reachable: boolean;
  /** Its sessions as of the last poll that answered (undefined before any). */
  sessions: BfdSession[] | undefined;
  error: string | undefined;
}

export class BfdResponder {
  private readonly o: BfdResponderOptions;
  private readonly log: Logger;
  private readonly control: BirdControl;
  private readonly stop = new AbortController();
  private provisionedBoot: string | undefined;
  private view: BfdView = { reachable: false, sessions: undefined, error: undefined };
  private onChange: ((v: BfdView) => void) | undefined;

  constructor(options: BfdResponderOptions) {
    this.o = options;
    this.log = options.logger ?? silentLogger;
    this.control = new BirdControl(options.socket, 5000);
  }

  get config(): string {
    return renderBirdConfig(this.o.settings);
  }

  state(): BfdView {
    return this.view;
  }

  start(onChange?: (v: BfdView) => void): this {
    this.onChange = onChange;
    void this.loop();
    return this;
  }

  close(): void {
    this.stop.abort();
    this.control.close();
  }

  /** One round: provision if BIRD is new to us, then read the sessions. */
  async poll(): Promise<BfdView> {
    try {
      const status = await this.control.command('show status');
      const boot = status.lines.find((l) => l.text.startsWith('Last reboot'))?.text ?? 'unknown';
      if (boot !== this.provisionedBoot) {
        await this.writeConfig();
        await this.control.command(`configure "${this.o.configFile}"`);
        this.provisionedBoot = boot;
        this.log.info(
          { socket: this.o.socket, peers: this.o.settings.peers.map((p) => p.address) },
          'BFD responder provisioned',
        );
      }
      const reply = await this.control.command('show bfd sessions');
      this.set({ reachable: true, sessions: parseBfdSessions(reply.lines), error: undefined });
    } catch (err) {
      this.set({ reachable: false, sessions: this.view.sessions, error: describeError(err) });
    }
    return this.view;
  }

  private async writeConfig(): Promise<void> {
    // Atomic: BIRD (another container) never reads half a file.
    const tmp = `${this.o.configFile}.tmp`;
    await writeFile(tmp, this.config, { mode: 0o644 });
    await rename(tmp, this.o.configFile);
  }

  private set(v: BfdView): void {
    const before = this.view;
    this.view = v;
    const key = (x: BfdView) => JSON.stringify([x.reachable, x.sessions?.map((s) => [s.address, s.state])]);
    if (key(before) === key(v)) return;
    if (!v.reachable)
      this.log.warn({ err: v.error, socket: this.o.socket }, 'BFD responder unreachable; sessions unknown');
    for (const s of v.sessions ?? []) {
      const was = before.sessions?.find((b) => b.address === s.address)?.state;
      if (v.reachable && was !== s.state)
        this.log.info({ peer: s.address, state: s.state, was }, 'BFD session state');
    }
    this.onChange?.(v);
  }

  private async loop(): Promise<void> {
    while (!this.stop.signal.aborted) {
      await this.poll();
      try {
        await this.o.clock.sleep(this.o.pollMs ?? 1000, this.stop.signal);
      } catch {
        return;
      }
    }
  }
}
