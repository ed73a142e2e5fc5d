// Unit tests of storm.js's protocol state machine, step by step, with no socket and no clock.
//   node --test Tests/js/
import { test } from "node:test";
import assert from "node:assert/strict";
import { StormMachine, backoffDelay, refreshDelay, decodeTokenPayload } from "../../Sources/StormWeb/Resources/storm.js";

const of = (actions, type) => actions.filter((a) => a.type === type);
const sent = (actions) => of(actions, "send").map((a) => a.frame);
const states = (actions) => of(actions, "emit").filter((a) => a.event === "state").map((a) => a.payload.state);

function token(payload) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return part({ alg: "HS256", typ: "JWT" }) + "." + part(payload) + ".signature";
}

/** A machine connected over WebSocket, with `channels` subscribed (epoch "E1"). */
function connected(channels = [], options = {}) {
  const machine = new StormMachine({ transports: ["websocket"], random: () => 0.5, ...options });
  for (const channel of channels) machine.subscribe(channel);
  machine.connect();
  const actions = machine.socketOpened();
  for (const frame of sent(actions)) {
    if (frame.op === "subscribe") machine.message({ type: "reply", id: frame.id, result: { channels: frame.channels, epoch: "E1" } });
  }
  return machine;
}

test("backoff: full jitter within [min/2, min(max, min*2^attempt)]", () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = Math.min(20000, 500 * 2 ** attempt);
    assert.equal(backoffDelay(attempt, 500, 20000, () => 0.999999), Math.floor(0.999999 * ceiling));
    assert.equal(backoffDelay(attempt, 500, 20000, () => 0), 250);
    for (let i = 0; i < 50; i++) {
      const delay = backoffDelay(attempt, 500, 20000);
      assert.ok(delay >= 250 && delay <= ceiling, `attempt ${attempt}: ${delay}`);
    }
  }
  assert.equal(backoffDelay(1000, 500, 20000, () => 0.5), 10000, "a huge attempt saturates at max");
});

test("connect opens a WebSocket; a drop schedules a reconnect with growing backoff", () => {
  const machine = new StormMachine({ transports: ["websocket"], random: () => 1 - 1e-9 });
  let actions = machine.connect();
  assert.deepEqual(states(actions), ["connecting"]);
  assert.equal(of(actions, "open")[0].transport, "websocket");
  assert.deepEqual(states(machine.socketOpened()), ["connected"]);
  const delays = [];
  for (let i = 0; i < 4; i++) {
    actions = machine.socketClosed(1006);
    assert.deepEqual(states(actions), ["disconnected"]);
    const timer = of(actions, "startTimer")[0];
    assert.equal(timer.name, "reconnect");
    delays.push(timer.delay);
    actions = machine.timerFired("reconnect");
    assert.deepEqual(states(actions), ["connecting"]);
    assert.equal(of(actions, "open").length, 1);
  }
  assert.deepEqual(delays, [499, 999, 1999, 3999]);
  machine.socketOpened();
  assert.equal(of(machine.socketClosed(1001), "startTimer")[0].delay, 499, "a successful open resets the backoff");
});

test("close codes: 1001 and 4008 reconnect, 4001 waits for a new token, 1008 stops", () => {
  for (const code of [1001, 4008, 1011, 1006]) {
    const machine = connected();
    const actions = machine.socketClosed(code);
    assert.equal(of(actions, "startTimer")[0].name, "reconnect", `code ${code}`);
    assert.equal(actions.find((a) => a.event === "state").payload.willReconnect, true);
  }

  const fixed = connected([], { token: "t1" });
  let actions = fixed.socketClosed(4001);
  assert.equal(of(actions, "startTimer").length, 0, "no token source: no reconnect after 4001");
  assert.equal(actions.find((a) => a.event === "state").payload.willReconnect, false);
  assert.equal(fixed.state, "disconnected");

  const refreshing = connected([], { token: "t1", hasTokenSource: true });
  actions = refreshing.socketClosed(4001);
  assert.equal(of(actions, "startTimer").length, 0);
  assert.equal(of(actions, "fetchToken").length, 1, "4001 asks getToken for a new token");
  actions = refreshing.tokenReceived("t1");
  assert.equal(of(actions, "open").length, 0, "the refused token again does not reconnect");
  assert.equal(of(actions, "startTimer")[0].name, "reconnect");
  actions = refreshing.timerFired("reconnect");
  assert.equal(of(actions, "fetchToken").length, 1, "the retry asks for a token, it does not open");
  actions = refreshing.tokenReceived("t2");
  assert.equal(of(actions, "open").length, 1, "a new token reconnects");
  assert.equal(of(actions, "open")[0].token, "t2");

  const bad = connected();
  actions = bad.socketClosed(1008, "bad_request");
  assert.equal(of(actions, "startTimer").length, 0);
  assert.equal(bad.state, "disconnected");
});

