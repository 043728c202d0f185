// Summarises a V8 heap snapshot (bench agent --heap-snapshot writes one of the agent
// after sync): what the heap holds by kind of object (count, own size) and the objects
// that keep the most alive (retained size, from the dominator tree, with the chain of
// objects that holds each). `node bench/heap-summary.ts FILE [--top 30]`.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    top: { type: 'string', default: '30' },
    min: { type: 'string', default: '1' },
    help: { type: 'boolean' },
  },
});
if (values.help || positionals.length !== 1) {
  console.log(
    'Usage: node bench/heap-summary.ts FILE.heapsnapshot [--top 30] [--min 1]\n' +
      '  by kind: count and own size of each constructor (strings, arrays and code by V8 kind)\n' +
      '  by retained size: the objects that keep the most memory alive (at least --min % of the heap),\n' +
      '    with what holds them',
  );
  process.exit(values.help ? 0 : 2);
}
const TOP = Number(values.top);
/** The dominator tree shows objects that keep at least this share of the heap alive, %. */
const MIN = Number(values.min);

interface Snapshot {
  snapshot: {
    meta: {
      node_fields: string[];
      node_types: [string[], ...unknown[]];
      edge_fields: string[];
      edge_types: [string[], ...unknown[]];
    };
    node_count: number;
  };
  nodes: number[];
  edges: number[];
  strings: string[];
}

console.error(`reading ${positionals[0]}`);
const snap = JSON.parse(readFileSync(positionals[0]!, 'utf8')) as Snapshot;
const meta = snap.snapshot.meta;
const NF = meta.node_fields.length;
const EF = meta.edge_fields.length;
const nType = meta.node_fields.indexOf('type');
const nName = meta.node_fields.indexOf('name');
const nSelf = meta.node_fields.indexOf('self_size');
const nEdges = meta.node_fields.indexOf('edge_count');
const eType = meta.edge_fields.indexOf('type');
const eName = meta.edge_fields.indexOf('name_or_index');
const eTo = meta.edge_fields.indexOf('to_node');
const nodeTypes = meta.node_types[0];
const edgeTypes = meta.edge_types[0];
const WEAK = edgeTypes.indexOf('weak');
const SHORTCUT = edgeTypes.indexOf('shortcut');
const nodes = snap.nodes;
const edges = snap.edges;
const N = nodes.length / NF;

/** What a node is, in words: a constructor's name, or V8's kind for strings, arrays, code. */
function label(i: number): string {
  const type = nodeTypes[nodes[i * NF + nType]!]!;
  const name = snap.strings[nodes[i * NF + nName]!]!;
  if (type === 'closure') return `${name}()`;
  // A plain object is named by its first properties: {namespace,name,id,...} says more than Object.
  if (type === 'object' && name === 'Object') return `{${properties(i).slice(0, 4).join(',')}}`;
  if (type === 'object' || type === 'native') return name;
  if (type === 'string' || type === 'concatenated string' || type === 'sliced string') return `(${type})`;
  return `(${type}) ${name.length > 40 ? `${name.slice(0, 40)}...` : name}`;
}

function properties(i: number): string[] {
  const out: string[] = [];
  for (let e = firstEdge[i]!; e < firstEdge[i + 1]! && out.length < 5; e += EF)
    if (edgeTypes[edges[e + eType]!] === 'property') {
      const n = snap.strings[edges[e + eName]!]!;
      if (n !== '__proto__') out.push(n);
    }
  return out;
}

// Edges as ranges per node.
const firstEdge = new Uint32Array(N + 1);
for (let i = 0, e = 0; i < N; i++) {
  firstEdge[i] = e;
  e += nodes[i * NF + nEdges]! * EF;
  firstEdge[i + 1] = e;
}
const followed = (e: number) => {
  const t = edges[e + eType];
  return t !== WEAK && t !== SHORTCUT;
};

// Dominators (Cooper, Harvey and Kennedy's iterative algorithm) over a post-order from
// the root (node 0), following strong edges only, as DevTools does.
const post = new Int32Array(N).fill(-1); // node -> post-order number
const order: number[] = []; // post-order number -> node
{
  const visited = new Uint8Array(N);
  const stack: number[] = [0];
  const edgeAt: number[] = [firstEdge[0]!];
  visited[0] = 1;
  while (stack.length) {
    const top = stack.length - 1;
    const node = stack[top]!;
    let e = edgeAt[top]!;
    let pushed = false;
    for (; e < firstEdge[node + 1]!; e += EF) {
      if (!followed(e)) continue;
      const to = edges[e + eTo]! / NF;
      if (visited[to]) continue;
      visited[to] = 1;
      edgeAt[top] = e + EF;
      stack.push(to);
      edgeAt.push(firstEdge[to]!);
      pushed = true;
      break;
    }
    if (!pushed) {
      stack.pop();
      edgeAt.pop();
      post[node] = order.length;
      order.push(node);
    }
  }
}
const R = order.length;
// Predecessors by post-order number.
const predCount = new Uint32Array(R + 1);
for (let i = 0; i < N; i++) {
  if (post[i]! < 0) continue;
  for (let e = firstEdge[i]!; e < firstEdge[i + 1]!; e += EF)
    if (followed(e) && post[edges[e + eTo]! / NF]! >= 0) predCount[post[edges[e + eTo]! / NF]!]!++;
}
const predStart = new Uint32Array(R + 1);
for (let p = 0; p < R; p++) predStart[p + 1] = predStart[p]! + predCount[p]!;
const preds = new Uint32Array(predStart[R]!);
const fill = predStart.slice(0, R);
for (let i = 0; i < N; i++) {
  if (post[i]! < 0) continue;
  for (let e = firstEdge[i]!; e < firstEdge[i + 1]!; e += EF) {
    const to = post[edges[e + eTo]! / NF]!;
    if (followed(e) && to >= 0) preds[fill[to]!++] = post[i]!;
  }
}
const root = R - 1;
const idom = new Int32Array(R).fill(-1);
idom[root] = root;
for (let changed = true; changed; ) {
  changed = false;
  for (let p = root - 1; p >= 0; p--) {
    let d = -1;
    for (let k = predStart[p]!; k < predStart[p + 1]!; k++) {
      let q = preds[k]!;
      if (idom[q]! < 0) continue;
      if (d < 0) {
        d = q;
        continue;
      }
      while (q !== d) {
        while (q < d) q = idom[q]!;
        while (d < q) d = idom[d]!;
      }
    }
    if (d >= 0 && idom[p] !== d) {
      idom[p] = d;
      changed = true;
    }
  }
}
// Retained size: own size plus what each object dominates (post-order: children first).
const retained = new Float64Array(R);
for (let p = 0; p < R; p++) retained[p] = nodes[order[p]! * NF + nSelf]!;
for (let p = 0; p < root; p++) {
  const d = idom[p]!;
  if (d >= 0 && d !== p) retained[d] = retained[d]! + retained[p]!;
}

