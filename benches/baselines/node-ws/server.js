// Minimal `ws` broadcast server, the Node fan-out baseline.
// Protocol: a client connected to `/pub` publishes (it receives nothing); every message it
// sends is passed as-is to every client connected to any other path (the idiomatic
// `for (c of subs) c.send(data)`; ws frames it per socket). Listens on 127.0.0.1 only.
// usage: node server.js [PORT]
'use strict';
const { WebSocketServer } = require('ws');

const port = parseInt(process.argv[2] || '9100', 10);
const subs = new Set();
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: false,
  clientTracking: false,
  backlog: 4096,
});
wss.on('connection', (ws, req) => {
  if (req.url === '/pub') {
    ws.on('message', (data, isBinary) => {
      const opts = { binary: isBinary };
      for (const c of subs) c.send(data, opts);
    });
    return;
  }
  subs.add(ws);
  ws.on('close', () => subs.delete(ws));
  ws.on('error', () => subs.delete(ws));
});
wss.on('listening', () => console.error(`node-ws listening on 127.0.0.1:${port}`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
