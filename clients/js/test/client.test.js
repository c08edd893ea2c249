// The client against real gateways (test/world.py): reconnect, outbox, recovery,
// token refresh, rate limits, presence and typing. Run with `npm test`.

import assert from "node:assert/strict";
import net from "node:net";
import { after, before, test } from "node:test";

import { Duologue, MemoryStore, threadOf } from "../dist/index.js";
import { sleep, uid, until, World } from "./world.js";

const T = { timeout: 90_000 };
let world;
let gateway;
const clients = [];

before(async () => {
  world = await World.open();
  gateway = await world.gateway();
});

after(async () => {
  for (const c of clients) c.close();
  await world?.close();
});

/** A connected client for `user` on `url` (resolves at its first `caughtUp`). */
async function connect(user, url, options = {}) {
  const client = new Duologue({
    url, token: options.token ?? (() => world.token(user)), backoff: { minMs: 100, maxMs: 1000 }, ...options,
  });
  clients.push(client);
  client.events = [];
  client.errors = [];
  client.acks = [];
  client.on("event", (e) => client.events.push(e));
  client.on("error", (e) => client.errors.push(e));
  client.on("ack", (a) => client.acks.push(a));
  const caughtUp = client.once("caughtUp");
  await client.connect();
  await caughtUp;
  return client;
}

function bodies(client, thread) {
  return client.thread(thread).list().map((m) => m.body);
}

function sentBodies(client, thread) {
  return client.events.filter((e) => e.thread === thread && e.event.kind === "MessageSent").map((e) => e.event.body);
}

const acked = (client) => until(() => client.pendingCommands().length === 0, 20_000, "every command acked");

test("a gateway killed and restarted: the client reconnects, syncs, resends; nothing lost or doubled", T, async () => {
  const [gateway, other] = [await world.gateway(), await world.gateway()];
  const alice = uid("alice");
  const senders = ["bob", "carol", "dave"].map(uid);
  const a = await connect(alice, gateway.url);
  const peers = await Promise.all(senders.map((s) => connect(s, other.url)));
  const threads = senders.map((s) => threadOf(alice, s));
  const expected = new Map(threads.map((t) => [t, []]));
  const say = (client, thread, text) => {
    client.send(thread, text);
    expected.get(thread).push(text);
  };
  for (let i = 0; i < 5; i++) peers.forEach((p, n) => say(p, threads[n], `before ${i}`));
  await until(() => threads.every((t) => bodies(a, t).length === 5), 10_000, "the first messages");

  await world.kill(gateway);
  await until(() => a.status !== "online", 5000, "alice offline");
  for (let i = 0; i < 30; i++) peers.forEach((p, n) => say(p, threads[n], `missed ${i}`));
  for (let i = 0; i < 5; i++) say(a, threads[0], `queued ${i}`);
  assert.deepEqual(a.thread(threads[0]).outgoing.map((m) => m.state), Array(5).fill("pending"));
  await Promise.all(peers.map(acked));
  await sleep(300);
  const caughtUp = a.once("caughtUp");
  await world.start(gateway);
  await caughtUp;
  await acked(a);
  await until(() => sentBodies(peers[0], threads[0]).length === 40, 10_000, "bob gets alice's queued messages");

  for (const t of threads) {
    await until(() => bodies(a, t).length === expected.get(t).length, 10_000, `all of ${t}`);
    const list = a.thread(t).list();
    // the senders' messages in their order; alice's five after the first five (her
    // relative order kept), each exactly once
    assert.deepEqual(list.filter((m) => m.sender !== alice).map((m) => m.body),
      expected.get(t).filter((b) => !b.startsWith("queued")));
    assert.deepEqual(list.filter((m) => m.sender === alice).map((m) => m.body),
      expected.get(t).filter((b) => b.startsWith("queued")));
    assert.ok(list.every((m) => m.state === "sent" && m.id));
  }
  const ids = a.events.map((e) => `${e.thread}/${e.id}`); // ids are per thread
  assert.equal(new Set(ids).size, ids.length, "an event reached the app twice");
  assert.equal(a.events.filter((e) => e.event.kind === "MessageSent").length, 5 * 3 + 30 * 3 + 5);
  assert.deepEqual(sentBodies(peers[0], threads[0]).filter((b) => b.startsWith("queued")),
    [0, 1, 2, 3, 4].map((i) => `queued ${i}`));
});

