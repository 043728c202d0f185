// The fake Kubernetes API server as a process of its own (so that the agent under test is
// measured and faulted separately from it), over HTTPS like a real one.
//   node test/harness/fake-kube-api-server.ts --host 10.0.0.254 --port 6443 --tls-dir DIR [--seed FILE]
// Prints `listening URL` when ready. DIR receives ca.crt (= the server certificate,
// self-signed, for the given host) and is created when missing. FILE (JSON: resource ->
// objects) is loaded before it listens (benchmarks: 10,000 Services in a second).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { FakeKubeApi } from './fake-kube-api.ts';

/** A self-signed certificate for the given addresses (openssl), in DIR/tls.key, DIR/ca.crt. */
export function makeServingCert(dir: string, addresses: string[]): { key: string; cert: string } {
  mkdirSync(dir, { recursive: true });
  const key = path.join(dir, 'tls.key');
  const cert = path.join(dir, 'ca.crt');
  if (!existsSync(cert)) {
    const san = addresses.map((a) => (/^[\d.:a-fA-F]+$/.test(a) ? `IP:${a}` : `DNS:${a}`)).join(',');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '2',
        '-subj',
        '/CN=fake-kube-apiserver',
        '-addext',
        `subjectAltName=${san}`,
        '-keyout',
        key,
        '-out',
        cert,
      ],
      { stdio: 'pipe' },
    );
  }
  return { key: readFileSync(key, 'utf8'), cert: readFileSync(cert, 'utf8') };
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      'tls-dir': { type: 'string' },
      seed: { type: 'string' },
    },
  });
  const host = values.host!;
  const tls = values['tls-dir'] ? makeServingCert(values['tls-dir'], [host, '127.0.0.1']) : undefined;
  const api = new FakeKubeApi({ host, tls });
  if (values.seed) {
    const seed = JSON.parse(readFileSync(values.seed, 'utf8')) as Record<string, Record<string, unknown>[]>;
    for (const [resource, objects] of Object.entries(seed)) for (const o of objects) api.create(resource, o);
  }
  api.port = Number(values.port);
  const url = await api.start();
  console.log(`listening ${url}`);
  process.on('SIGTERM', () => {
    void api.stop().then(() => process.exit(0));
  });
}
