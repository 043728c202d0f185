// Summarises an allocation profile (bench agent --alloc-profile writes one of the agent's
// resync-and-scrape window): bytes allocated by function (self), and by the agent's own
// functions with everything they called (inclusive), each with its share.
//   node bench/alloc-summary.ts FILE.heapprofile [--top 25]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children: ProfileNode[];
}
interface Profile {
  head: ProfileNode;
  samples: { size: number; nodeId: number }[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '25' }, help: { type: 'boolean', default: false } },
});
if (values.help || positionals.length !== 1) {
  console.log('Usage: node bench/alloc-summary.ts FILE.heapprofile [--top 25]');
  process.exit(values.help ? 0 : 2);
}
const TOP = Number(values.top);

export function summarise(profile: Profile, top: number): string[] {
  const parent = new Map<number, ProfileNode | undefined>();
  const byId = new Map<number, ProfileNode>();
  const walk = (n: ProfileNode, up: ProfileNode | undefined) => {
    byId.set(n.id, n);
    parent.set(n.id, up);
    for (const c of n.children) walk(c, n);
  };
  walk(profile.head, undefined);
  const where = (n: ProfileNode) => {
    const f = n.callFrame;
    const file = f.url.replace(/^file:\/\//, '').replace(/^.*?\/(lb-agent|node_modules)\//, '$1/');
    return `${f.functionName || '(anonymous)'} ${file ? `${file}:${f.lineNumber + 1}` : '(native)'}`;
  };
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let total = 0;
  for (const s of profile.samples) {
    const n = byId.get(s.nodeId);
    if (!n) continue;
    total += s.size;
    self.set(where(n), (self.get(where(n)) ?? 0) + s.size);
    // Each of the agent's own functions on the stack once (recursion counted once).
    const seen = new Set<string>();
    for (let m: ProfileNode | undefined = n; m; m = parent.get(m.id)) {
      if (!m.callFrame.url.includes('/lb-agent/src/')) continue;
      const w = where(m);
      if (seen.has(w)) continue;
      seen.add(w);
      inclusive.set(w, (inclusive.get(w) ?? 0) + s.size);
    }
  }
  const mb = (b: number) =>
    `${(b / 1e6).toFixed(1).padStart(8)} MB ${((100 * b) / total).toFixed(1).padStart(5)}%`;
  const rank = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([w, b]) => `${mb(b)}  ${w}`);
  return [
    `allocated in the window: ${(total / 1e6).toFixed(1)} MB (sampled)`,
    '',
    'By function (self):',
    ...rank(self),
    '',
    "By the agent's own functions, with what they called (inclusive):",
    ...rank(inclusive),
  ];
}

console.log(summarise(JSON.parse(readFileSync(positionals[0]!, 'utf8')) as Profile, TOP).join('\n'));
