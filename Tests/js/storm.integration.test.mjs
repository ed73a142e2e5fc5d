// storm.js against a real stormd (from STORM_BIN_DIR): a gateway restart in the middle of a stream,
// token expiry and refresh, and a slow client's 4008. Node 20 has no WebSocket client, so this file
// carries a small one (RFC 6455 client framing, tests only) over node:http's upgrade.
//   STORM_BIN_DIR=$(swift build --show-bin-path) node --test Tests/js/
// With STORM_TEST_NATS_URL the restart test runs on JetStream too and asserts exact recovery.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { Storm } from "../../Sources/StormWeb/Resources/storm.js";

const BIN_DIR = process.env.STORM_BIN_DIR || "";
const NATS_URL = process.env.STORM_TEST_NATS_URL || "";
const skip = BIN_DIR ? false : process.env.CI ? false : "STORM_BIN_DIR is not set (the directory holding stormd)";
if (!BIN_DIR && process.env.CI) throw new Error("STORM_BIN_DIR must name the directory holding stormd in CI");

const SECRET = "storm-js-integration-secret-0123456789abcdef";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `condition` every 25 ms for at most `ms`; fails with `what`. */
async function waitFor(what, condition, ms = 10000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await sleep(25);
  }
  throw new Error("timed out after " + ms + " ms waiting for " + what);
}

// --- a WebSocket client for tests only -----------------------------------------------------------

/** The browser WebSocket's shape (onopen, onmessage, onclose, send, close), plus pause()/resume(). */
class TestWebSocket {
  static instances = [];

  /** While set (a promise), new sockets wait for it before connecting: a test holds reconnects back. */
  static gate = null;

  constructor(url) {
    TestWebSocket.instances.push(this);
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this.buffer = Buffer.alloc(0);
    this.fragments = [];
    this.done = false;
    this.closeSent = false;
    if (TestWebSocket.gate) TestWebSocket.gate.then(() => this.start(url));
    else this.start(url);
  }

  start(url) {
    const target = new URL(url.replace(/^ws/, "http"));
    const key = crypto.randomBytes(16).toString("base64");
    const request = http.request({
      host: target.hostname, port: target.port, path: target.pathname + target.search,
      headers: { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": key },
    });
    request.on("upgrade", (response, socket, head) => {
      const accept = crypto.createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
      if (response.headers["sec-websocket-accept"] !== accept) {
        socket.destroy();
        return this.finish(1006, "bad Sec-WebSocket-Accept");
      }
      this.socket = socket;
      socket.on("data", (chunk) => this.receive(chunk));
      socket.on("close", () => this.finish(1006, "connection lost"));
      socket.on("error", () => {});
      setImmediate(() => {
        if (this.onopen) this.onopen({});
        if (head && head.length) this.receive(head);
      });
    });
    request.on("response", (response) => {
      response.resume();
      this.finish(1006, "HTTP " + response.statusCode);
    });
    request.on("error", () => this.finish(1006, "connect failed"));
    request.end();
  }

  pause() { if (this.socket) this.socket.pause(); }
  resume() { if (this.socket) this.socket.resume(); }

  receive(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      if (this.buffer.length < 2) return;
      const fin = (this.buffer[0] & 0x80) !== 0;
      const opcode = this.buffer[0] & 0x0f;
      let length = this.buffer[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) return;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) return;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.buffer.length < offset + length) return;
      const payload = this.buffer.subarray(offset, offset + length);
      this.buffer = this.buffer.subarray(offset + length);
      this.frame(fin, opcode, Buffer.from(payload));
    }
  }

  frame(fin, opcode, payload) {
    if (opcode === 0x9) return this.sendFrame(0xa, payload);
    if (opcode === 0xa) return;
    if (opcode === 0x8) {
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      const reason = payload.subarray(2).toString("utf8");
      if (!this.closeSent) this.sendFrame(0x8, payload.subarray(0, 2));
      this.closeSent = true;
      if (this.socket) this.socket.end();
      return this.finish(code, reason);
    }
    if (opcode === 0x1 || opcode === 0x0) {
      this.fragments.push(payload);
      if (!fin) return;
      const text = Buffer.concat(this.fragments).toString("utf8");
      this.fragments = [];
      if (this.onmessage && !this.done) this.onmessage({ data: text });
    }
  }

  sendFrame(opcode, payload) {
    if (!this.socket || this.socket.destroyed) return;
    const mask = crypto.randomBytes(4);
    const length = payload.length;
    const header = length < 126 ? Buffer.from([0x80 | opcode, 0x80 | length])
      : length < 65536 ? Buffer.from([0x80 | opcode, 0x80 | 126, length >> 8, length & 0xff])
        : Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | 127]), (() => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(length)); return b; })()]);
    const masked = Buffer.from(payload);
    for (let i = 0; i < masked.length; i++) masked[i] ^= mask[i % 4];
    this.socket.write(Buffer.concat([header, mask, masked]));
  }

  send(text) {
    this.sendFrame(0x1, Buffer.from(text, "utf8"));
  }

  close(code = 1000) {
    if (this.done) return;
    if (!this.closeSent) {
      const payload = Buffer.alloc(2);
      payload.writeUInt16BE(code);
      this.sendFrame(0x8, payload);
      this.closeSent = true;
    }
    const socket = this.socket;
    setTimeout(() => { if (socket) socket.destroy(); }, 500).unref();
    this.finish(code, "closed by the client");
  }

  finish(code, reason) {
    if (this.done) return;
    this.done = true;
    if (this.socket && !this.closeSent) this.socket.destroy();
    if (this.onclose) this.onclose({ code, reason });
  }
}

