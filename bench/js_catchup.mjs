// The client side of the `client_catchup` figure (bench/fig_catchup.py), in Node:
// duologue-client (clients/js/dist) connected to a local gateway, then killed and
// restarted by the harness with events appended meanwhile; and a bare WebSocket
// client (no library) replaying the same data, the same-run ceiling.
//
// argv: <port> <token>; stdin/stdout: one JSON object per line.
//   out {"stage":"ready","cursors":{thread:id}}         the library client is caught up
//   out {"stage":"caught_up",...}                        ... and again after the restart
//   in  {"bare": {thread: after}}                        replay with a bare socket
//   out {"stage":"bare",...}

import { createInterface } from "node:readline";
import { Duologue, compareIds } from "../clients/js/dist/index.js";

const [port, token] = process.argv.slice(2);
const url = `http://127.0.0.1:${port}`;
const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const next = async () => JSON.parse((await lines.next()).value);

function check(client) {
  // every thread: messages in strictly increasing id order, none twice
  let events = 0;
  let ok = true;
  for (const t of client.threadList()) {
    const ids = t.list().map((m) => m.id);
    events += ids.length;
    for (let i = 1; i < ids.length; i++) if (compareIds(ids[i - 1], ids[i]) >= 0) ok = false;
  }
  return { events, ok };
}

async function library() {
  const client = new Duologue({ url, token: () => token, history: false, backoff: { minMs: 100, maxMs: 1000 } });
  let helloAt = 0;
  let cpuAtHello = null;
  let firstEventAt = 0;
  client.on("hello", () => { helloAt = Date.now(); cpuAtHello = process.cpuUsage(); firstEventAt = 0; });
  client.on("event", () => { firstEventAt ||= Date.now(); });
  const refusals = [];
  client.on("error", (e) => refusals.push(e.code));
  const first = client.once("caughtUp");
  await client.connect();
  await first;
  const cursors = Object.fromEntries(client.threadList().map((t) => [t.id, t.cursor]));
  const again = client.once("caughtUp");
  say({ stage: "ready", threads: Object.keys(cursors).length, ...check(client), cursors });
  const caught = await again;
  const at = Date.now();
  const cpu = process.cpuUsage(cpuAtHello);
  say({ stage: "caught_up", hello_at: helloAt, caught_up_at: at, ms: caught.ms, threads: caught.threads,
        first_event_ms: firstEventAt - helloAt, cpu_ms: Math.round((cpu.user + cpu.system) / 1000),
        refusals: refusals.length, ...check(client) });
  client.close();
}

function bare(cursors) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const ws = new WebSocket(`${url.replace("http", "ws")}/v1/ws?token=${encodeURIComponent(token)}`);
    let helloAt = 0;
    let cpuAtHello = null;
    let firstEventAt = 0;
    let events = 0;
    let synced = 0;
    const want = Object.keys(cursors).length;
    ws.onerror = () => reject(new Error("bare socket failed"));
    ws.onmessage = (e) => {
      const f = JSON.parse(e.data);
      if (f.type === "hello") {
        helloAt = Date.now();
        cpuAtHello = process.cpuUsage();
        for (const [thread, after] of Object.entries(cursors)) ws.send(JSON.stringify({ type: "sync", thread, after }));
      } else if (f.type === "event") {
        firstEventAt ||= Date.now();
        events++;
      } else if (f.type === "synced" && ++synced === want) {
        const at = Date.now();
        ws.close();
        const cpu = process.cpuUsage(cpuAtHello);
        resolve({ stage: "bare", ms: at - helloAt, connect_ms: at - started, events, first_event_ms: firstEventAt - helloAt,
                  cpu_ms: Math.round((cpu.user + cpu.system) / 1000) });
      }
    };
  });
}

await library();
const { bare: cursors } = await next();
say(await bare(cursors));
process.exit(0);
