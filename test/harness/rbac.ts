// Least privilege checked against use: what the agent asked of the fake API server
// (FakeKubeApi.verbs) against what the rendered chart's Roles and ClusterRoles grant. A
// verb used and not granted fails in a real cluster; the chart is the one users install.
import type { Obj } from './fake-kube-api.ts';

/** The requests ("group|resource|verb") no rule of `objects` grants. */
export function ungranted(used: Iterable<string>, objects: readonly Obj[]): string[] {
  const rules = objects
    .filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role')
    .flatMap((o) => o.rules ?? []);
  return [...used].filter((u) => {
    const [group, resource, verb] = u.split('|');
    return !rules.some(
      (r: Obj) =>
        (r.apiGroups ?? []).includes(group) &&
        (r.resources ?? []).includes(resource) &&
        ((r.verbs ?? []).includes(verb) || (r.verbs ?? []).includes('*')),
    );
  });
}