/** A TCP proxy to `port` that can drop the connection right after the next frame the
 * client sends: the gateway gets the frame, the client never gets the answer. */
async function cuttingProxy(port) {
  const state = { cutNext: false, sockets: new Set() };
  const server = net.createServer((downstream) => {
    const upstream = net.connect(port, "127.0.0.1");
    state.sockets.add(downstream).add(upstream);
    let cut = false;
    downstream.on("data", (chunk) => {
      upstream.write(chunk);
      if (state.cutNext) {
        state.cutNext = false;
        cut = true;
        downstream.destroy();
        setTimeout(() => upstream.destroy(), 300); // the gateway reads the frame first
      }
    });
    upstream.on("data", (chunk) => cut || downstream.write(chunk));
    for (const [a, b] of [[downstream, upstream], [upstream, downstream]]) {
      a.on("error", () => b.destroy());
      a.on("close", () => setTimeout(() => b.destroy(), cut ? 300 : 0));
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  state.url = `http://127.0.0.1:${server.address().port}`;
  state.close = () => {
    for (const s of state.sockets) s.destroy();
    server.close();
  };
  return state;
}

test("the outbox resends after a dropped socket: exactly one event, the resend acked as a duplicate", T, async () => {
  const proxy = await cuttingProxy(gateway.port);
  try {
    const alice = uid("alice");
    const bob = uid("bob");
    const a = await connect(alice, proxy.url);
    const b = await connect(bob, gateway.url);
    const thread = threadOf(alice, bob);
    a.send(bob, "warm up");
    await until(() => sentBodies(b, thread).length === 1, 10_000, "the warm-up");
    await sleep(100);

    proxy.cutNext = true;
    const sent = a.send(bob, "sent once, acked never");
    const reconnected = a.once("caughtUp");
    await reconnected;
    await acked(a);
    await until(() => sentBodies(b, thread).length === 2, 10_000, "the message at bob");
    await sleep(300); // a second copy would show up now

    assert.deepEqual(sentBodies(b, thread), ["warm up", "sent once, acked never"]);
    const ack = a.acks.find((x) => x.ref === sent.clientMsgId);
    assert.equal(ack.duplicate, true, "the first send was appended: the resend must be its duplicate");
    assert.deepEqual(bodies(a, thread), ["warm up", "sent once, acked never"]);
    assert.equal(a.thread(thread).list()[1].state, "sent");
  } finally {
    proxy.close();
  }
});

test("synced with recovered:false: the thread is reloaded from the HTTP history", T, async () => {
  await world.projector();
  const alice = uid("alice");
  const bob = uid("bob");
  const thread = threadOf(alice, bob);
  const store = new MemoryStore();
  const a = await connect(alice, gateway.url, { store });
  const b = await connect(bob, gateway.url);
  for (let i = 0; i < 5; i++) b.send(alice, `m${i}`);
  await until(() => bodies(a, thread).length === 5, 10_000, "five messages");
  a.close();
  await until(async () => (await a.http.messages(thread, 50)).messages.length === 5, 20_000, "the projection");

  // The store says alice saw events the server no longer has (a Redis that lost its
  // tail): the sync after that id cannot be proven gapless.
  const key = store.keys(`${alice}/t/`)[0];
  const snapshot = JSON.parse(store.get(key));
  store.set(key, JSON.stringify({ ...snapshot, cursor: "99999999999999-0", messages: snapshot.messages.slice(0, 2) }));

  let historyReads = 0;
  const counting = (url, init) => {
    if (String(url).includes("/messages")) historyReads++;
    return fetch(url, init);
  };
  const again = await connect(alice, gateway.url, { store, fetch: counting, history: 50 });
  assert.ok(historyReads >= 1, "no HTTP history read");
  assert.deepEqual(bodies(again, thread), ["m0", "m1", "m2", "m3", "m4"]);
  b.send(alice, "after the reload");
  await until(() => bodies(again, thread).length === 6, 10_000, "a live message after the reload");
  assert.equal(bodies(again, thread)[5], "after the reload");
});

test("the token is refreshed before it expires: one connection throughout", T, async () => {
  const alice = uid("alice");
  const bob = uid("bob");
  let issued = 0;
  const a = await connect(alice, gateway.url, {
    token: () => {
      issued++;
      return world.token(alice, 4);
    },
  });
  const hellos = [];
  a.on("hello", (h) => hellos.push(h));
  const refreshed = [];
  a.on("refreshed", (r) => refreshed.push(r));
  const b = await connect(bob, gateway.url);
  await sleep(10_000); // two and a half lifetimes of the first token
  a.send(bob, "still here");
  await acked(a);
  await until(() => sentBodies(b, threadOf(alice, bob)).length === 1, 5000, "the message");
  assert.equal(hellos.length, 0, "the connection was closed and made again");
  assert.ok(refreshed.length >= 2, `refreshed ${refreshed.length} times`);
  assert.ok(issued >= 3);
});

test("rate_limited: the client backs off and resends; every message once, none failed", T, async () => {
  const limited = await world.gateway({ DUOLOGUE_RATE: "5", DUOLOGUE_BURST: "5" });
  const alice = uid("alice");
  const bob = uid("bob");
  const a = await connect(alice, limited.url);
  const b = await connect(bob, limited.url);
  const refused = [];
  a.on("refused", (r) => refused.push(r));
  const texts = Array.from({ length: 25 }, (_, i) => `burst ${i}`);
  const started = Date.now();
  for (const text of texts) a.send(bob, text);
  await acked(a);
  const seconds = (Date.now() - started) / 1000;
  await until(() => sentBodies(b, threadOf(alice, bob)).length === 25, 5000, "25 messages at bob");
  const limits = a.errors.filter((e) => e.code === "rate_limited");
  assert.deepEqual(refused, []);
  assert.ok(limits.length >= 1, "the gateway never limited: the test proves nothing");
  assert.ok(limits.length <= texts.length, `${limits.length} rate_limited answers: no backoff`);
  assert.ok(seconds >= (25 - 5) / 5 * 0.8, `all acked in ${seconds} s: faster than the rate`);
  assert.deepEqual([...sentBodies(b, threadOf(alice, bob))].sort(), [...texts].sort());
  assert.ok(a.thread(bob).list().every((m) => m.state === "sent"));
});

test("rate_limited syncs (the read budget): the client waits and syncs again; every thread caught up once", T, async () => {
  const limited = await world.gateway({ DUOLOGUE_READ_RATE: "5", DUOLOGUE_READ_BURST: "5" });
  const alice = uid("alice");
  const store = new MemoryStore();
  const a = await connect(alice, limited.url, { store, history: false, watchPresence: false });
  const peers = await Promise.all(Array.from({ length: 12 }, (_, i) => connect(uid(`p${i}`), limited.url,
    { history: false, watchPresence: false })));
  peers.forEach((p) => p.send(alice, `from ${p.user}`));
  await until(() => a.threadList().length === 12, 10_000, "twelve threads");
  a.close();
  await sleep(2500); // the read budget fills up again
  peers.forEach((p) => p.send(alice, `missed from ${p.user}`));
  await Promise.all(peers.map(acked));
  const again = await connect(alice, limited.url, { store, history: false, watchPresence: false });
  const limits = again.errors.filter((e) => e.code === "rate_limited" && !e.ref);
  assert.ok(limits.length >= 1, "the read budget never refused a sync: the test proves nothing");
  assert.ok(limits.length <= 12, `${limits.length} refused syncs: no backoff`);
  for (const p of peers) {
    assert.deepEqual(bodies(again, threadOf(alice, p.user)), [`from ${p.user}`, `missed from ${p.user}`]);
  }
  const ids = again.events.map((e) => `${e.thread}/${e.id}`);
  assert.equal(new Set(ids).size, ids.length);
});

test("presence is watched and typing throttled to one frame per 2 s", T, async () => {
  const alice = uid("alice");
  const bob = uid("bob");
  const a = await connect(alice, gateway.url);
  const b = await connect(bob, gateway.url);
  b.send(alice, "hi");
  await until(() => a.presence.get(bob)?.online === true, 10_000, "bob online at alice");
  const typing = [];
  b.on("typing", (t) => typing.push(t));
  for (let i = 0; i < 10; i++) {
    a.typing(threadOf(alice, bob));
    await sleep(100);
  }
  await sleep(500);
  assert.equal(typing.length, 1);
  b.close();
  await until(() => a.presence.get(bob)?.online === false, 10_000, "bob offline at alice");
  assert.ok(a.presence.get(bob).lastSeen > 0);
});
