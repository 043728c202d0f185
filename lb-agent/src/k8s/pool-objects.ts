// Address pools as Kubernetes objects (PortlbAddressPool, cluster-scoped): each one's
// name and spec through the configuration file's pool schema and checks (a block
// malformed, an overlap, a name taken); config-objects.ts applies the common rules.
import { checkPool, type Pool, parsePoolFields } from '../config/agent-config.ts';
import {
  type ConfigKind,
  type LastValid,
  type LeanConfigObject,
  type ObjectRules,
  type Resolution,
  resolveObjects,
} from './config-objects.ts';

export const ADDRESS_POOLS: ConfigKind = {
  kind: 'PortlbAddressPool',
  plural: 'portlbaddresspools',
  option: 'kubernetes.poolObjects',
};

export const poolRules: ObjectRules<Pool> = {
  check(o, before) {
    const fields = parsePoolFields({ ...o.spec, name: o.name }, `PortlbAddressPool ${o.name}`);
    const checked = checkPool(fields, before, ['spec']);
    return { value: checked.pool, invalid: checked.problems, conflicts: checked.conflicts };
  },
  conflicts: (pool, before) =>
    checkPool({ ...pool, addresses: pool.blocks.map((b) => b.text) }, before, []).conflicts,
  describe: (pool) => pool.blocks.map((b) => b.text).join(', '),
};

/** The pools in force: the file's, then the objects' (tests call this; the controller goes through ConfigObjects). */
export function resolvePools(
  filePools: readonly Pool[],
  objects: readonly LeanConfigObject[],
  lastValid: LastValid<Pool>,
): Resolution<Pool> {
  return resolveObjects(filePools, objects, lastValid, poolRules);
}
