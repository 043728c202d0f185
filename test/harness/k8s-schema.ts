// Validation of rendered objects against the Kubernetes OpenAPI schemas, as shipped by
// the npm package kubernetes-models (schemas of Kubernetes 1.33 in 4.5.1, of 1.36 in
// 5.1.0) and, for the Prometheus Operator's objects, @kubernetes-models/prometheus-operator.
// No schema is written by hand here.
import type { Obj } from './fake-kube-api.ts';

/** The Kubernetes versions whose schemas every rendered object is checked against. */
export const SCHEMA_VERSIONS = {
  '1.33': 'kubernetes-models-1-33',
  '1.36': 'kubernetes-models',
} as const;
export type SchemaVersion = keyof typeof SCHEMA_VERSIONS;

interface Model {
  validate(): void;
}
type ModelClass = new (data: Obj) => Model;

async function modelFor(obj: Obj, version: SchemaVersion): Promise<ModelClass> {
  const [group, ver] = String(obj.apiVersion).includes('/')
    ? String(obj.apiVersion).split('/')
    : ['', String(obj.apiVersion)];
  const kind = String(obj.kind);
  const pkg =
    group === 'monitoring.coreos.com' ? '@kubernetes-models/prometheus-operator' : SCHEMA_VERSIONS[version];
  const dir = group === '' ? ver : group === 'apps' ? `apps/${ver}` : `${group}/${ver}`;
  const mod = (await import(`${pkg}/${dir}/${kind}`)) as Record<string, ModelClass>;
  const model = mod[kind];
  if (!model) throw new Error(`${pkg} has no model for ${obj.apiVersion} ${kind}`);
  return model;
}

/** The schema errors of one object (empty when valid). */
export async function schemaErrors(obj: Obj, version: SchemaVersion): Promise<string[]> {
  const where = `${obj.kind} ${obj.metadata?.namespace ? `${obj.metadata.namespace}/` : ''}${obj.metadata?.name} (Kubernetes ${version} schema)`;
  let Model: ModelClass;
  try {
    Model = await modelFor(obj, version);
  } catch (err) {
    return [`${where}: no schema: ${(err as Error).message}`];
  }
  try {
    new Model(obj).validate();
    return [];
  } catch (err) {
    return [`${where}: ${(err as Error).message}`];
  }
}
