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
 */

const FLOW_LIMIT = 256 * 1024;   // bytes; same as benchlib.FLOW_LIMIT
const FLOW_CHECK_TURNS = 10;     // same as benchlib.FLOW_CHECK_TURNS

/** A Binance trade event (~120 bytes), byte for byte what benchlib.trade_payload(seq) builds. */
function tradePayload(seq) {
  return '{"e":"trade","E":1723456789123,"s":"BTCUSDT","t":' + seq +
    ',"p":"61234.56000000","q":"0.00125000","T":1723456789122,"m":true,"M":true}';
}

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

/** Counters reported on "snap"; `writes` is null when the library does not expose its sends. */
function makeCounters() {
  return { turns: 0, published: 0, paused: 0, clients: 0, writes: null, delivered: 0 };
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

function parseArgs() {
  const argv = process.argv.slice(2);
  return [parseInt(argv[0], 10), parseInt(argv[1], 10)];
}

module.exports = { FLOW_LIMIT, FLOW_CHECK_TURNS, tradePayload, emit, makeCounters, serveControl,
  publishForever, parseArgs };
