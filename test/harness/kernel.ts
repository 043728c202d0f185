// Helpers for tests that need the real kernel: they run inside the UML harness
// (scripts/uml-run.sh), never on the host, and fail loudly anywhere else.
import { execFileSync } from 'node:child_process';

export function requireKernelHarness(): void {
  if (process.env.PORTLB_IN_UML !== '1') {
    throw new Error(
      'this test needs the IPVS kernel: run it through the kernel harness ' +
        '(npm test does; by hand: scripts/uml-run.sh -- node --test <file>)',
    );
  }
}

/** Runs a shell command in the guest; throws with its stderr on failure. */
export function sh(command: string): string {
  return execFileSync('bash', ['-c', command], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * A dummy interface with the given addresses, so that IPVS accepts destinations in
 * their subnets (masq refuses an address without a route). Idempotent.
 */
export function ensureDummy(name: string, addresses: string[]): void {
  sh(`ip link show ${name} >/dev/null 2>&1 || ip link add ${name} type dummy; ip link set ${name} up`);
  for (const a of addresses) {
    sh(`ip addr replace ${a} dev ${name} ${a.includes(':') ? 'nodad' : ''}`);
  }
}