test("resubscribe after a reconnect sends per-channel positions and the epoch", () => {
  const machine = connected(["chat.a", "chat.b", "chat.c"]);
  machine.message({ type: "message", channel: "chat.a", id: "x-1", offset: 12, data: 1 });
  machine.message({ type: "message", channel: "chat.b", id: "x-2", offset: 40, data: 2 });
  let actions = machine.socketClosed(4008);
  const subStates = of(actions, "emitSub").filter((a) => a.event === "state").map((a) => a.channel + ":" + a.payload.state);
  assert.deepEqual(subStates, ["chat.a:subscribing", "chat.b:subscribing", "chat.c:subscribing"]);
  machine.timerFired("reconnect");
  actions = machine.socketOpened();
  const frames = sent(actions);
  assert.deepEqual(frames[0], { id: frames[0].id, op: "subscribe", channels: ["chat.a", "chat.b"], since: { positions: { "chat.a": 12, "chat.b": 40 }, epoch: "E1" } });
  assert.deepEqual(frames[1], { id: frames[1].id, op: "subscribe", channels: ["chat.c"] }, "a channel with no message yet subscribes fresh");
  actions = machine.message({ type: "reply", id: frames[0].id, result: { channels: ["chat.a", "chat.b"], epoch: "E1", recovered: true } });
  assert.equal(of(actions, "emitSub").filter((a) => a.event === "recovered").length, 0);
  assert.deepEqual(of(actions, "emitSub").map((a) => a.payload.state), ["subscribed", "subscribed"]);
});

test("recovered:false is surfaced on the subscription and restarts its dedup", () => {
  const machine = connected(["chat.a"]);
  machine.message({ type: "message", channel: "chat.a", id: "x-1", offset: 500, data: 1 });
  machine.socketClosed(1001);
  machine.timerFired("reconnect");
  const frame = sent(machine.socketOpened())[0];
  const actions = machine.message({ type: "reply", id: frame.id, result: { channels: ["chat.a"], epoch: "E2", recovered: false } });
  const recovered = of(actions, "emitSub").find((a) => a.event === "recovered");
  assert.deepEqual(recovered.payload, { recovered: false, epoch: "E2" });
  assert.equal(machine.epoch, "E2");
  const delivered = machine.message({ type: "message", channel: "chat.a", id: "y-1", offset: 3, data: 2 });
  assert.equal(of(delivered, "emitSub").length, 1, "the new epoch's low offsets are delivered");
});

test("dedup by offset per channel", () => {
  const machine = connected(["a", "b"]);
  const deliver = (channel, offset) => of(machine.message({ type: "message", channel, id: channel + offset, offset }), "emitSub").length;
  assert.equal(deliver("a", 5), 1);
  assert.equal(deliver("b", 3), 1, "channels have their own positions");
  assert.equal(deliver("a", 5), 0, "a repeat is dropped");
  assert.equal(deliver("a", 4), 0, "an older one is dropped");
  assert.equal(deliver("a", 6), 1);
  assert.equal(deliver("b", 4), 1);
  assert.equal(deliver("zzz", 9), 0, "a channel not subscribed is dropped");
});

