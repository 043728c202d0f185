// Runs portlb's pod as a kubelet would, with the real images and the manifests the Helm
// chart renders: podman `kube play` of the DaemonSet's pod template, inside a network
// namespace (the pod's "host" network), with a CRI runtime's capability semantics
// (cri-runtime.sh), the downward API and the service account resolved as the kubelet
// resolves them, and the probes run by this harness.
//
// Host side (before the kernel boots): exportImagesForGuest() puts the built images where
// the guest's podman finds them. Guest side: guestPodman(), renderChart(), podSpec(),
// playPod(), processSecurity().
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { CONTAINERS_CONF, IMAGES } from '../../images/podman.ts';
import { helmTemplate } from '../../scripts/render-manifests.ts';
import type { Obj } from './fake-kube-api.ts';

const repo = path.resolve(import.meta.dirname, '..', '..');
const CRI_RUNTIME = path.join(repo, 'test', 'harness', 'cri-runtime.sh');
/** Shared between the host (writes) and the guest (reads), outside the guest's tmpfs mounts. */
export const POD_CACHE = path.join(
  process.env.PORTLB_CACHE ?? path.join(homedir(), '.cache', 'portlb'),
  'pod',
);
const STORE = path.join(POD_CACHE, 'store');
const SPEAKER_ARCHIVE = path.join(POD_CACHE, 'bgp-speaker.tar');

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): string {
  const res = spawnSync(cmd, args, { encoding: 'utf8', env: env ?? process.env, maxBuffer: 64 << 20 });
  if (res.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${res.stderr || res.stdout}`);
  return res.stdout;
}

/** Unmounts everything mounted below a directory (before removing it). */
export function unmountUnder(dir: string): void {
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const mountPoint = line.split(' ')[1];
    if (mountPoint?.startsWith(`${dir}/`)) run('umount', ['-l', mountPoint]);
  }
}

/**
 * Host side. The agent image goes into an image store the guest mounts read-only over
 * hostfs (loading 180 MB inside the guest would take minutes); the speaker image is
 * loaded by the guest from an archive, because hostfs carries no extended attributes
 * and gobgpd's file capability is one.
 */
export function exportImagesForGuest(): void {
  const env = { ...process.env, CONTAINERS_CONF };
  // The overlay driver keeps its directory bind-mounted onto itself.
  unmountUnder(POD_CACHE);
  rmSync(POD_CACHE, { recursive: true, force: true });
  mkdirSync(POD_CACHE, { recursive: true });
  run(
    'podman',
    [
      'push',
      '-q',
      IMAGES.agent,
      `containers-storage:[overlay@${STORE}+${path.join(POD_CACHE, 'run')}]${IMAGES.agent}`,
    ],
    env,
  );
  run('podman', ['save', '-q', '--format', 'docker-archive', '-o', SPEAKER_ARCHIVE, IMAGES.speaker], env);
}

export interface GuestPodman {
  env: NodeJS.ProcessEnv;
  podman(args: string[], netns?: string): string;
}

/** Guest side: cgroups, podman's storage (the host's store read-only, a tmpfs of its own), the speaker image. */
export function guestPodman(workDir: string): GuestPodman {
  if (!existsSync(STORE) || !existsSync(SPEAKER_ARCHIVE)) {
    throw new Error(
      `the images were not exported for the guest (${POD_CACHE}): run the pod phase through npm test`,
    );
  }
  // cgroup v1, as on these hosts: under v2, runc's device filter (a BPF program) refuses
  // /dev/null inside this kernel's containers.
  if (!existsSync('/sys/fs/cgroup/devices/cgroup.procs')) {
    mkdirSync('/sys/fs/cgroup', { recursive: true });
    run('mount', ['-t', 'tmpfs', 'cgroup', '/sys/fs/cgroup']);
    for (const controllers of ['cpu,cpuacct', 'memory', 'devices', 'pids', 'blkio', 'freezer', 'net_cls']) {
      mkdirSync(`/sys/fs/cgroup/${controllers}`);
      run('mount', ['-t', 'cgroup', '-o', controllers, 'cgroup', `/sys/fs/cgroup/${controllers}`]);
    }
  }
  const storageConf = path.join(workDir, 'storage.conf');
  writeFileSync(
    storageConf,
    [
      '[storage]',
      'driver = "overlay"',
      'runroot = "/run/containers/storage"',
      'graphroot = "/var/lib/containers/storage"',
      '[storage.options]',
      `additionalimagestores = ["${STORE}"]`,
      '',
    ].join('\n'),
  );
  const env = { ...process.env, CONTAINERS_CONF, CONTAINERS_STORAGE_CONF: storageConf };
  const podman = (args: string[], netns?: string) =>
    netns
      ? run('nsenter', [`--net=/run/netns/${netns}`, 'podman', '--runtime', CRI_RUNTIME, ...args], env)
      : run('podman', ['--runtime', CRI_RUNTIME, ...args], env);
  podman(['load', '-q', '-i', SPEAKER_ARCHIVE]);
  for (const ref of Object.values(IMAGES)) podman(['image', 'exists', ref]);
  return { env, podman };
}

/** `helm template` of the chart with these values; every object, parsed. */
export function renderChart(values: Obj, namespace: string, workDir: string): Obj[] {
  const file = path.join(workDir, 'values.yaml');
  writeFileSync(file, stringify(values));
  return helmTemplate(['-f', file], namespace);
}

export interface KubeletContext {
  podName: string;
  namespace: string;
  nodeName: string;
  hostIP: string;
  /** The API server as in-cluster clients find it. */
  apiServer: { host: string; port: number; ca: string };
  workDir: string;
}

export interface PodPlan {
  /** What podman plays: the pod and the ConfigMaps its volumes name. */
  pod: Obj;
  configMaps: Obj[];
  /** The probes, kept for the harness to run (podman does not run them as a kubelet does). */
  readiness: Map<string, { path: string; port: number }>;
}

function fieldRef(path: string, c: KubeletContext): string {
  switch (path) {
    case 'spec.nodeName':
      return c.nodeName;
    case 'status.hostIP':
    case 'status.podIP':
      return c.hostIP;
    case 'metadata.name':
      return c.podName;
    case 'metadata.namespace':
      return c.namespace;
    default:
      throw new Error(`downward API field ${path} is not emulated by this harness`);
  }
}

/**
 * The DaemonSet's pod template as the kubelet would run it on this node: the downward
 * API resolved, the service account token mounted (automount), the API server's address
 * in the environment. Everything else (images, securityContext, volumes, args) is taken
 * exactly as rendered.
 */
export function podSpec(objects: Obj[], c: KubeletContext): PodPlan {
  const ds = objects.find((o) => o.kind === 'DaemonSet');
  if (!ds) throw new Error('the rendered chart has no DaemonSet');
  const template = structuredClone(ds.spec.template) as Obj;
  const spec = template.spec as Obj;
  const sa = path.join(c.workDir, 'serviceaccount');
  mkdirSync(sa, { recursive: true });
  writeFileSync(path.join(sa, 'token'), 'fake-token');
  writeFileSync(path.join(sa, 'ca.crt'), c.apiServer.ca);
  writeFileSync(path.join(sa, 'namespace'), c.namespace);
  // emptyDir as the kubelet makes it: a directory with mode 0777 (a tmpfs for medium
  // Memory). podman's own emptyDir keeps the mode of the image's directory.
  for (const v of (spec.volumes ?? []) as Obj[]) {
    if (!v.emptyDir) continue;
    const dir = path.join(c.workDir, 'volumes', v.name);
    mkdirSync(dir, { recursive: true });
    if (v.emptyDir.medium === 'Memory') run('mount', ['-t', 'tmpfs', '-o', 'mode=0777', 'tmpfs', dir]);
    chmodSync(dir, 0o777);
    delete v.emptyDir;
    v.hostPath = { path: dir, type: 'Directory' };
  }
  spec.volumes = [
    ...(spec.volumes ?? []),
    { name: 'kube-api-access', hostPath: { path: sa, type: 'Directory' } },
  ];
  const readiness = new Map<string, { path: string; port: number }>();
  for (const ctr of spec.containers as Obj[]) {
    ctr.env = (ctr.env ?? []).map((e: Obj) =>
      e.valueFrom?.fieldRef ? { name: e.name, value: fieldRef(e.valueFrom.fieldRef.fieldPath, c) } : e,
    );
    ctr.env.push(
      { name: 'KUBERNETES_SERVICE_HOST', value: c.apiServer.host },
      { name: 'KUBERNETES_SERVICE_PORT', value: String(c.apiServer.port) },
    );
    ctr.volumeMounts = [
      ...(ctr.volumeMounts ?? []),
      { name: 'kube-api-access', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true },
    ];
    if (ctr.readinessProbe?.httpGet)
      readiness.set(ctr.name, {
        path: ctr.readinessProbe.httpGet.path,
        port: Number(ctr.readinessProbe.httpGet.port),
      });
    // The kubelet runs probes and lifecycle hooks; podman would turn them into its own
    // health checks (which need systemd) and knows no sleep action.
    delete ctr.readinessProbe;
    delete ctr.livenessProbe;
    delete ctr.lifecycle;
    // With hostNetwork, container ports only document what listens on the node; podman
    // would try to map them.
    if (spec.hostNetwork) delete ctr.ports;
  }
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: c.podName, namespace: c.namespace, labels: template.metadata?.labels ?? {} },
    spec: { ...spec, restartPolicy: 'Always' },
  };
  const wanted = new Set((spec.volumes as Obj[]).filter((v) => v.configMap).map((v) => v.configMap.name));
  const configMaps = objects.filter((o) => o.kind === 'ConfigMap' && wanted.has(o.metadata.name));
  return { pod, configMaps, readiness };
}

export interface PlayedPod {
  name: string;
  startedAt: number;
  /** Container name -> its process id as the guest sees it. */
  pids(): Record<string, number>;
  logs(container: string): string;
  down(): void;
}

/** `podman kube play` in the network namespace `netns` (the pod's host network). */
export function playPod(p: GuestPodman, plan: PodPlan, netns: string, workDir: string): PlayedPod {
  const podFile = path.join(workDir, 'pod.yaml');
  writeFileSync(podFile, stringify(plan.pod));
  const args = ['kube', 'play'];
  for (const [i, cm] of plan.configMaps.entries()) {
    const f = path.join(workDir, `configmap-${i}.yaml`);
    writeFileSync(f, stringify(cm));
    args.push('--configmap', f);
  }
  const startedAt = Date.now();
  p.podman([...args, podFile], netns);
  const name = plan.pod.metadata.name as string;
  const containers = (plan.pod.spec.containers as Obj[]).map((c) => c.name as string);
  return {
    name,
    startedAt,
    pids: () =>
      Object.fromEntries(
        containers.map((c) => [
          c,
          Number(p.podman(['inspect', '--format', '{{.State.Pid}}', `${name}-${c}`]).trim()),
        ]),
      ),
    logs: (c) => {
      const res = spawnSync('podman', ['logs', `${name}-${c}`], { encoding: 'utf8', env: p.env });
      return `${res.stdout}${res.stderr}`;
    },
    down: () => {
      try {
        p.podman(['kube', 'down', podFile]);
      } catch {
        // already gone
      }
    },
  };
}

export interface ProcessSecurity {
  uid: number;
  gid: number;
  groups: number[];
  capEff: bigint;
  capPrm: bigint;
  capBnd: bigint;
  capAmb: bigint;
  capInh: bigint;
  noNewPrivs: boolean;
  /** The process's root filesystem is mounted read-only. */
  rootReadOnly: boolean;
}

/** What the kernel says about a process: /proc/PID/status and its root mount. */
export function processSecurity(pid: number): ProcessSecurity {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status);
    if (!m) throw new Error(`/proc/${pid}/status has no ${name}`);
    return m[1]!.trim();
  };
  const root = readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .find((f) => f[4] === '/');
  return {
    uid: Number(field('Uid').split(/\s+/)[0]),
    gid: Number(field('Gid').split(/\s+/)[0]),
    groups: field('Groups').split(/\s+/).filter(Boolean).map(Number),
    capEff: BigInt(`0x${field('CapEff')}`),
    capPrm: BigInt(`0x${field('CapPrm')}`),
    capBnd: BigInt(`0x${field('CapBnd')}`),
    capAmb: BigInt(`0x${field('CapAmb')}`),
    capInh: BigInt(`0x${field('CapInh')}`),
    noNewPrivs: field('NoNewPrivs') === '1',
    rootReadOnly: (root?.[5] ?? '').split(',').includes('ro'),
  };
}

/** Capability names (as in a securityContext) to their bit mask. */
export function capMask(names: readonly string[]): bigint {
  const bits: Record<string, number> = {
    CHOWN: 0,
    DAC_OVERRIDE: 1,
    DAC_READ_SEARCH: 2,
    FOWNER: 3,
    FSETID: 4,
    KILL: 5,
    SETGID: 6,
    SETUID: 7,
    SETPCAP: 8,
    NET_BIND_SERVICE: 10,
    NET_BROADCAST: 11,
    NET_ADMIN: 12,
    NET_RAW: 13,
    IPC_LOCK: 14,
    SYS_MODULE: 16,
    SYS_RAWIO: 17,
    SYS_CHROOT: 18,
    SYS_PTRACE: 19,
    SYS_ADMIN: 21,
    SYS_BOOT: 22,
    SYS_NICE: 23,
    SYS_RESOURCE: 24,
    MKNOD: 27,
    AUDIT_WRITE: 29,
    SETFCAP: 31,
  };
  let mask = 0n;
  for (const n of names) {
    const bit = bits[n.replace(/^CAP_/, '')];
    if (bit === undefined) throw new Error(`unknown capability ${n}`);
    mask |= 1n << BigInt(bit);
  }
  return mask;
}

/** The guest's loaded modules (to prove ip_vs was not loaded before the pod started). */
export function loadedModules(): Set<string> {
  return new Set(
    readFileSync('/proc/modules', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[0]!)
      .filter(Boolean),
  );
}

if (import.meta.main) {
  if (process.argv[2] !== 'export-images') {
    console.error('Usage: node test/harness/pod.ts export-images   (host side, after npm run images)');
    process.exit(2);
  }
  exportImagesForGuest();
  console.log(`pod: images exported for the guest into ${POD_CACHE}`);
}
