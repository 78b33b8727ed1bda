'use strict';
/*
 * What every JavaScript fan-out peer shares with the Python ones (bench/peers/common.py):
 * the trade payload, the publishing loop, the flow-control rule and the stdin/stdout
 * control channel. Kept in one place so uWebSockets.js, Bun and Node `ws` are driven by
 * exactly the same loop.
 *
 * Loop: a turn publishes a burst of B messages, then yields to the event loop with
 * setImmediate (the counterpart of `await asyncio.sleep(0)`), so the server's own
 * per-iteration work (uWS/Bun drain their pub/sub batches once per loop iteration) runs
 * once per burst. Every FLOW_CHECK_TURNS turns the publisher reads every client's buffered
 * amount; while any is above FLOW_LIMIT it publishes nothing and retries after 1 ms, so
 * nothing is ever dropped and the client side shows up as "flow pauses".
 *
 * Control channel: first stdout line {"event":"listening","port":N}; a "snap" line on
 * stdin is answered with one JSON line of counters; EOF on stdin ends the process.
 *
 * Two more modes, chosen by the command line (`<burst> <clients> [rate]`):
 * - paced (`rate` > 0, bench/latency.py): bursts of B at `rate` messages per second against
 *   a deadline (a late timer catches up with back-to-back bursts, so the offered load stays
 *   fixed), every payload's "T" the CLOCK_MONOTONIC nanoseconds at publish time, the clock
 *   Python's time.monotonic_ns() reads, so the client measures now - T;
 * - idle (`burst` 0, bench/memory.py): accept and subscribe clients, publish nothing.
 *
 * Mix workload (BENCH_MIX=<file> in the environment, bench/fanout.py --mix), the same file
 * and rules as bench/peers/common.py: message t goes to stream sequence[t % L] with payload
 * head + t + tail; a client connecting to /m/<i>,<j>,... is subscribed to those streams;
 * "stop" on stdin ends publishing after the current turn and is answered with
 * {"event":"stopped","published":N}.
 */

const FLOW_LIMIT = 256 * 1024;   // bytes; same as benchlib.FLOW_LIMIT
const FLOW_CHECK_TURNS = 10;     // same as benchlib.FLOW_CHECK_TURNS

/** A Binance trade event (~120 bytes), byte for byte what benchlib.trade_payload(seq, sentNs) builds. */
function tradePayload(seq, sentNs = 1723456789122) {
  return '{"e":"trade","E":1723456789123,"s":"BTCUSDT","t":' + seq +
    ',"p":"61234.56000000","q":"0.00125000","T":' + sentNs + ',"m":true,"M":true}';
}

/**
 * CLOCK_MONOTONIC in nanoseconds (a BigInt). Node's process.hrtime is libuv's uv_hrtime,
 * which reads CLOCK_MONOTONIC; Bun's counts from its own start, so under Bun the clock is
 * read from libc's clock_gettime through bun:ffi (about 0.4 µs a call, once per burst).
 */
function makeMonotonicNs() {
  if (typeof Bun === 'undefined') return () => process.hrtime.bigint();
  const { dlopen, FFIType, ptr } = require('bun:ffi');
  const libc = dlopen('libc.so.6', { clock_gettime: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 } });
  const ts = new BigInt64Array(2);
  const tsPtr = ptr(ts);
  const CLOCK_MONOTONIC = 1;
  return () => {
    libc.symbols.clock_gettime(CLOCK_MONOTONIC, tsPtr);
    return ts[0] * 1000000000n + ts[1];
  };
}

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

/** Counters reported on "snap"; `writes` is null when the library does not expose its sends. */
function makeCounters() {
  return { turns: 0, published: 0, paused: 0, clients: 0, writes: null, delivered: 0, stopped: false };
}

function serveControl(counters) {
  let buf = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line === 'snap') emit({ event: 'snap', ...counters });
      else if (line === 'stop') {
        // Runs between publishing turns, so `published` is final.
        counters.stopped = true;
        emit({ event: 'stopped', published: counters.published });
      }
    }
  });
  process.stdin.on('end', () => process.exit(0));
}

/**
 * Wait for `clientsWanted` clients, then publish bursts of `burst` messages per turn.
 * `publishBurst(msgs)` sends one burst; `maxBuffered()` is the largest buffered amount
 * of any client in bytes.
 */
function publishForever(burst, clientsWanted, publishBurst, maxBuffered, counters) {
  let seq = 0;
  const turn = () => {
    if (counters.turns % FLOW_CHECK_TURNS === 0 && maxBuffered() > FLOW_LIMIT) {
      counters.paused += 1;
      setTimeout(turn, 1);
      return;
    }
    const msgs = new Array(burst);
    for (let i = 0; i < burst; i++) msgs[i] = tradePayload(seq + i);
    publishBurst(msgs);
    seq += burst;
    counters.published += burst;
    counters.turns += 1;
    setImmediate(turn);
  };
  const waitClients = () => {
    if (counters.clients < clientsWanted) setTimeout(waitClients, 10);
    else turn();
  };
  waitClients();
}

/**
 * Wait for `clientsWanted` clients, then publish bursts of `burst` messages at `rate`
 * messages per second, each stamped with the monotonic time of its publish. The schedule
 * is a deadline (messages due = rate × elapsed), so timer lateness is caught up and the
 * offered load is the one asked for; the flow-control rule is the same as flat out (a
 * paused turn is caught up afterwards).
 */