test("token: decoded exp schedules getToken before expiry; the new token goes out with refresh", () => {
  const now = 1_000_000_000_000;
  const exp = now / 1000 + 3600;
  const first = token({ sub: "alice", exp });
  assert.equal(decodeTokenPayload(first).exp, exp);
  assert.equal(decodeTokenPayload("nonsense"), null);
  assert.equal(refreshDelay(exp, now), 3600_000 - 30_000, "30 s before a long token expires");
  assert.equal(refreshDelay(now / 1000 + 10, now), 8000, "at 80% of a short token's life");
  assert.equal(refreshDelay(now / 1000 - 1, now), 0);

  const machine = new StormMachine({ transports: ["websocket"], hasTokenSource: true, now: () => now });
  let actions = machine.connect();
  assert.equal(of(actions, "fetchToken").length, 1, "getToken at connect");
  assert.equal(of(actions, "open").length, 0);
  actions = machine.tokenReceived(first);
  assert.deepEqual(of(actions, "startTimer")[0], { type: "startTimer", name: "token", delay: 3_570_000 });
  assert.equal(of(actions, "open")[0].token, first);
  machine.socketOpened();
  assert.equal(of(machine.timerFired("token"), "fetchToken").length, 1);
  const second = token({ sub: "alice", exp: exp + 3600 });
  actions = machine.tokenReceived(second);
  const refresh = sent(actions)[0];
  assert.equal(refresh.op, "refresh");
  assert.equal(refresh.token, second);
  assert.equal(of(actions, "startTimer")[0].delay, 7_170_000);
  assert.equal(of(actions, "open").length, 0, "the connection stays open");
});

test("publish: sent with its key, resent with the same key after a drop, settled once", () => {
  const machine = connected();
  let actions = machine.publish("chat.a", { text: "hi" }, "key-1");
  const first = sent(actions)[0];
  assert.deepEqual(first, { id: first.id, op: "publish", channel: "chat.a", data: { text: "hi" }, idempotency_key: "key-1" });
  machine.socketClosed(1006);
  assert.equal(sent(machine.timerFired("reconnect")).length, 0, "nothing is sent before the socket opens");
  actions = machine.socketOpened();
  const second = sent(actions).find((f) => f.op === "publish");
  assert.equal(second.idempotency_key, "key-1");
  assert.notEqual(second.id, first.id);
  assert.equal(of(machine.message({ type: "reply", id: first.id, result: {} }), "publishDone").length, 0, "a reply to the dead request is ignored");
  actions = machine.message({ type: "error", id: second.id, error: { code: "broker_unavailable", message: "down" } });
  const timer = of(actions, "startTimer")[0];
  assert.equal(timer.name, "publish:key-1");
  const third = sent(machine.timerFired(timer.name))[0];
  assert.equal(third.idempotency_key, "key-1");
  actions = machine.message({ type: "reply", id: third.id, result: { id: "key-1", offset: 7 } });
  assert.deepEqual(of(actions, "publishDone")[0], { type: "publishDone", key: "key-1", result: { id: "key-1", offset: 7 } });

  machine.publish("chat.a", 1, "key-2");
  const refused = [...machine.requests.entries()].find(([, r]) => r.key === "key-2")[0];
  actions = machine.message({ type: "error", id: refused, error: { code: "forbidden", message: "no" } });
  assert.equal(of(actions, "publishFailed")[0].error.code, "forbidden", "a refusal is not retried");
});

test("publish over HTTP (SSE transport) retries on 503 and network errors with the same key", () => {
  const machine = new StormMachine({ transports: ["sse"], random: () => 0.5 });
  let actions = machine.publish("c", "text", "k");
  assert.deepEqual(of(actions, "httpPublish")[0], { type: "httpPublish", key: "k", channel: "c", data: "text", token: null });
  assert.equal(of(machine.httpPublishAnswered("k", 0, null), "startTimer")[0].name, "publish:k");
  assert.equal(of(machine.timerFired("publish:k"), "httpPublish")[0].key, "k");
  assert.equal(of(machine.httpPublishAnswered("k", 503, { error: { code: "broker_unavailable" } }), "startTimer").length, 1);
  actions = machine.httpPublishAnswered("k", 200, { id: "k", offset: 3 });
  assert.equal(of(actions, "publishDone")[0].result.offset, 3);
  machine.publish("c", "x", "k2");
  assert.equal(of(machine.httpPublishAnswered("k2", 400, { error: { code: "invalid_channel" } }), "publishFailed")[0].error.code, "invalid_channel");
});