// --- stormd --------------------------------------------------------------------------------------

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

class Gateway {
  constructor(port, args = [], env = {}) {
    this.port = port;
    this.args = args;
    this.env = env;
    this.url = "http://127.0.0.1:" + port;
    this.log = "";
    this.process = null;
  }

  async start() {
    const child = spawn(path.join(BIN_DIR, "stormd"), ["--listen", "127.0.0.1:" + this.port, ...this.args], {
      env: { ...process.env, ...this.env }, stdio: ["ignore", "pipe", "pipe"],
    });
    this.process = child;
    const append = (chunk) => { this.log = (this.log + chunk.toString()).slice(-20000); };
    child.stdout.on("data", append);
    child.stderr.on("data", append);
    await waitFor("stormd to answer /readyz on " + this.url + " (log: " + this.log.slice(-500) + ")", async () => {
      if (child.exitCode !== null) throw new Error("stormd exited " + child.exitCode + ": " + this.log.slice(-2000));
      try {
        return (await fetch(this.url + "/readyz")).status === 200;
      } catch (_) {
        return false;
      }
    }, 20000);
  }

  /** Kills stormd by its PID (SIGKILL: a crash, no drain) and waits for it to be gone. */
  async kill(signal = "SIGKILL") {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    process.kill(child.pid, signal);
    await Promise.race([exited, sleep(5000)]);
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid, "SIGKILL");
      await exited;
    }
  }

  /** The sum of a metric's samples in /metrics (0 when absent). */
  async metric(name) {
    const text = await (await fetch(this.url + "/metrics")).text();
    let sum = 0;
    for (const line of text.split("\n")) {
      if (line.startsWith(name + " ") || line.startsWith(name + "{")) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
    return sum;
  }

  async publish(channel, body, headers = {}) {
    const response = await fetch(this.url + "/publish?subject=" + encodeURIComponent(channel), { method: "POST", body, headers });
    if (!response.ok) throw new Error("publish to " + channel + ": HTTP " + response.status + " " + (await response.text()));
    return response.json();
  }
}

function hs256(payload) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const input = part({ alg: "HS256", typ: "JWT" }) + "." + part(payload);
  return input + "." + crypto.createHmac("sha256", SECRET).update(input).digest("base64url");
}

function tokenFor(user, seconds, claims = {}) {
  const now = Math.floor(Date.now() / 1000);
  return hs256({ sub: user, iat: now, exp: now + seconds, storm: { sub: ["*"], pub: ["*"], ...claims } });
}

