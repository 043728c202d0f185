// Where the API server is and how to authenticate to it: in-cluster (the pod's service
// account: token file, CA, KUBERNETES_SERVICE_HOST/PORT) or a kubeconfig file (server,
// CA, token or client certificate). Kubeconfigs that authenticate through an exec plugin
// or an auth provider are handed to @kubernetes/client-node, loaded only then: it costs
// 80 MB of memory, which a node agent in a cluster never pays.
import { readFileSync } from 'node:fs';
import type { RequestOptions } from 'node:https';
import { homedir } from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { PortlbError } from '../errors.ts';

export class KubeConfigError extends PortlbError<'KUBECONFIG_INVALID' | 'NOT_IN_CLUSTER'> {}

export interface KubeConnection {
  /** https://host:port (no trailing slash). */
  server: string;
  ca: string | undefined;
  insecure: boolean;
  /** TLS server name when it differs from the host. */
  servername: string | undefined;
  token: string | undefined;
  /** A token file re-read as it rotates (bound service account tokens do). */
  tokenFile: string | undefined;
  cert: string | undefined;
  key: string | undefined;
  /** Per-request options computed by the client library (exec plugins, auth providers). */
  apply: ((options: RequestOptions) => Promise<void>) | undefined;
  /** Where this came from, for messages. */
  source: string;
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export function inClusterConnection(env: NodeJS.ProcessEnv = process.env, saDir = SA_DIR): KubeConnection {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port)
    throw new KubeConfigError(
      'NOT_IN_CLUSTER',
      'not in a pod (KUBERNETES_SERVICE_HOST/PORT unset): set kubernetes.kubeconfig in the configuration, or KUBECONFIG',
    );
  let ca: string;
  try {
    ca = readFileSync(path.join(saDir, 'ca.crt'), 'utf8');
  } catch (err) {
    throw new KubeConfigError(
      'NOT_IN_CLUSTER',
      `cannot read the service account's CA (${path.join(saDir, 'ca.crt')}): is automountServiceAccountToken off?`,
      { cause: err },
    );
  }
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    ca,
    insecure: false,
    servername: undefined,
    token: undefined,
    tokenFile: path.join(saDir, 'token'),
    cert: undefined,
    key: undefined,
    apply: undefined,
    source: 'in-cluster service account',
  };
}

// biome-ignore lint/suspicious/noExplicitAny: kubeconfig is free-form YAML.
type Any = any;

const dataOrFile = (data: unknown, file: unknown, base: string): string | undefined => {
  if (typeof data === 'string' && data) return Buffer.from(data, 'base64').toString('utf8');
  if (typeof file === 'string' && file) return readFileSync(path.resolve(base, file), 'utf8');
  return undefined;
};

/** A kubeconfig file (its current context). */
export async function kubeconfigConnection(file: string): Promise<KubeConnection> {
  let doc: Any;
  try {
    doc = parseYaml(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new KubeConfigError(
      'KUBECONFIG_INVALID',
      `${file}: cannot read it as YAML: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  const bad = (why: string) => new KubeConfigError('KUBECONFIG_INVALID', `${file}: ${why}`);
  const ctxName = doc?.['current-context'];
  const ctx = (doc?.contexts ?? []).find((c: Any) => c?.name === ctxName)?.context;
  if (!ctx) throw bad(`current-context ${JSON.stringify(ctxName)} is not among its contexts`);
  const cluster = (doc.clusters ?? []).find((c: Any) => c?.name === ctx.cluster)?.cluster;
  if (!cluster?.server) throw bad(`cluster ${JSON.stringify(ctx.cluster)} has no server`);
  const user = (doc.users ?? []).find((u: Any) => u?.name === ctx.user)?.user ?? {};
  const base = path.dirname(file);
  const conn: KubeConnection = {
    server: String(cluster.server).replace(/\/+$/, ''),
    ca: dataOrFile(cluster['certificate-authority-data'], cluster['certificate-authority'], base),
    insecure: cluster['insecure-skip-tls-verify'] === true,
    servername: cluster['tls-server-name'] || undefined,
    token: typeof user.token === 'string' ? user.token : undefined,
    tokenFile: typeof user.tokenFile === 'string' ? path.resolve(base, user.tokenFile) : undefined,
    cert: dataOrFile(user['client-certificate-data'], user['client-certificate'], base),
    key: dataOrFile(user['client-key-data'], user['client-key'], base),
    apply: undefined,
    source: file,
  };
  if (user.exec || user['auth-provider']) {
    // Exec plugins and auth providers: the client library knows them all.
    const { KubeConfig } = await import('@kubernetes/client-node');
    const kc = new KubeConfig();
    kc.loadFromFile(file);
    conn.apply = (options) => kc.applyToHTTPSOptions(options as never);
  }
  return conn;
}

/** The configuration's kubeconfig, else in-cluster, else $KUBECONFIG or ~/.kube/config. */
export async function resolveConnection(file: string | undefined): Promise<KubeConnection> {
  if (file) return kubeconfigConnection(file);
  if (process.env.KUBERNETES_SERVICE_HOST) return inClusterConnection();
  return kubeconfigConnection(
    process.env.KUBECONFIG?.split(':')[0] || path.join(homedir(), '.kube', 'config'),
  );
}
