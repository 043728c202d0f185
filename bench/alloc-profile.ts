// Loaded into the agent with --import by `bench agent --alloc-profile`: the first SIGWINCH
// starts V8's sampling heap profiler, counting every allocation (also what the collector
// has freed since: a pass's garbage is what the scavenges pay for); the second stops it
// and writes the profile (Chrome's .heapprofile) to PORTLB_ALLOC_PROFILE_FILE.
import { renameSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';

const file = process.env.PORTLB_ALLOC_PROFILE_FILE;
if (!file) throw new Error('alloc-profile: PORTLB_ALLOC_PROFILE_FILE is not set');
const session = new Session();
session.connect();
let running = false;
process.on('SIGWINCH', async () => {
  if (!running) {
    running = true;
    await session.post('HeapProfiler.enable');
    await session.post('HeapProfiler.startSampling', {
      samplingInterval: 32_768,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
    return;
  }
  running = false;
  const { profile } = await session.post('HeapProfiler.stopSampling');
  // Whole or not at all: the benchmark waits for the file.
  writeFileSync(`${file}.part`, JSON.stringify(profile));
  renameSync(`${file}.part`, file);
});
