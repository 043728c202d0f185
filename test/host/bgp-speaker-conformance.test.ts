// The BgpSpeaker conformance suite against a real gobgpd (no router needed: no listener,
// peers that never answer). The fake runs the same suite in the unit phase.
import { GobgpSpeaker } from '../../lb-agent/src/bgp/gobgp-speaker.ts';
import { speakerConformance } from '../bgp/conformance.ts';
import { type Gobgpd, startGobgpd } from '../harness/bgp.ts';
import { NetnsLab, waitFor } from '../harness/netns.ts';

speakerConformance('gobgpd 3.10 through the adapter', async () => {
  const lab = new NetnsLab(`plc${process.pid % 10000}`);
  lab.addNamespace('s');
  let daemon: Gobgpd = await startGobgpd(lab, 's');
  const speaker = new GobgpSpeaker({
    target: daemon.target,
    healthIntervalMs: 300,
    reconnectInitialMs: 50,
  }).start();
  let provisions = 0;
  speaker.on('provisioned', () => provisions++);
  return {
    speaker,
    restartDaemon: async () => {
      const before = provisions;
      await lab.kill(daemon.daemon, 'SIGKILL');
      await waitFor('adapter notices', () => !speaker.connected());
      daemon = await startGobgpd(lab, 's', daemon.socket);
      await waitFor('re-provisioned', () => provisions > before);
    },
    waitConnected: () => waitFor('connected', () => speaker.connected()).then(() => {}),
    another: async () => {
      const s = new GobgpSpeaker({ target: daemon.target, healthIntervalMs: 300 }).start();
      await waitFor('second speaker connected', () => s.connected());
      return s;
    },
    close: async () => {
      await speaker.close();
      await lab.cleanup();
    },
  };
});
