'use strict';
/*
 * Fan-out benchmark server: uWebSockets.js pub/sub. Every connection subscribes to one
 * topic on open; each message is one app.publish(topic, msg, false), which uWS stores once
 * and drains once per loop iteration with each subscriber corked (one send() per client
 * per batch, at most 32 messages or one 16 KB cork buffer per send).
 * Usage: node uws_publish.js <burst> <clients> [rate]   (started by bench/fanout.py;
 *        rate > 0: paced for bench/latency.py; burst 0: idle for bench/memory.py)
 * With BENCH_MIX=<file> (fanout.py --mix) a client is subscribed on open to the streams of
 * its URL /m/<i>,<j>,... (read in an upgrade handler) and each message is published on its
 * own stream (see common.js).
 * With BENCH_UPSTREAM=ws://host:port it is a relay instead: it subscribes to the topic's
 * stream upstream (bench/peers/feeder.py) and publishes each message as it arrives
 * (common.js relayUpstream) — uWS.js as a market-data hub, the peer of tickhub's relay.
 */
const uWS = require('uwebsockets');
const { emit, loadMix, makeCounters, parseArgs, publishMixForever, relayUpstream, serveControl, startPublishing } = require('./common');

const TOPIC = 'btcusdt@trade';
const [burst, clientsWanted, rate] = parseArgs();
const counters = makeCounters();
const clients = new Set();
const mix = loadMix();
const subscribers = new Map();  // mix: stream name -> subscriber count (the delivered counter)

const behavior = {
  compression: uWS.DISABLED,          // no permessage-deflate: the same frames as every peer
  maxBackpressure: 64 * 1024 * 1024,  // far above the 256 KiB flow limit: uWS never drops
  closeOnBackpressureLimit: false,    // and never closes a client for being behind
  idleTimeout: 0,                     // no idle close and no automatic pings inside a window
  sendPingsAutomatically: false,
  open: (ws) => {
    ws.subscribe(TOPIC);
    clients.add(ws);
    counters.clients += 1;
  },
  message: () => {},
  close: (ws) => { clients.delete(ws); },
};
if (mix) {
  behavior.upgrade = (res, req, context) => {
    res.upgrade({ url: req.getUrl() }, req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context);
  };
  behavior.open = (ws) => {
    for (const name of mix.streamsOfPath(ws.getUserData().url)) {
      ws.subscribe(name);
      subscribers.set(name, (subscribers.get(name) || 0) + 1);
    }
    clients.add(ws);
    counters.clients += 1;
  };
}
const app = uWS.App().ws('/*', behavior);

const maxBuffered = () => {
  let max = 0;
  for (const ws of clients) {
    const n = ws.getBufferedAmount();
    if (n > max) max = n;
  }
  return max;
};

app.listen('127.0.0.1', 0, (token) => {
  if (!token) {
    process.stderr.write('uws_publish: listen failed\n');
    process.exit(1);
  }
  emit({ event: 'listening', port: uWS.us_socket_local_port(token), uws: 'uwebsockets@3.0.6' });
  serveControl(counters);
  if (mix) {
    publishMixForever(burst, clientsWanted, mix, (name, msg) => {
      app.publish(name, msg, false, false);
      counters.delivered += subscribers.get(name) || 0;
    }, maxBuffered, counters);
    return;
  }
  const relaying = relayUpstream(TOPIC, (payload) => {
    app.publish(TOPIC, payload, false, false);
    counters.delivered += clients.size;
  }, counters);
  if (relaying) return;
  startPublishing(burst, clientsWanted, rate, (msgs) => {
    for (let i = 0; i < msgs.length; i++) app.publish(TOPIC, msgs[i], false, false);
    counters.delivered += msgs.length * clients.size;
  }, maxBuffered, counters);
});
