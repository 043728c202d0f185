// The Node/V8 flags the agent's process runs with, wherever it is started: the image's
// entrypoint, the systemd unit, the lab and the agent benchmark (a test checks that the
// first two say exactly this).
//
// V8 grows its young generation to 64 MB when the agent allocates steadily (decoding
// netlink dumps, building desired state): 64 MB of RSS for short-lived garbage. At 4 MB
// semi-spaces the bench measured 1,000 Services at 210 MB RSS instead of 254 MB
// (bench/README.md), the young generation at 8 MB.
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];
