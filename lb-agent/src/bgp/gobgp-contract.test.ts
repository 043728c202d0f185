// Contract test: every message, field, enum value and method in protos/gobgp must exist
// with the same name, number, type and cardinality in the upstream GoBGP 3.10 protos
// (Debian's golang-github-osrg-gobgp-dev, installed by scripts/setup.sh; not committed).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import protobuf from 'protobufjs';

const UPSTREAM = '/usr/share/gocode/src/github.com/osrg/gobgp/api';
const OURS = path.resolve(import.meta.dirname, '..', '..', '..', 'protos', 'gobgp');

async function loadRoot(dir: string): Promise<protobuf.Root> {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) =>
    target.startsWith('google/protobuf/') ? target : path.join(dir, path.basename(target));
  await root.load(
    ['gobgp.proto', 'attribute.proto'].map((f) => path.join(dir, f)),
    { keepCase: true },
  );
  root.resolveAll();
  return root;
}

function walk(
  ns: protobuf.NamespaceBase,
  out: protobuf.ReflectionObject[] = [],
): protobuf.ReflectionObject[] {
  for (const child of ns.nestedArray) {
    out.push(child);
    if (child instanceof protobuf.Namespace) walk(child, out);
  }
  return out;
}

describe('GoBGP protos: ours are a faithful subset of upstream 3.10', async () => {
  if (!existsSync(path.join(UPSTREAM, 'gobgp.proto'))) {
    throw new Error(
      `upstream GoBGP protos not found under ${UPSTREAM}: install Debian's golang-github-osrg-gobgp-dev (scripts/setup.sh does)`,
    );
  }
  const upstream = await loadRoot(UPSTREAM);
  const ours = await loadRoot(OURS);
  const objects = walk(ours.lookup('apipb') as protobuf.Namespace);

  test('the subset is not empty (the loader really read our files)', () => {
    assert.ok(objects.filter((o) => o instanceof protobuf.Type).length > 30);
  });

  for (const obj of objects) {
    const name = obj.fullName;
    if (obj instanceof protobuf.Type) {
      test(`message ${name}`, () => {
        const theirs = upstream.lookupType(name);
        for (const field of obj.fieldsArray) {
          const t = theirs.fields[field.name];
          assert.ok(t, `${name}.${field.name} does not exist upstream`);
          assert.equal(field.id, t.id, `${name}.${field.name}: number`);
          assert.equal(
            field.resolvedType?.fullName ?? field.type,
            t.resolvedType?.fullName ?? t.type,
            `${name}.${field.name}: type`,
          );
          assert.equal(field.repeated, t.repeated, `${name}.${field.name}: repeated`);
          assert.equal(field.partOf?.name, t.partOf?.name, `${name}.${field.name}: oneof`);
        }
      });
    } else if (obj instanceof protobuf.Enum) {
      test(`enum ${name}`, () => {
        const theirs = upstream.lookupEnum(name);
        for (const [key, value] of Object.entries(obj.values)) {
          assert.equal(theirs.values[key], value, `${name}.${key}`);
        }
      });
    } else if (obj instanceof protobuf.Service) {
      test(`service ${name}`, () => {
        const theirs = upstream.lookupService(name);
        for (const m of obj.methodsArray) {
          const t = theirs.methods[m.name];
          assert.ok(t, `${name}.${m.name} does not exist upstream`);
          m.resolve();
          t.resolve();
          assert.equal(m.resolvedRequestType?.fullName, t.resolvedRequestType?.fullName, `${m.name} request`);
          assert.equal(
            m.resolvedResponseType?.fullName,
            t.resolvedResponseType?.fullName,
            `${m.name} response`,
          );
          assert.equal(!!m.requestStream, !!t.requestStream, `${m.name} request stream`);
          assert.equal(!!m.responseStream, !!t.responseStream, `${m.name} response stream`);
        }
      });
    }
  }
});