function publishPaced(burst, rate, clientsWanted, publishBurst, maxBuffered, counters) {
  const monotonicNs = makeMonotonicNs();
  let seq = 0;
  let t0 = 0n;
  const tick = () => {
    const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
    while (seq + burst <= rate * elapsed) {
      if (counters.turns % FLOW_CHECK_TURNS === 0 && maxBuffered() > FLOW_LIMIT) {
        counters.paused += 1;
        setTimeout(tick, 1);
        return;
      }
      const now = monotonicNs();
      const msgs = new Array(burst);
      for (let i = 0; i < burst; i++) msgs[i] = tradePayload(seq + i, now);
      publishBurst(msgs);
      seq += burst;
      counters.published += burst;
      counters.turns += 1;
    }
    const waitMs = ((seq + burst) / rate - Number(process.hrtime.bigint() - t0) / 1e9) * 1000;
    setTimeout(tick, Math.max(waitMs, 0));
  };
  const waitClients = () => {
    if (counters.clients < clientsWanted) {
      setTimeout(waitClients, 10);
      return;
    }
    t0 = process.hrtime.bigint();
    tick();
  };
  waitClients();
}

/** Flat out (the default), paced (`rate` > 0) or idle (`burst` 0): see the header. */
function startPublishing(burst, clientsWanted, rate, publishBurst, maxBuffered, counters) {
  if (burst <= 0) return;
  if (rate > 0) publishPaced(burst, rate, clientsWanted, publishBurst, maxBuffered, counters);
  else publishForever(burst, clientsWanted, publishBurst, maxBuffered, counters);
}

/** The mix workload file named by BENCH_MIX, or null (see the header). */
function loadMix() {
  const path = process.env.BENCH_MIX;
  if (!path) return null;
  const data = JSON.parse(require('fs').readFileSync(path, 'utf8'));
  return {
    names: data.streams.map((s) => s.name),
    heads: data.streams.map((s) => s.head),
    tails: data.streams.map((s) => s.tail),
    sequence: data.sequence,
    /** Stream names of a client's URL path /m/<i>,<j>,...; [] when malformed or out of range. */
    streamsOfPath(path) {
      const at = path.indexOf('/m/');
      if (at < 0) return [];
      const idx = path.slice(at + 3).split(',').map(Number);
      if (!idx.every((i) => Number.isInteger(i) && i >= 0 && i < this.names.length)) return [];
      return idx.map((i) => this.names[i]);
    },
  };
}

/**
 * Like publishForever, but message t goes to stream mix.sequence[t % L] with that stream's
 * payload: `publish(name, msg)` per message, until "stop" arrives.
 */
function publishMixForever(burst, clientsWanted, mix, publish, maxBuffered, counters) {
  const { names, heads, tails, sequence } = mix;
  const cycle = sequence.length;
  let seq = 0;
  const turn = () => {
    if (counters.turns % FLOW_CHECK_TURNS === 0 && maxBuffered() > FLOW_LIMIT) {
      counters.paused += 1;
      setTimeout(turn, 1);
      return;
    }
    if (counters.stopped) return;
    for (let t = seq; t < seq + burst; t++) {
      const stream = sequence[t % cycle];
      publish(names[stream], heads[stream] + t + tails[stream]);
    }
    seq += burst;
    counters.published += burst;
    counters.turns += 1;
    setImmediate(turn);
  };
  const waitClients = () => {
    if (counters.clients < clientsWanted) setTimeout(waitClients, 10);
    else turn();
  };
  waitClients();
}

/**
 * Relay mode (BENCH_UPSTREAM=ws://host:port in the environment): instead of publishing,
 * the peer connects to that Binance-shaped upstream (bench/peers/feeder.py) as a
 * WebSocket client, SUBSCRIBEs `stream`, and hands each data message's `data` object to
 * `publish(payload)` as it arrives — a hub built on this server, with the same work per
 * message as tickhub's relay (find the payload in the combined envelope, publish it
 * unparsed). The upstream client is Bun's built-in WebSocket under Bun and the `ws`
 * package under Node (Node 20 has no WebSocket client); both answer the feeder's pings
 * after the frames read before them, as the paced feeder needs. Returns false when not
 * in relay mode.
 */
function relayUpstream(stream, publish, counters) {
  const url = process.env.BENCH_UPSTREAM;
  if (!url) return false;
  const WS = typeof Bun === 'undefined' ? require('ws') : WebSocket;
  const up = new WS(url + '/stream');
  const onText = (text) => {
    const at = text.indexOf('"data":');
    if (at < 0) return;  // a SUBSCRIBE answer
    publish(text.slice(at + 7, text.length - 1));
    counters.published += 1;
  };
  if (typeof Bun === 'undefined') {
    // ws hands a Buffer: slicing it is a view, published as text by the server.
    up.on('open', () => up.send(JSON.stringify({ method: 'SUBSCRIBE', params: [stream], id: 1 })));
    up.on('message', (data) => onText(data));
    up.on('error', (err) => { process.stderr.write(`upstream: ${err}\n`); process.exit(1); });
  } else {
    up.onopen = () => up.send(JSON.stringify({ method: 'SUBSCRIBE', params: [stream], id: 1 }));
    up.onmessage = (ev) => onText(ev.data);
    up.onerror = (ev) => { process.stderr.write(`upstream: ${ev.message || ev}\n`); process.exit(1); };
  }
  return true;
}

/** `<burst> <clients> [rate]`; rate 0 (absent) means flat out. */
function parseArgs() {
  const argv = process.argv.slice(2);
  return [parseInt(argv[0], 10), parseInt(argv[1], 10), argv.length > 2 ? parseFloat(argv[2]) : 0];
}

module.exports = { FLOW_LIMIT, FLOW_CHECK_TURNS, tradePayload, emit, makeCounters, serveControl,
  publishForever, publishPaced, startPublishing, parseArgs, loadMix, publishMixForever, relayUpstream };