test("SSE fallback after WebSocket failures; the stream resumes with positions", () => {
  const machine = new StormMachine({ transports: ["websocket", "sse"], sseAfterFailures: 2, random: () => 0.5 });
  machine.subscribe("a");
  machine.subscribe("b");
  machine.connect();
  machine.socketClosed(1006);
  let actions = machine.timerFired("reconnect");
  assert.equal(of(actions, "open")[0].transport, "websocket");
  actions = machine.socketClosed(1006);
  assert.equal(actions.find((a) => a.event === "transport").payload.transport, "sse");
  actions = machine.timerFired("reconnect");
  assert.deepEqual(of(actions, "open")[0], { type: "open", transport: "sse", channels: ["a", "b"], since: null, token: null });
  machine.socketOpened();
  assert.equal(machine.subs.get("a").state, "subscribed");
  machine.message({ type: "message", channel: "a", offset: 12 }, "12,9");
  machine.message({ type: "message", channel: "b", offset: 40 }, "12,40");
  assert.equal(of(machine.message({ type: "message", channel: "b", offset: 40 }, "12,40"), "emitSub").length, 0);
  machine.socketClosed(1006);
  actions = machine.timerFired("reconnect");
  assert.equal(of(actions, "open")[0].since, "12,40");
  machine.socketOpened();
  actions = machine.message({ type: "message", channel: "a", offset: 2 }, "2,40");
  assert.deepEqual(of(actions, "emitSub").map((a) => a.event), ["recovered", "message"],
    "an offset at or below since= first on a new stream: the offsets restarted (recovered:false), delivered");
  assert.equal(of(machine.message({ type: "message", channel: "a", offset: 2 }, "2,40"), "emitSub").length, 0, "then dedup again");
});

test("publish with excludeSelf sends exclude_self: true, also on a resend", () => {
  const machine = connected();
  let frame = sent(machine.publish("chat.a", { text: "hi" }, "key-x", { excludeSelf: true }))[0];
  assert.deepEqual(frame, { id: frame.id, op: "publish", channel: "chat.a", data: { text: "hi" }, idempotency_key: "key-x", exclude_self: true });
  machine.socketClosed(1006);
  machine.timerFired("reconnect");
  frame = sent(machine.socketOpened()).find((f) => f.op === "publish");
  assert.equal(frame.exclude_self, true);
  frame = sent(machine.publish("chat.a", 1, "key-y"))[0];
  assert.equal("exclude_self" in frame, false, "absent unless asked");
});

test("excludeSelf over SSE: the client drops its own message (id = key) but keeps the position", () => {
  const machine = new StormMachine({ transports: ["sse"], random: () => 0.5 });
  machine.subscribe("a");
  machine.connect();
  machine.socketOpened();
  machine.publish("a", "mine", "k-self", { excludeSelf: true });
  assert.equal(of(machine.message({ type: "message", channel: "a", id: "k-self", offset: 5 }), "emitSub").length, 0);
  assert.equal(machine.subs.get("a").offset, 5);
  assert.equal(of(machine.message({ type: "message", channel: "a", id: "other", offset: 6 }), "emitSub").length, 1);
});

test("subscribe with since latest sends since:\"latest\"; a reconnect resumes from the offset once known", () => {
  const machine = new StormMachine({ transports: ["websocket"], random: () => 0.5 });
  machine.subscribe("prices.eur", { since: "latest" });
  machine.subscribe("plain");
  machine.connect();
  let frames = sent(machine.socketOpened());
  const latest = frames.find((f) => f.channels.includes("prices.eur"));
  assert.deepEqual(latest, { id: latest.id, op: "subscribe", channels: ["prices.eur"], since: "latest" });
  const plain = frames.find((f) => f.channels.includes("plain"));
  assert.equal(plain.since, undefined);
  machine.message({ type: "reply", id: plain.id, result: { channels: ["plain"], epoch: "E1" } });
  assert.equal(of(machine.message({ type: "message", channel: "prices.eur", id: "early", offset: 8 }), "emitSub").length, 0,
    "nothing is delivered before the latest reply (the gateway holds live messages back meanwhile)");
  let actions = machine.message({ type: "reply", id: latest.id, result: { channels: ["prices.eur"], epoch: "E1", recovered: true } });
  assert.equal(of(actions, "emitSub").find((a) => a.event === "state").payload.recovered, true);
  assert.equal(of(machine.message({ type: "message", channel: "prices.eur", id: "newest", offset: 9 }), "emitSub").length, 1);

  // Reconnect: the channel has an offset now, so it resumes from it like any other.
  machine.socketClosed(1006);
  machine.timerFired("reconnect");
  frames = sent(machine.socketOpened());
  assert.deepEqual(frames[0].since, { positions: { "prices.eur": 9 }, epoch: "E1" });

  // A latest subscription that never got a message asks for the newest again.
  const fresh = new StormMachine({ transports: ["websocket"], random: () => 0.5 });
  fresh.subscribe("state.x", { since: "latest" });
  fresh.connect();
  const first = sent(fresh.socketOpened())[0];
  actions = fresh.message({ type: "reply", id: first.id, result: { channels: ["state.x"], epoch: "E1", recovered: false, recovery_error: { code: "broker_unavailable", message: "slow" } } });
  assert.deepEqual(of(actions, "emitSub").find((a) => a.event === "recovered").payload,
    { recovered: false, epoch: "E1", latest: true, error: { code: "broker_unavailable", message: "slow" } });
  fresh.socketClosed(1006);
  fresh.timerFired("reconnect");
  assert.equal(sent(fresh.socketOpened())[0].since, "latest");
});