const MB = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MB`;
let total = 0;
const byLabel = new Map<string, { count: number; self: number }>();
for (let p = 0; p < R; p++) {
  const i = order[p]!;
  const self = nodes[i * NF + nSelf]!;
  total += self;
  const k = label(i);
  const g = byLabel.get(k) ?? { count: 0, self: 0 };
  g.count++;
  g.self += self;
  byLabel.set(k, g);
}
console.log(`${positionals[0]}: ${R.toLocaleString()} reachable objects, ${MB(total)}`);
console.log(`\nBy kind, own size (top ${TOP}):`);
for (const [k, g] of [...byLabel].sort((a, b) => b[1].self - a[1].self).slice(0, TOP))
  console.log(
    `  ${MB(g.self).padStart(10)} ${((100 * g.self) / total).toFixed(1).padStart(5)}%  ${g.count.toLocaleString().padStart(10)}  ${k}`,
  );

// The dominator tree from the root, each object with what it keeps alive, down to
// objects that hold less than 1% of the heap: where the memory is, and what holds it.
const children = new Map<number, number[]>();
// Below the threshold, a holder's many small children (10,000 services' entries) by kind.
const small = new Map<number, Map<string, { count: number; retained: number }>>();
for (let p = 0; p < root; p++) {
  const d = idom[p]!;
  if (d < 0) continue;
  if (retained[p]! < (total * MIN) / 100) {
    const kinds = small.get(d) ?? new Map<string, { count: number; retained: number }>();
    const k = label(order[p]!);
    const g = kinds.get(k) ?? { count: 0, retained: 0 };
    g.count++;
    g.retained += retained[p]!;
    kinds.set(k, g);
    small.set(d, kinds);
    continue;
  }
  const list = children.get(d) ?? [];
  list.push(p);
  children.set(d, list);
}
/** The name of the reference from holder to p, when the holder refers to it directly. */
function edgeName(holder: number, p: number): string {
  const from = order[holder]!;
  const to = order[p]! * NF;
  for (let e = firstEdge[from]!; e < firstEdge[from + 1]!; e += EF) {
    if (edges[e + eTo] !== to) continue;
    const t = edgeTypes[edges[e + eType]!];
    const n = edges[e + eName]!;
    return t === 'element' || t === 'hidden' ? `[${n}]` : `.${snap.strings[n]}`;
  }
  return '';
}
console.log(`\nBy retained size (the dominator tree, objects that keep >= ${MIN}% of the heap alive):`);
function print(p: number, depth: number): void {
  for (const c of (children.get(p) ?? []).sort((a, b) => retained[b]! - retained[a]!)) {
    console.log(
      `  ${MB(retained[c]!).padStart(10)} ${((100 * retained[c]!) / total).toFixed(1).padStart(5)}%  ${'  '.repeat(depth)}${edgeName(p, c)} ${label(order[c]!)}`,
    );
    if (depth < 12) print(c, depth + 1);
  }
  if (p === root) return;
  for (const [k, g] of [...(small.get(p) ?? [])].sort((a, b) => b[1].retained - a[1].retained)) {
    if (g.retained < (total * MIN) / 100) break;
    console.log(
      `  ${MB(g.retained).padStart(10)} ${((100 * g.retained) / total).toFixed(1).padStart(5)}%  ${'  '.repeat(depth)}(${g.count.toLocaleString()} smaller) ${k}`,
    );
  }
}
print(root, 0);

// What no single object holds (several paths reach it, e.g. strings shared by the caches):
// the root's direct children by kind, with what each keeps.
const shared = new Map<string, { count: number; retained: number }>();
for (let p = 0; p < root; p++) {
  if (idom[p] !== root) continue;
  const k = label(order[p]!);
  const g = shared.get(k) ?? { count: 0, retained: 0 };
  g.count++;
  g.retained += retained[p]!;
  shared.set(k, g);
}
console.log(`\nHeld by several objects at once (no single holder), by kind (top ${TOP}):`);
for (const [k, g] of [...shared].sort((a, b) => b[1].retained - a[1].retained).slice(0, TOP))
  console.log(
    `  ${MB(g.retained).padStart(10)} ${((100 * g.retained) / total).toFixed(1).padStart(5)}%  ${g.count.toLocaleString().padStart(10)}  ${k}`,
  );
