// BGP peers as Kubernetes objects (PortlbBgpPeer, cluster-scoped): each one's spec
// through the configuration file's peer schema and checks; config-objects.ts applies the
// common rules. Two things stay in the file: TCP MD5 (its password comes from a Secret
// mounted into the agent) and BFD (its sessions are provisioned when the agent starts).
import { checkPeer, type PeerFields, parsePeerFields } from '../config/agent-config.ts';
import { canonicalIp } from '../net/ip.ts';
import type { ConfigKind, ObjectRules } from './config-objects.ts';

export const BGP_PEERS: ConfigKind = {
  kind: 'PortlbBgpPeer',
  plural: 'portlbbgppeers',
  option: 'kubernetes.peerObjects',
};

const sameAddress = (p: PeerFields, before: readonly PeerFields[]) =>
  before.filter((b) => canonicalIp(b.address) === canonicalIp(p.address));

export function peerRules(o: { bgp: boolean; bfdSection: boolean }): ObjectRules<PeerFields> {
  const conflicts = (p: PeerFields, before: readonly PeerFields[]) =>
    sameAddress(p, before).length ? [`spec.address: ${p.address} is already a peer`] : [];
  return {
    check(obj, before) {
      if (!o.bgp)
        return {
          value: undefined,
          invalid: ['the agent configuration has no bgp section (its asn and speaker): add it to use peers'],
          conflicts: [],
        };
      const p = parsePeerFields(obj.spec, `PortlbBgpPeer ${obj.name}`);
      const invalid = checkPeer({ ...p, passwordFile: undefined, bfd: undefined }, ['spec'], o.bfdSection);
      if (p.passwordFile !== undefined)
        invalid.push(
          'spec.passwordFile: a TCP MD5 peer goes in the agent configuration (bgp.peers, its password from a mounted Secret), not in an object',
        );
      if (p.bfd)
        invalid.push(
          "spec.bfd: BFD toward a peer from an object is not supported (BFD is provisioned at start from the configuration's bgp.peers): leave it out, or put the peer in the configuration",
        );
      return { value: { ...p, bfd: false }, invalid, conflicts: conflicts(p, before) };
    },
    conflicts,
    describe: (p) => `${p.address} AS${p.asn}`,
  };
}