test("server-side subscriptions: a subscribed frame creates them, their messages are delivered and resumed", () => {
  const machine = connected(["mine"]);
  let actions = machine.message({ type: "subscribed", channels: ["inbox.alice", "mine"], epoch: "E1" });
  assert.deepEqual(of(actions, "emitSub").map((a) => a.channel + ":" + a.payload.state), ["inbox.alice:subscribed"]);
  const event = actions.find((a) => a.type === "emit" && a.event === "subscribed");
  assert.deepEqual(event.payload, { channels: ["inbox.alice", "mine"], added: ["inbox.alice"], epoch: "E1" });
  assert.equal(machine.subs.get("inbox.alice").server, true);
  assert.equal(machine.subs.get("mine").server, true, "one of ours the server holds too");
  actions = machine.message({ type: "message", channel: "inbox.alice", id: "m-1", offset: 21, data: "hi" });
  assert.equal(of(actions, "emitSub").filter((a) => a.event === "message").length, 1, "delivered, not dropped");
  machine.message({ type: "message", channel: "mine", id: "m-2", offset: 22 });

  // Reconnect: the gateway subscribes the connection to them again at connect (without a position),
  // so the client unsubscribes them first and resubscribes from its positions.
  machine.socketClosed(1001);
  machine.timerFired("reconnect");
  const frames = sent(machine.socketOpened());
  assert.deepEqual(frames.map((f) => f.op), ["unsubscribe", "subscribe"]);
  assert.deepEqual(frames[0].channels, ["mine", "inbox.alice"]);
  assert.deepEqual(frames[1].since, { positions: { mine: 22, "inbox.alice": 21 }, epoch: "E1" });
  actions = machine.message({ type: "subscribed", channels: ["inbox.alice", "mine"], epoch: "E1" });
  assert.equal(of(actions, "emitSub").length, 0, "the pending resume decides their state");
  assert.equal(of(machine.message({ type: "message", channel: "inbox.alice", id: "m-5", offset: 25 }), "emitSub").length, 0,
    "a message of the server's own subscription before the resume's reply is dropped: the replay brings it in order");
  assert.equal(machine.subs.get("inbox.alice").offset, 21);
  machine.message({ type: "reply", id: frames[0].id, result: { channels: ["mine", "inbox.alice"] } });
  actions = machine.message({ type: "reply", id: frames[1].id, result: { channels: ["mine", "inbox.alice"], epoch: "E1", recovered: true } });
  assert.deepEqual(of(actions, "emitSub").map((a) => a.payload.state), ["subscribed", "subscribed"]);
  const replay = [23, 25].map((offset) => of(machine.message({ type: "message", channel: "inbox.alice", id: "r" + offset, offset }), "emitSub").length);
  assert.deepEqual(replay, [1, 1]);
});

test("server-side subscriptions over SSE: a message of a channel the client did not name is delivered", () => {
  const machine = new StormMachine({ transports: ["sse"], random: () => 0.5, token: token({ sub: "alice", storm: { channels: ["inbox.alice"] } }) });
  let actions = machine.connect();
  const open = of(actions, "open")[0];
  assert.equal(open.serverChannels, true, "the stream opens for the token's storm.channels even with no subscription");
  machine.socketOpened();
  actions = machine.message({ type: "message", channel: "inbox.alice", id: "m-1", offset: 4, data: 1 }, "4");
  assert.deepEqual(of(actions, "emitSub").map((a) => a.event), ["state", "message"]);
  assert.equal(actions.find((a) => a.event === "subscribed").payload.channels[0], "inbox.alice");
  machine.socketClosed(1006);
  actions = machine.timerFired("reconnect");
  assert.deepEqual(of(actions, "open")[0].channels, ["inbox.alice"]);
  assert.equal(of(actions, "open")[0].since, "4");
});
