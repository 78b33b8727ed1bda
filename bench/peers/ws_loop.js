'use strict';
/*
 * Fan-out benchmark server: Node `ws` with the canonical broadcast loop (one
 * client.send() per client per message; ws has no pub/sub). The one tweak everyone
 * applies is kept: each message is turned into a Buffer once, not once per client, and
 * sent with {binary: false} so it still goes out as a text frame.
 * Usage: node ws_loop.js <burst> <clients>   (started by bench/fanout.py)
 */
const { WebSocketServer, WebSocket } = require('ws');
const { emit, makeCounters, parseArgs, publishForever, serveControl } = require('./common');

const [burst, clientsWanted] = parseArgs();
const counters = makeCounters();
const clients = new Set();

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  perMessageDeflate: false,  // no compression: the same frames as every peer
  clientTracking: false,     // we keep our own set (the same thing, without ws's bookkeeping)
});

wss.on('connection', (ws) => {
  clients.add(ws);
  counters.clients += 1;
  ws.on('close', () => clients.delete(ws));
  ws.on('error', () => clients.delete(ws));
});

wss.on('listening', () => {
  emit({ event: 'listening', port: wss.address().port, ws: require('ws/package.json').version });
  serveControl(counters);
  const opts = { binary: false };
  publishForever(burst, clientsWanted, (msgs) => {
    for (let i = 0; i < msgs.length; i++) {
      const buf = Buffer.from(msgs[i]);
      for (const ws of clients) {
        if (ws.readyState === WebSocket.OPEN) ws.send(buf, opts);
      }
    }
    counters.delivered += msgs.length * clients.size;
  }, () => {
    let max = 0;
    for (const ws of clients) if (ws.bufferedAmount > max) max = ws.bufferedAmount;
    return max;
  }, counters);
});