/** A client with the test WebSocket and a log of its state changes. */
function client(gateway, options = {}) {
  const storm = new Storm(gateway.url, { WebSocket: TestWebSocket, transports: ["websocket"], minReconnectDelay: 100, maxReconnectDelay: 1000, ...options });
  storm.changes = [];
  storm.on("state", (change) => storm.changes.push(change));
  return storm;
}

function collect(subscription) {
  const received = [];
  const recovered = [];
  subscription.on("message", (envelope) => received.push(envelope));
  subscription.on("recovered", (event) => recovered.push(event));
  return { received, recovered };
}

const suffix = () => crypto.randomBytes(4).toString("hex");

// --- the tests -----------------------------------------------------------------------------------

async function restartInTheMiddle(t, args, exact) {
  const gateway = new Gateway(await freePort(), args);
  await gateway.start();
  const subscriber = client(gateway);
  const publisher = client(gateway);
  t.after(async () => { subscriber.close(); publisher.close(); await gateway.kill(); });
  const channel = "js.restart-" + suffix();
  const subscription = subscriber.subscribe(channel);
  const { received, recovered } = collect(subscription);
  subscriber.connect();
  publisher.connect();
  await waitFor("both clients connected and subscribed", () => subscriber.state === "connected" && publisher.state === "connected" && subscription.state === "subscribed");

  const total = 60;
  const published = [];
  const stream = (async () => {
    for (let n = 1; n <= total; n++) {
      published.push(await publisher.publish(channel, { n }, { idempotencyKey: channel + "-" + n }));
      await sleep(15);
    }
  })();
  await waitFor("some messages before the restart", () => received.length >= 15);
  await gateway.kill();
  await sleep(300);
  await gateway.start();
  await stream;  // every publish retried with its key until the restarted gateway answered
  await waitFor("the last message after the restart", () => received.some((e) => e.data && e.data.n === total), 15000);

  const seen = received.map((e) => e.data.n);
  assert.equal(new Set(received.map((e) => e.id)).size, received.length, "no message is delivered twice");
  assert.deepEqual([...seen].sort((a, b) => a - b), seen, "delivered in order");
  const transitions = subscriber.changes.map((c) => c.state);
  assert.ok(transitions.includes("disconnected") && transitions.lastIndexOf("connected") > transitions.indexOf("disconnected"), "disconnected, then connected again: " + transitions);
  assert.equal(published.length, total);
  if (exact) {
    assert.deepEqual(seen, Array.from({ length: total }, (_, i) => i + 1), "JetStream: every message exactly once across the restart");
    assert.deepEqual(recovered, [], "JetStream keeps the epoch: recovered");
  } else {
    assert.equal(recovered.length, 1, "a memory-engine restart changes the epoch: one recovered:false");
    assert.equal(recovered[0].recovered, false);
  }
}

test("a gateway restart in the middle of a stream (memory engine: recovered:false)", { skip, timeout: 60000 }, async (t) => {
  await restartInTheMiddle(t, [], false);
});

test("a gateway restart in the middle of a stream (JetStream: nothing lost or repeated)",
  { skip: skip || (NATS_URL ? false : "STORM_TEST_NATS_URL is not set"), timeout: 60000 }, async (t) => {
    await restartInTheMiddle(t, ["--nats", NATS_URL], true);
  });

