import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ad, speakerConformance } from '../../../test/bgp/conformance.ts';
import { BgpError } from './errors.ts';
import { FakeBgpSpeaker } from './fake-speaker.ts';

speakerConformance('fake', async () => {
  const speaker = new FakeBgpSpeaker();
  return {
    speaker,
    restartDaemon: async () => {
      speaker.crash();
      speaker.restart();
    },
    waitConnected: async () => {},
    another: async () => new FakeBgpSpeaker(speaker),
    close: () => speaker.close(),
  };
});

test('fake: while down, calls fail with SPEAKER_UNAVAILABLE but desired state is kept for the restart', async () => {
  const s = new FakeBgpSpeaker();
  await s.setGlobal({ asn: 65001, routerId: '192.0.2.1', listenPort: -1, listenAddresses: [] });
  s.crash();
  await assert.rejects(
    s.setAdvertisements([ad('192.0.2.7/32')]),
    (e: unknown) => e instanceof BgpError && e.code === 'SPEAKER_UNAVAILABLE',
  );
  const events: string[] = [];
  s.on('provisioned', (p) => events.push(`provisioned ${p.paths} started=${p.started}`));
  s.restart();
  assert.deepEqual([...s.announced().keys()], ['192.0.2.7/32']);
  assert.deepEqual(events, ['provisioned 1 started=true']);
});
