// Property: a services file or an agent configuration of any shape (random YAML values,
// and near-valid documents with one field mangled) is either accepted whole or refused
// with a ConfigError naming the field: never a crash, never half a result.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { intentsFromFile } from '../agent/sources.ts';
import { parseServicesFile } from '../ipvs/services-file.ts';
import { FUZZ_RUNS } from '../util/fuzz.ts';
import { parseAgentConfig } from './agent-config.ts';
import { ConfigError, parseYamlText } from './validate.ts';

/** Any JSON-like value a YAML document can hold. */
const anyValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.string({ maxLength: 12 }),
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.constantFrom(
      '203.0.113.10',
      '10.0.0.1',
      'fd00::1',
      '203.0.113.0/24',
      'mh',
      'tcp',
      'nat',
      '-1',
      '99999',
    ),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(
      fc.constantFrom(
        'vip',
        'port',
        'backends',
        'address',
        'pools',
        'scheduler',
        'weight',
        'ready',
        'asn',
        'peers',
        'bgp',
        'mode',
        'x',
      ),
      tie('value'),
      { maxKeys: 5 },
    ),
  ),
})).value;

/** Replaces the value at one random path of a document. */
function mangle(doc: unknown, path: number[], replacement: unknown): unknown {
  if (!path.length || doc === null || typeof doc !== 'object') return replacement;
  const keys = Object.keys(doc as object);
  if (!keys.length) return replacement;
  const k = keys[path[0]! % keys.length]!;
  const copy = (Array.isArray(doc) ? [...doc] : { ...(doc as object) }) as Record<string, unknown>;
  copy[k] = mangle(copy[k], path.slice(1), replacement);
  return copy;
}

const validFile = {
  pools: ['203.0.113.0/24'],
  services: [
    {
      name: 'web',
      vip: '203.0.113.10',
      port: 80,
      scheduler: 'mh',
      backends: [{ address: '10.0.0.1', port: 8080 }],
    },
    {
      vip: '203.0.113.11',
      port: 53,
      protocol: 'udp',
      backends: [{ address: '10.0.0.2', port: 53, weight: 2 }],
    },
  ],
};
const validConfig = {
  pools: [{ name: 'default', addresses: ['203.0.113.0/24'] }],
  bgp: { asn: 65001, peers: [{ address: '10.0.0.1', asn: 65000 }] },
  sync: { resyncSeconds: 30 },
};

function refusedOrWhole(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `not a ConfigError: ${(err as Error)?.stack ?? err}`);
    assert.ok(err.problems.length > 0 && err.problems.every((p) => typeof p === 'string' && p.length > 0));
  }
}

test('services file: any shape is accepted whole or refused with the field named', () => {
  const doc = fc.oneof(
    anyValue,
    fc.tuple(fc.array(fc.nat(), { maxLength: 5 }), anyValue).map(([p, v]) => mangle(validFile, p, v)),
  );
  fc.assert(
    fc.property(doc, (d) => {
      // Through the YAML text, as the file is read.
      refusedOrWhole(() => {
        const parsed = parseServicesFile(parseYamlText(stringify(d), 'fuzz.yaml'), 'fuzz.yaml');
        intentsFromFile(parsed, 'fuzz.yaml');
      });
    }),
    { numRuns: FUZZ_RUNS },
  );
});

test('agent configuration: any shape is accepted whole or refused with the option named', () => {
  const doc = fc.oneof(
    anyValue,
    fc.tuple(fc.array(fc.nat(), { maxLength: 5 }), anyValue).map(([p, v]) => mangle(validConfig, p, v)),
  );
  fc.assert(
    fc.property(doc, (d) => {
      refusedOrWhole(() => parseAgentConfig(parseYamlText(stringify(d), 'fuzz.yaml'), 'fuzz.yaml'));
    }),
    { numRuns: FUZZ_RUNS },
  );
});
