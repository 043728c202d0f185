import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseBfdSessions, renderBirdConfig } from './bird-config.ts';
import { parseBirdReply } from './bird-control.ts';

test('bird config: one bfd protocol, one pair of timers, a neighbour per peer in a stable order', () => {
  const text = renderBirdConfig({
    routerId: '10.0.0.2',
    intervalMs: 100,
    multiplier: 3,
    peers: [
      { address: '10.0.0.9', multihop: true },
      { address: '10.0.0.1', localAddress: '10.0.0.2', multihop: false },
    ],
  });
  assert.match(text, /^router id 10\.0\.0\.2;$/m);
  assert.equal(text.match(/protocol bfd/g)?.length, 1);
  assert.match(text, /interface "\*" \{ interval 100 ms; multiplier 3; \};/);
  assert.match(text, /multihop \{ interval 100 ms; multiplier 3; \};/);
  assert.ok(
    text.indexOf('neighbor 10.0.0.1 local 10.0.0.2;') < text.indexOf('neighbor 10.0.0.9 multihop on;'),
  );
  assert.doesNotMatch(text, /protocol bgp|protocol kernel/, 'BFD only: no routes in or out');
});

test('bird control: replies split by code, continuations keep the code, incomplete is undefined', () => {
  const raw =
    '1020-portlb:\n IP address                Interface  State      Since         Interval  Timeout\n 10.0.0.1                  eth0       Up         12:00:01.123    0.100    0.300\n fd00::1                   eth0       Down       12:00:02.000    1.000    0.000\n0000 \n';
  assert.equal(parseBirdReply(raw.slice(0, 40)), undefined);
  const parsed = parseBirdReply(`${raw}0001 next`);
  assert.ok(parsed);
  assert.equal(parsed.reply.code, 0);
  assert.equal(parsed.rest, '0001 next');
  assert.deepEqual(parseBfdSessions(parsed.reply.lines), [
    { address: '10.0.0.1', interface: 'eth0', state: 'up', intervalSeconds: 0.1, timeoutSeconds: 0.3 },
    { address: 'fd00::1', interface: 'eth0', state: 'down', intervalSeconds: 1, timeoutSeconds: 0 },
  ]);
  const refused = parseBirdReply('0002-Reading configuration from /x\n8002 /x: No such file or directory\n');
  assert.equal(refused?.reply.code, 8002);
});
