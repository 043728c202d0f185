// A lab backend: an HTTP server that answers with its name and the source address it
// saw (the LB's address in NAT mode, the client's with tunnel forwarding).
//   node test/harness/backend-server.ts NAME PORT [PORT...]
import { createServer } from 'node:http';

const [name, ...ports] = process.argv.slice(2);
if (!name || !ports.length) {
  console.error('usage: backend-server.ts NAME PORT [PORT...]');
  process.exit(2);
}
for (const port of ports) {
  const server = createServer((req, res) => {
    const source = (req.socket.remoteAddress ?? '?').replace(/^::ffff:/, '');
    const body = `${name} ${source}\n`;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  server.keepAliveTimeout = 120_000;
  server.listen(Number(port), '::', () => console.log(`${name} listening on ${port}`));
}
process.on('SIGTERM', () => process.exit(0));
