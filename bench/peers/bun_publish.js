'use strict';
/*
 * Fan-out benchmark server: Bun.serve pub/sub (uWS underneath). Every connection
 * subscribes to one topic on open; each message is one server.publish(topic, msg, false).
 * Messages are strings so they go out as text frames, as market data does.
 * Usage: bun bun_publish.js <burst> <clients> [rate]   (started by bench/fanout.py;
 *        rate > 0: paced for bench/latency.py; burst 0: idle for bench/memory.py)
 * With BENCH_MIX=<file> (fanout.py --mix) a client is subscribed on open to the streams of
 * its URL /m/<i>,<j>,... (passed from the upgrade as ws.data) and each message is
 * published on its own stream (see common.js).
 * With BENCH_UPSTREAM=ws://host:port it is a relay instead: it subscribes to the topic's
 * stream upstream (bench/peers/feeder.py) and publishes each message as it arrives
 * (common.js relayUpstream) — Bun as a market-data hub, the peer of tickhub's relay.
 */
const { emit, loadMix, makeCounters, parseArgs, publishMixForever, relayUpstream, serveControl, startPublishing } = require('./common');

const TOPIC = 'btcusdt@trade';
const [burst, clientsWanted, rate] = parseArgs();
const counters = makeCounters();
const clients = new Set();
const mix = loadMix();
const subscribers = new Map();  // mix: stream name -> subscriber count (the delivered counter)

const server = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  fetch(req, srv) {
    if (mix ? srv.upgrade(req, { data: { path: new URL(req.url).pathname } }) : srv.upgrade(req)) return undefined;
    return new Response('websocket only', { status: 400 });
  },
  websocket: {
    perMessageDeflate: false,             // no compression: the same frames as every peer
    backpressureLimit: 64 * 1024 * 1024,  // far above the 256 KiB flow limit: Bun never drops
    closeOnBackpressureLimit: false,      // and never closes a client for being behind
    idleTimeout: 0,                       // no idle close and no pings inside a window
    sendPings: false,
    open(ws) {
      if (mix) {
        for (const name of mix.streamsOfPath(ws.data.path)) {
          ws.subscribe(name);
          subscribers.set(name, (subscribers.get(name) || 0) + 1);
        }
      } else {
        ws.subscribe(TOPIC);
      }
      clients.add(ws);
      counters.clients += 1;
    },
    message() {},
    close(ws) { clients.delete(ws); },
  },
});

emit({ event: 'listening', port: server.port, bun: Bun.version });
serveControl(counters);
const maxBuffered = () => {
  let max = 0;
  for (const ws of clients) {
    const n = ws.getBufferedAmount();
    if (n > max) max = n;
  }
  return max;
};
if (mix) {
  publishMixForever(burst, clientsWanted, mix, (name, msg) => {
    server.publish(name, msg, false);
    counters.delivered += subscribers.get(name) || 0;
  }, maxBuffered, counters);
} else if (!relayUpstream(TOPIC, (payload) => {
  server.publish(TOPIC, payload, false);
  counters.delivered += clients.size;
}, counters)) {
  startPublishing(burst, clientsWanted, rate, (msgs) => {
    for (let i = 0; i < msgs.length; i++) server.publish(TOPIC, msgs[i], false);
    counters.delivered += msgs.length * clients.size;
  }, maxBuffered, counters);
}