test("tokens: getToken refreshes before exp with the refresh op; an expired token closes 4001 and waits for a new one", { skip, timeout: 60000 }, async (t) => {
  const gateway = new Gateway(await freePort(), [], { STORM_JWT_SECRET: SECRET });
  await gateway.start();
  const channel = "js.token-" + suffix();
  let calls = 0;
  const refreshing = client(gateway, { getToken: async () => { calls += 1; return tokenFor("alice", 3); } });
  const fixed = client(gateway, { token: tokenFor("bob", 2) });
  t.after(async () => { refreshing.close(); fixed.close(); await gateway.kill(); });
  const { received } = collect(refreshing.subscribe(channel));
  const bob = fixed.subscribe(channel);
  refreshing.connect();
  fixed.connect();
  await waitFor("both connected", () => refreshing.state === "connected" && bob.state === "subscribed");
  const socketsBefore = TestWebSocket.instances.length;

  await waitFor("bob's token to expire: 4001", () => fixed.changes.some((c) => c.code === 4001), 8000);
  assert.equal(fixed.state, "disconnected");
  assert.equal(fixed.changes.at(-1).willReconnect, false);

  // alice's 3 s tokens are replaced at 80% of their life, over the open connection.
  await sleep(4500);
  assert.ok(calls >= 3, "getToken called at connect and before each exp (" + calls + " calls)");
  assert.equal(refreshing.state, "connected");
  assert.ok(!refreshing.changes.some((c) => c.state === "disconnected"), "alice never disconnected: " + JSON.stringify(refreshing.changes));
  await refreshing.publish(channel, { after: "refreshes" });
  await waitFor("a message after several token lifetimes", () => received.some((e) => e.data && e.data.after === "refreshes"));
  assert.equal(TestWebSocket.instances.length, socketsBefore, "no reconnect at all while bob has no new token, alice refreshes in place");

  fixed.setToken(tokenFor("bob", 30));
  await waitFor("bob back with a new token", () => fixed.state === "connected" && bob.state === "subscribed");
});

test("a slow client is closed with 4008 and recovers what it missed from its offset", { skip, timeout: 60000 }, async (t) => {
  const gateway = new Gateway(await freePort(), ["--client-buffer", "65536"]);
  await gateway.start();
  const storm = client(gateway);
  t.after(async () => { storm.close(); await gateway.kill(); });
  const channel = "js.slow-" + suffix();
  const subscription = storm.subscribe(channel);
  const { received, recovered } = collect(subscription);
  storm.connect();
  await waitFor("subscribed", () => subscription.state === "subscribed");
  await gateway.publish(channel, JSON.stringify({ n: 0 }));
  await waitFor("the first message", () => received.length === 1);

  // Not reading: the kernel's socket buffers fill (a few MB on loopback), then the gateway's outbound
  // buffer passes --client-buffer and it cuts the client off (storm_slow_client_disconnects_total).
  const socket = TestWebSocket.instances.at(-1);
  socket.pause();
  const pad = "x".repeat(40000);
  let total = 0;
  while (total < 600 && (await gateway.metric("storm_slow_client_disconnects_total")) < 1) {
    await Promise.all(Array.from({ length: 10 }, (_, i) => gateway.publish(channel, JSON.stringify({ n: total + i + 1, pad }))));
    total += 10;
  }
  assert.ok(total < 600, "the gateway never found the paused client slow");
  socket.resume();
  await waitFor("the 4008 close", () => storm.changes.some((c) => c.code === 4008), 10000)
    .catch((error) => { throw new Error(error.message + "; state changes: " + JSON.stringify(storm.changes) + "; received " + received.length); });
  await waitFor("every message, after the reconnect", () => received.length === total + 1, 15000);
  // Published ten at a time: their order is the broker's (offsets), not n's.
  assert.deepEqual(received.map((e) => e.data.n).sort((a, b) => a - b), Array.from({ length: total + 1 }, (_, i) => i), "every message once");
  assert.ok(received.every((e, i) => i === 0 || e.offset > received[i - 1].offset), "in offset order");
  assert.deepEqual(recovered, [], "recovered from the offset");
  assert.equal(storm.state, "connected");
});

