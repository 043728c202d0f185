// `npm run manifests`: the plain manifests (deploy/kubernetes/portlb.yaml, also the
// kustomize base) rendered from the one source, the Helm chart, with its default
// values. A test fails when the committed file differs from what this renders.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { runTool } from './k8s-tools.ts';

const repo = path.resolve(import.meta.dirname, '..');
export const CHART = path.join(repo, 'deploy', 'helm', 'portlb');
export const PLAIN = path.join(repo, 'deploy', 'kubernetes', 'portlb.yaml');
export const NAMESPACE = 'portlb-system';

// biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects are free-form here.
export type Obj = Record<string, any>;

/** `helm template` of the chart; every object, parsed. */
export function helmTemplate(args: string[] = [], namespace = NAMESPACE): Obj[] {
  const out = runTool('helm', ['template', 'portlb', CHART, '-n', namespace, ...args]);
  return parseAllDocuments(out)
    .map((d) => d.toJS() as Obj)
    .filter(Boolean);
}

/** What only Helm itself would set: its labels, and the config checksum that rolls pods on `helm upgrade`. */
export function withoutHelmOnly(objects: Obj[]): Obj[] {
  const strip = (labels: Obj | undefined) => {
    if (!labels) return;
    delete labels['helm.sh/chart'];
    delete labels['app.kubernetes.io/managed-by'];
  };
  return objects.map((o) => {
    const c = structuredClone(o);
    strip(c.metadata?.labels);
    strip(c.spec?.template?.metadata?.labels);
    const ann = c.spec?.template?.metadata?.annotations;
    if (ann) {
      delete ann['checksum/config'];
      if (!Object.keys(ann).length) delete c.spec.template.metadata.annotations;
    }
    return c;
  });
}

/** The namespace, labelled for the Pod Security level hostNetwork and NET_ADMIN need. */
export const namespaceObject = (name = NAMESPACE): Obj => ({
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: { name, labels: { 'pod-security.kubernetes.io/enforce': 'privileged' } },
});

/**
 * The chart's default rendering as text, so that its comments (why each privilege is
 * there) reach the plain manifests too; Helm-only lines are dropped, and the result
 * must parse to exactly withoutHelmOnly() of the same rendering.
 */
export function renderPlain(): string {
  const raw = runTool('helm', ['template', 'portlb', CHART, '-n', NAMESPACE]);
  const body = raw
    .split('\n')
    .filter(
      (l) =>
        !/^# Source: /.test(l) &&
        !/^\s+(helm\.sh\/chart|app\.kubernetes\.io\/managed-by): /.test(l) &&
        !/^\s+checksum\/config: /.test(l) &&
        !/^\s+# A changed configuration rolls the pods/.test(l),
    )
    .join('\n')
    .replace(/\n\s+annotations:\n(\s+spec:)/, '\n$1');
  const text = [
    '# portlb: plain manifests (also the kustomize base of deploy/overlays/).',
    '# Generated from the Helm chart deploy/helm/portlb with its default values by',
    '# `npm run manifests`: do not edit; change the chart. Install: docs/install.md.',
    `---\n${stringify(namespaceObject())}${body.replace(/^---\n/, '---\n')}`,
  ].join('\n');
  const parsed = parseAllDocuments(text)
    .map((d) => d.toJS() as Obj)
    .filter(Boolean);
  const expected = [namespaceObject(), ...withoutHelmOnly(helmTemplate())];
  if (JSON.stringify(parsed) !== JSON.stringify(expected))
    throw new Error('render-manifests: the text rendering no longer matches the chart; fix the line filter');
  return text.endsWith('\n') ? text : `${text}\n`;
}

if (import.meta.main) {
  const text = renderPlain();
  const before = (() => {
    try {
      return readFileSync(PLAIN, 'utf8');
    } catch {
      return '';
    }
  })();
  writeFileSync(PLAIN, text);
  console.log(`manifests: ${path.relative(repo, PLAIN)} ${before === text ? 'unchanged' : 'written'}`);
}
