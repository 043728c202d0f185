// Human output of the CLI: tables in the spirit of `ipvsadm -Ln`, and plan lines.
import type {
  IpvsOperation,
  RealServer,
  RealServerState,
  ServiceKey,
  ServiceState,
  VirtualService,
} from '../ipvs/types.ts';
import { destinationId } from '../ipvs/types.ts';

const FORWARD_NAMES: Record<RealServer['forward'], string> = {
  nat: 'Masq',
  tunnel: 'Tunnel',
  dr: 'Route',
  local: 'Local',
  bypass: 'Bypass',
};

export function formatServiceKey(key: ServiceKey): string {
  if (key.kind === 'fwmark') return `FWM  ${key.fwmark} ${key.family === 'ipv6' ? 'IPv6' : ''}`.trimEnd();
  const host = key.family === 'ipv6' ? `[${key.address}]` : key.address;
  return `${key.protocol.toUpperCase().padEnd(4)} ${host}:${key.port}`;
}

export function schedulerFlagNames(service: VirtualService): string[] {
  const names: string[] = [];
  for (const f of service.schedulerFlags) {
    if (service.scheduler === 'mh' || service.scheduler === 'sh') {
      names.push(`${service.scheduler}-${f === 'flag-1' ? 'fallback' : f === 'flag-2' ? 'port' : 'flag-3'}`);
    } else names.push(f);
  }
  if (service.onePacket) names.push('ops');
  if (service.persistence)
    names.push(`persistent ${service.persistence.timeout} mask /${service.persistence.prefix}`);
  return names;
}

function dest(d: RealServer): string {
  return destinationId(d);
}

const pad = (s: string | number, n: number) => String(s).padEnd(n);
const num = (s: string | number, n: number) => String(s).padStart(n);

export function formatTable(table: readonly ServiceState[], stats: boolean): string {
  const lines: string[] = [];
  if (stats) {
    lines.push(
      `${pad('Prot LocalAddress:Port', 36)}${num('Conns', 10)}${num('InPkts', 12)}${num('OutPkts', 12)}${num('InBytes', 14)}${num('OutBytes', 14)}`,
    );
    lines.push(`  -> RemoteAddress:Port`);
  } else {
    lines.push(`${pad('Prot LocalAddress:Port', 36)}Scheduler Flags`);
    lines.push(
      `  -> ${pad('RemoteAddress:Port', 32)}${pad('Forward', 8)}${num('Weight', 7)}${num('ActiveConn', 11)}${num('InActConn', 10)}`,
    );
  }
  for (const { service, destinations, stats: s } of table) {
    if (stats) {
      const st = s ?? { connections: 0, packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0 };
      lines.push(
        `${pad(formatServiceKey(service.key), 36)}${num(st.connections, 10)}${num(st.packetsIn, 12)}${num(st.packetsOut, 12)}${num(st.bytesIn, 14)}${num(st.bytesOut, 14)}`,
      );
    } else {
      lines.push(
        `${pad(formatServiceKey(service.key), 36)}${pad(service.scheduler, 10)}${schedulerFlagNames(service).join(',')}`,
      );
    }
    for (const d of destinations as RealServerState[]) {
      if (stats) {
        const st = d.stats ?? { connections: 0, packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0 };
        lines.push(
          `  -> ${pad(dest(d), 32)}${num(st.connections, 10)}${num(st.packetsIn, 12)}${num(st.packetsOut, 12)}${num(st.bytesIn, 14)}${num(st.bytesOut, 14)}`,
        );
      } else {
        lines.push(
          `  -> ${pad(dest(d), 32)}${pad(FORWARD_NAMES[d.forward], 8)}${num(d.weight, 7)}${num(d.activeConnections, 11)}${num(d.inactiveConnections, 10)}`,
        );
      }
    }
  }
  return lines.join('\n');
}

function keyText(key: ServiceKey): string {
  return formatServiceKey(key).replace(/\s+/, ' ');
}

/** One line per planned operation: "+" add, "~" change, "-" delete. */
export function describePlannedOperation(op: IpvsOperation): string {
  switch (op.op) {
    case 'add-service':
      return `+ service ${keyText(op.service.key)} scheduler ${op.service.scheduler}${flagsSuffix(op.service)}`;
    case 'update-service':
      return `~ service ${keyText(op.service.key)} scheduler ${op.service.scheduler}${flagsSuffix(op.service)}`;
    case 'delete-service':
      return `- service ${keyText(op.key)}`;
    case 'add-destination':
      return `+ backend ${keyText(op.key)} -> ${dest(op.destination)} ${op.destination.forward} weight ${op.destination.weight}`;
    case 'update-destination':
      return `~ backend ${keyText(op.key)} -> ${dest(op.destination)} ${op.destination.forward} weight ${op.destination.weight}`;
    case 'delete-destination':
      return `- backend ${keyText(op.key)} -> ${destinationId(op.destination)}`;
  }
}

function flagsSuffix(s: VirtualService): string {
  const names = schedulerFlagNames(s);
  return names.length ? ` (${names.join(', ')})` : '';
}