test("excludeSelf: the publisher does not get its own message, another subscriber does", { skip, timeout: 60000 }, async (t) => {
  const gateway = new Gateway(await freePort());
  await gateway.start();
  const a = client(gateway);
  const b = client(gateway);
  t.after(async () => { a.close(); b.close(); await gateway.kill(); });
  const channel = "js.exclude-" + suffix();
  const fromA = collect(a.subscribe(channel)).received;
  const fromB = collect(b.subscribe(channel)).received;
  a.connect();
  b.connect();
  await waitFor("both subscribed", () => a.subscription(channel).state === "subscribed" && b.subscription(channel).state === "subscribed");
  const excluded = await a.publish(channel, { n: 1 }, { excludeSelf: true });
  assert.equal(typeof excluded.offset, "number", "the publisher still gets the reply with the offset");
  await a.publish(channel, { n: 2 });
  await waitFor("b gets both", () => fromB.length === 2);
  await waitFor("a gets the second", () => fromA.length === 1);
  // One channel's messages arrive in offset order: once a has n:2, n:1 would have come before it.
  assert.deepEqual(fromA.map((e) => e.data.n), [2]);
  assert.deepEqual(fromB.map((e) => e.data.n), [1, 2]);
});

test("since latest: the newest stored message first, then live ones", { skip, timeout: 60000 }, async (t) => {
  const gateway = new Gateway(await freePort());
  await gateway.start();
  const storm = client(gateway);
  t.after(async () => { storm.close(); await gateway.kill(); });
  const channel = "js.latest-" + suffix();
  for (let n = 1; n <= 3; n++) await gateway.publish(channel, JSON.stringify({ n }));
  const subscription = storm.subscribe(channel, { since: "latest" });
  const { received, recovered } = collect(subscription);
  const changes = [];
  subscription.on("state", (change) => changes.push(change));
  storm.connect();
  await waitFor("the newest message", () => received.length === 1);
  assert.equal(received[0].data.n, 3);
  assert.equal(changes.find((c) => c.state === "subscribed").recovered, true);
  await gateway.publish(channel, JSON.stringify({ n: 4 }));
  await waitFor("the live one", () => received.length === 2);
  assert.deepEqual(received.map((e) => e.data.n), [3, 4]);
  assert.equal(subscription.offset, received[1].offset, "the offset is tracked from what arrives");
  assert.deepEqual(recovered, []);
});

test("server-side subscriptions (storm.channels): delivered, and resumed from their offsets after the connection is cut", { skip, timeout: 60000 }, async (t) => {
  const gateway = new Gateway(await freePort(), [], { STORM_JWT_SECRET: SECRET });
  await gateway.start();
  const inbox = "js.inbox-" + suffix();
  const token = tokenFor("carol", 600, { channels: [inbox] });
  const storm = client(gateway, { token });
  t.after(async () => { TestWebSocket.gate = null; storm.close(); await gateway.kill(); });
  const received = [];
  const recovered = [];
  const events = [];
  storm.on("subscribed", (event) => {
    events.push(event);
    for (const subscription of event.subscriptions) {
      if (!event.added.includes(subscription.channel)) continue;
      subscription.on("message", (envelope) => received.push(envelope));
      subscription.on("recovered", (event) => recovered.push(event));
    }
  });
  storm.connect();
  await waitFor("the subscribed event", () => events.length === 1);
  assert.deepEqual(events[0].channels, [inbox]);
  assert.equal(storm.subscription(inbox).server, true);
  assert.equal(storm.subscription(inbox).state, "subscribed");
  const publish = (n) => gateway.publish(inbox, JSON.stringify({ n }), { Authorization: "Bearer " + token });
  for (let n = 1; n <= 3; n++) await publish(n);
  await waitFor("the first three", () => received.length === 3);

  // Cut the connection and hold the reconnect back while five more are stored.
  let open;
  TestWebSocket.gate = new Promise((resolve) => { open = resolve; });
  TestWebSocket.instances.at(-1).socket.destroy();
  await waitFor("disconnected", () => storm.state !== "connected");
  for (let n = 4; n <= 8; n++) await publish(n);
  TestWebSocket.gate = null;
  open();
  await waitFor("every message after the reconnect", () => received.length >= 8, 15000);
  await publish(9);
  await waitFor("a live one after the resume", () => received.length >= 9);
  assert.deepEqual(received.map((e) => e.data.n), [1, 2, 3, 4, 5, 6, 7, 8, 9], "nothing lost or repeated, in order");
  assert.deepEqual(recovered, [], "the same epoch: recovered");
  assert.equal(storm.state, "connected");
  assert.equal(storm.subscription(inbox).state, "subscribed");
});
