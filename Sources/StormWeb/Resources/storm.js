// storm.js: the STORM client for browsers and Node 20. An ES module with no dependencies.
//
//   import { Storm } from "/storm.js";            // served by stormd
//   const storm = new Storm("http://127.0.0.1:8080", { getToken: async () => token });
//   const chat = storm.subscribe("chat.lobby");
//   chat.on("message", (envelope) => console.log(envelope.data));
//   storm.connect();
//   await storm.publish("chat.lobby", { text: "hi" });
//
// Two layers: `StormMachine` holds every protocol decision (states, backoff, close codes, resubscribe
// positions, dedup, token refresh, publish retries) as a plain state machine that takes events and
// returns actions, with no socket, timer or clock of its own; `Storm` executes those actions with
// WebSocket, EventSource, fetch and timers. See docs/client.md and docs/protocol.md.

/** Connection states. */
export const State = Object.freeze({
  disconnected: "disconnected",
  connecting: "connecting",
  connected: "connected",
  closed: "closed",
});

/** Subscription states. */
export const SubscriptionState = Object.freeze({
  subscribing: "subscribing",
  subscribed: "subscribed",
  unsubscribed: "unsubscribed",
});

/** Close codes that mean "a new token is needed before trying again" (unauthorized, forbidden). */
const TOKEN_CLOSE_CODES = new Set([4001, 4003]);
/** Close codes that mean "this client is wrong": reconnecting would be refused the same way. */
const FATAL_CLOSE_CODES = new Set([1002, 1003, 1007, 1008]);
/** Publish errors worth retrying with the same idempotency key. */
const RETRYABLE_PUBLISH_CODES = new Set(["broker_unavailable", "rate_limited", "internal", "shutting_down"]);

const DEFAULTS = Object.freeze({
  transports: ["websocket", "sse"],
  minReconnectDelay: 500,
  maxReconnectDelay: 20000,
  sseAfterFailures: 3,
  refreshMargin: 30000,
});

/**
 * Full-jitter exponential backoff: a uniform delay in [0, min(max, min * 2^attempt)], never under
 * `min / 2` so a burst of failures cannot spin.
 */
export function backoffDelay(attempt, minDelay, maxDelay, random = Math.random) {
  const ceiling = Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 30));
  return Math.max(minDelay / 2, Math.floor(random() * ceiling));
}

/** The payload of a JWS compact JWT, or null when it is not one. Does not verify anything. */
export function decodeTokenPayload(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const binary = typeof atob === "function" ? atob(padded) : Buffer.from(padded, "base64").toString("binary");
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const payload = JSON.parse(new TextDecoder().decode(bytes));
    return payload && typeof payload === "object" ? payload : null;
  } catch (_) {
    return null;
  }
}

/**
 * Milliseconds from `nowMs` until a token that expires at `expSeconds` should be replaced: 30 s
 * (`margin`) before it expires, or at 80% of its remaining life when that is later (short tokens).
 */
export function refreshDelay(expSeconds, nowMs, margin = DEFAULTS.refreshMargin) {
  const remaining = expSeconds * 1000 - nowMs;
  if (remaining <= 0) return 0;
  return Math.floor(Math.max(remaining - margin, remaining * 0.8));
}

/** A random idempotency key (the message id the gateway stores it under). */
export function newIdempotencyKey() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  let key = "";
  for (let i = 0; i < 32; i++) key += Math.floor(Math.random() * 16).toString(16);
  return key;
}

/**
 * The protocol as a state machine: every method takes one event and returns the actions to carry out,
 * in order. No I/O, no timers, no clock: `now()` and `random()` are injected, so tests drive it step
 * by step.
 *
 * Actions: `{type:"open", transport, channels, since, token}`, `{type:"closeSocket", code}`,
 * `{type:"send", frame}`, `{type:"startTimer", name, delay}`, `{type:"cancelTimer", name}`,
 * `{type:"fetchToken"}`, `{type:"httpPublish", key, channel, data, token}`,
 * `{type:"publishDone", key, result}`, `{type:"publishFailed", key, error}`,
 * `{type:"emit", event, payload}` (client events: state, error, token, transport, subscribed) and
 * `{type:"emitSub", channel, event, payload}` (subscription events: state, message, recovered, error).
 */
export class StormMachine {
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.now = options.now || (() => Date.now());
    this.random = options.random || Math.random;
    this.hasTokenSource = Boolean(options.hasTokenSource);
    this.state = State.disconnected;
    this.token = options.token || null;
    this.tokenExp = null;
    this.needToken = false;          // a 4001/4003 close: wait for a token other than `rejectedToken`
    this.rejectedToken = null;
    this.waitingForToken = false;    // a fetchToken is out
    this.transports = this.options.transports.filter((t) => t === "websocket" || t === "sse");
    if (!this.transports.length) throw new Error("storm.js: no usable transport in " + JSON.stringify(options.transports));
    this.transport = this.transports[0];
    this.wsFailures = 0;             // consecutive WebSocket connects that never opened
    this.attempt = 0;                // consecutive failed connects, for the backoff
    this.socketOpen = false;         // the current socket reached open
    this.socketPending = false;      // a socket is being opened
    this.epoch = null;
    this.nextId = 1;
    this.requests = new Map();       // request id -> {op, channels | key}
    this.subs = new Map();           // channel -> {state, offset, requestId}
    this.publishes = new Map();      // key -> {channel, data, requestId, attempt, excludeSelf}
    this.excluded = new Map();       // SSE: key (the message id) of an excludeSelf publish -> when (ms)
    this.sseIds = [];                // channel order of the current SSE stream
    if (this.token) this.tokenExp = this.expOf(this.token);
  }

  expOf(token) {
    const payload = decodeTokenPayload(token);
    return payload && typeof payload.exp === "number" ? payload.exp : null;
  }

  // --- events from the user ----------------------------------------------------------------------

  /** Starts connecting (again): from `disconnected` or `closed`. */
  connect() {
    if (this.state === State.connecting || this.state === State.connected) return [];
    this.attempt = 0;
    const actions = [{ type: "cancelTimer", name: "reconnect" }];
    return actions.concat(this.startConnecting());
  }

  /** Closes for good (until `connect()`): no reconnect, pending publishes fail. */
  close() {
    const actions = [];
    for (const name of ["reconnect", "token"]) actions.push({ type: "cancelTimer", name });
    if (this.socketOpen || this.socketPending) actions.push({ type: "closeSocket", code: 1000 });
    this.socketOpen = this.socketPending = false;
    this.requests.clear();
    for (const [channel, sub] of this.subs) {
      if (sub.state === SubscriptionState.subscribed) actions.push(...this.setSubState(channel, SubscriptionState.subscribing));
      sub.requestId = null;
    }
    for (const [key, entry] of this.publishes) {
      actions.push({ type: "cancelTimer", name: "publish:" + key });
      actions.push({ type: "publishFailed", key, error: { code: "closed", message: "the client was closed before the gateway answered" } });
      void entry;
    }
    this.publishes.clear();
    actions.push(...this.setState(State.closed, {}));
    return actions;
  }

  /**
   * `options.since: "latest"`: start with the channel's newest stored message (docs/protocol.md, "The
   * newest message first"), asked again on a reconnect until the channel has an offset.
   */
  subscribe(channel, options = {}) {
    const existing = this.subs.get(channel);
    if (existing && existing.state !== SubscriptionState.unsubscribed) return [];
    const latest = options.since === "latest";
    this.subs.set(channel, { state: SubscriptionState.unsubscribed, offset: existing ? existing.offset : null, requestId: null, latest, server: false });
    const actions = this.setSubState(channel, SubscriptionState.subscribing);
    if (this.state !== State.connected) return actions;
    if (this.transport === "sse") return actions.concat(this.reopenSSE());
    return actions.concat(this.sendSubscribe([channel], latest ? "latest" : false));
  }

  unsubscribe(channel) {
    const sub = this.subs.get(channel);
    if (!sub || sub.state === SubscriptionState.unsubscribed) return [];
    const wasLive = sub.state === SubscriptionState.subscribed || sub.requestId !== null;
    this.subs.delete(channel);
    const actions = [{ type: "emitSub", channel, event: "state", payload: { state: SubscriptionState.unsubscribed, previous: sub.state } }];
    if (this.state !== State.connected) return actions;
    if (this.transport === "sse") return actions.concat(this.reopenSSE());
    if (wasLive) {
      const id = this.nextId++;
      this.requests.set(id, { op: "unsubscribe", channels: [channel] });
      actions.push({ type: "send", frame: { id, op: "unsubscribe", channel } });
    }
    return actions;
  }

  /**
   * Queues a publish; it is sent (and resent, with the same key) until the gateway answers.
   * `options.excludeSelf`: not delivered back to this connection (`"exclude_self": true`; over SSE,
   * where the publish is an HTTP request, the client drops the message itself by its id, the key).
   */
  publish(channel, data, key = newIdempotencyKey(), options = {}) {
    if (this.publishes.has(key)) return [];
    const excludeSelf = Boolean(options.excludeSelf);
    this.publishes.set(key, { channel, data, requestId: null, attempt: 0, excludeSelf });
    if (excludeSelf) this.rememberExcluded(key);
    return this.sendPublish(key);
  }

  /** Keys of excludeSelf publishes, for SSE: kept 60 s (as the gateway does), at most 65,536. */
  rememberExcluded(key) {
    const now = this.now();
    for (const [k, at] of this.excluded) {
      if (now - at <= 60000 && this.excluded.size < 65536) break;
      this.excluded.delete(k);
    }
    this.excluded.set(key, now);
  }

  // --- events from the token source -------------------------------------------------------------

  tokenReceived(token) {
    this.waitingForToken = false;
    if (this.state === State.closed) return [];
    const actions = [];
    if (this.needToken && token === this.rejectedToken) {
      // The same token again: it is still refused. Ask again later rather than hammer the gateway.
      actions.push(...this.scheduleReconnect({ reason: "getToken returned the refused token again" }));
      return actions;
    }
    const changed = token !== this.token;
    this.token = token;
    this.tokenExp = this.expOf(token);
    this.needToken = false;
    actions.push({ type: "emit", event: "token", payload: { exp: this.tokenExp } });
    actions.push(...this.scheduleTokenRefresh());
    if (this.state === State.connected && changed) {
      if (this.transport === "websocket") {
        const id = this.nextId++;
        this.requests.set(id, { op: "refresh" });
        actions.push({ type: "send", frame: { id, op: "refresh", token } });
      } else {
        actions.push(...this.reopenSSE());  // the stream carries the token in its URL
      }
    } else if (this.state === State.connecting && !this.socketPending && !this.socketOpen) {
      actions.push(...this.openSocket());
    } else if (this.state === State.disconnected) {
      actions.push({ type: "cancelTimer", name: "reconnect" });
      actions.push(...this.startConnecting());
    }
    return actions;
  }

  tokenFailed(error) {
    this.waitingForToken = false;
    if (this.state === State.closed) return [];
    const actions = [{ type: "emit", event: "error", payload: { code: "token", message: "getToken failed: " + String(error && error.message ? error.message : error) } }];
    if (this.state === State.connected) {
      // Keep the connection: the token is still valid for a while. Try again soon.
      actions.push({ type: "startTimer", name: "token", delay: this.options.minReconnectDelay * 4 });
      return actions;
    }
    return actions.concat(this.scheduleReconnect({ reason: "getToken failed" }));
  }

  // --- events from the socket -------------------------------------------------------------------

  socketOpened() {
    if (!this.socketPending) return [];
    this.socketPending = false;
    this.socketOpen = true;
    this.attempt = 0;
    if (this.transport === "websocket") this.wsFailures = 0;
    const actions = this.setState(State.connected, { transport: this.transport });
    if (this.transport === "sse") {
      for (const channel of this.sseIds) {
        const sub = this.subs.get(channel);
        if (!sub) continue;
        sub.newStream = true;
        if (sub.state === SubscriptionState.subscribing) actions.push(...this.setSubState(channel, SubscriptionState.subscribed));
      }
    } else {
      const fresh = [];
      const latest = [];
      const resumed = [];
      for (const [channel, sub] of this.subs) {
        if (sub.state !== SubscriptionState.subscribing) continue;
        if (sub.offset !== null && this.epoch !== null) resumed.push(channel);
        else (sub.latest ? latest : fresh).push(channel);
      }
      // A channel the gateway subscribed this connection to at connect (a server-side subscription)
      // is held again by the time our request arrives, and a subscribe of a held channel replays
      // nothing: unsubscribe it first, so the resubscribe replays what was missed from its offset.
      const held = resumed.filter((channel) => this.subs.get(channel).server);
      if (held.length) {
        const id = this.nextId++;
        this.requests.set(id, { op: "unsubscribe", channels: held });
        actions.push({ type: "send", frame: { id, op: "unsubscribe", channels: held } });
      }
      if (resumed.length) actions.push(...this.sendSubscribe(resumed, true));
      if (latest.length) actions.push(...this.sendSubscribe(latest, "latest"));
      if (fresh.length) actions.push(...this.sendSubscribe(fresh, false));
    }
    for (const key of this.publishes.keys()) actions.push(...this.sendPublish(key));
    return actions;
  }

  /** The socket closed (`code` 1006 when it failed without a close frame, or never opened). */
  socketClosed(code = 1006, reason = "") {
    const wasOpen = this.socketOpen;
    if (!this.socketOpen && !this.socketPending) return [];
    this.socketOpen = this.socketPending = false;
    if (this.state === State.closed) return [];
    const actions = [];
    this.requests.clear();
    for (const [channel, sub] of this.subs) {
      sub.requestId = null;
      if (sub.state === SubscriptionState.subscribed) actions.push(...this.setSubState(channel, SubscriptionState.subscribing));
    }
    for (const entry of this.publishes.values()) entry.requestId = null;
    if (!wasOpen && this.transport === "websocket") {
      this.wsFailures += 1;
      if (this.transports.includes("sse") && this.wsFailures >= this.options.sseAfterFailures) {
        this.transport = "sse";
        actions.push({ type: "emit", event: "transport", payload: { transport: "sse", reason: "the WebSocket failed " + this.wsFailures + " times" } });
      }
    }
    const detail = { code, reason };
    if (TOKEN_CLOSE_CODES.has(code)) {
      this.needToken = true;
      this.rejectedToken = this.token;
      actions.push({ type: "emit", event: "error", payload: { code: code === 4001 ? "unauthorized" : "forbidden", message: reason || "the gateway refused the token" } });
      if (!this.hasTokenSource) {
        actions.push(...this.setState(State.disconnected, { ...detail, willReconnect: false }));
        return actions;
      }
      actions.push(...this.setState(State.disconnected, { ...detail, willReconnect: true, waitingForToken: true }));
      this.waitingForToken = true;
      actions.push({ type: "cancelTimer", name: "token" }, { type: "fetchToken" });
      return actions;
    }
    if (FATAL_CLOSE_CODES.has(code)) {
      actions.push({ type: "emit", event: "error", payload: { code: "refused", message: reason || "the gateway closed the connection with " + code } });
      actions.push(...this.setState(State.disconnected, { ...detail, willReconnect: false }));
      return actions;
    }
    return actions.concat(this.scheduleReconnect(detail));
  }

  /** A frame from the WebSocket, parsed (an object), or an SSE message `{type:"message",…}` envelope. */
  message(frame, sseLastEventId) {
    if (!frame || typeof frame !== "object") return [];
    if (frame.type === "message") return this.deliver(frame, sseLastEventId);
    if (frame.type === "reply") return this.reply(frame.id, frame.result || {});
    if (frame.type === "error") return this.error(frame.id, frame.error || {});
    if (frame.type === "subscribed") return this.serverSubscribed(frame);
    return [];
  }

  /**
   * `{"type":"subscribed","channels":[…],"epoch":"E"}`: the gateway subscribed this connection at
   * connect (a token's `storm.channels`, the connect hook). Unknown channels become subscriptions
   * (`server: true`) like any other: their messages are delivered, their offsets kept and resumed.
   */
  serverSubscribed(frame) {
    const channels = Array.isArray(frame.channels) ? frame.channels.filter((c) => typeof c === "string") : [];
    const actions = [];
    if (typeof frame.epoch === "string") {
      if (this.epoch !== null && frame.epoch !== this.epoch) {
        for (const sub of this.subs.values()) sub.offset = null;
      }
      this.epoch = frame.epoch;
    }
    const added = [];
    for (const channel of channels) {
      const sub = this.subs.get(channel);
      if (sub) {
        sub.server = true;
        // Ours already: our own request (pending, or answered) decides its state.
        if (sub.requestId === null && sub.state === SubscriptionState.subscribing) actions.push(...this.setSubState(channel, SubscriptionState.subscribed));
        continue;
      }
      this.subs.set(channel, { state: SubscriptionState.unsubscribed, offset: null, requestId: null, latest: false, server: true });
      added.push(channel);
      actions.push(...this.setSubState(channel, SubscriptionState.subscribed, { server: true }));
    }
    actions.push({ type: "emit", event: "subscribed", payload: { channels, added, epoch: typeof frame.epoch === "string" ? frame.epoch : null } });
    return actions;
  }

  /** The answer to an `httpPublish` action: `status` (0 when the request failed) and the parsed body. */
  httpPublishAnswered(key, status, body) {
    const entry = this.publishes.get(key);
    if (!entry) return [];
    if (status >= 200 && status < 300) {
      this.publishes.delete(key);
      return [{ type: "publishDone", key, result: body || {} }];
    }
    const error = body && body.error ? body.error : { code: status ? "http_" + status : "unreachable", message: status ? "HTTP " + status : "the gateway is unreachable" };
    if (status === 0 || status === 429 || status >= 500 && status !== 507) return this.retryPublish(key);
    this.publishes.delete(key);
    return [{ type: "publishFailed", key, error }];
  }

  timerFired(name) {
    if (this.state === State.closed) return [];
    if (name === "reconnect") {
      if (this.state !== State.disconnected) return [];
      return this.startConnecting();
    }
    if (name === "token") {
      if (!this.hasTokenSource || this.waitingForToken) return [];
      this.waitingForToken = true;
      return [{ type: "fetchToken" }];
    }
    if (name.startsWith("publish:")) return this.sendPublish(name.slice("publish:".length));
    return [];
  }

  // --- internals ----------------------------------------------------------------------------------

  setState(state, detail) {
    if (this.state === state) return [];
    const previous = this.state;
    this.state = state;
    return [{ type: "emit", event: "state", payload: { state, previous, ...detail } }];
  }

  setSubState(channel, state, detail = {}) {
    const sub = this.subs.get(channel);
    if (!sub || sub.state === state) return [];
    const previous = sub.state;
    sub.state = state;
    return [{ type: "emitSub", channel, event: "state", payload: { state, previous, ...detail } }];
  }

  startConnecting() {
    const actions = this.setState(State.connecting, { attempt: this.attempt, transport: this.transport });
    if (this.hasTokenSource && (this.needToken || !this.token || this.tokenExpired())) {
      if (!this.waitingForToken) {
        this.waitingForToken = true;
        actions.push({ type: "fetchToken" });
      }
      return actions;
    }
    return actions.concat(this.openSocket());
  }

  tokenExpired() {
    return this.tokenExp !== null && this.tokenExp * 1000 <= this.now();
  }

  openSocket() {
    this.socketPending = true;
    this.socketOpen = false;
    if (this.transport === "sse") {
      const channels = this.liveChannels();
      this.sseIds = channels;
      const claimed = this.claimedChannels();
      // since= must give one position per channel of the stream, the token's storm.channels included:
      // when some of them are not named (none of their messages arrived yet), the list would not match.
      const since = claimed.every((c) => channels.includes(c)) ? this.ssePositions(channels) : null;
      const action = { type: "open", transport: "sse", channels, since, token: this.token };
      if (claimed.length) action.serverChannels = true;
      return [action];
    }
    return [{ type: "open", transport: "websocket", token: this.token }];
  }

  /** The token's `storm.channels` (server-side subscriptions), decoded without verifying. */
  claimedChannels() {
    const payload = this.token ? decodeTokenPayload(this.token) : null;
    const claimed = payload && payload.storm && Array.isArray(payload.storm.channels) ? payload.storm.channels : [];
    return claimed.filter((c) => typeof c === "string");
  }

  liveChannels() {
    return [...this.subs.keys()].filter((c) => this.subs.get(c).state !== SubscriptionState.unsubscribed);
  }

  /** `since` for an SSE stream: every channel's offset in order, when all are known (else none). */
  ssePositions(channels) {
    if (!channels.length) return null;
    const offsets = channels.map((c) => this.subs.get(c).offset);
    if (offsets.some((o) => o === null)) return null;
    return offsets.join(",");
  }

  reopenSSE() {
    const actions = [];
    if (this.socketOpen || this.socketPending) actions.push({ type: "closeSocket", code: 1000 });
    this.socketOpen = false;
    this.socketPending = false;
    return actions.concat(this.openSocket());
  }

  scheduleReconnect(detail) {
    const delay = backoffDelay(this.attempt, this.options.minReconnectDelay, this.options.maxReconnectDelay, this.random);
    this.attempt += 1;
    const actions = this.setState(State.disconnected, { ...detail, willReconnect: true, retryIn: delay, attempt: this.attempt });
    actions.push({ type: "startTimer", name: "reconnect", delay });
    return actions;
  }

  scheduleTokenRefresh() {
    if (!this.hasTokenSource || this.tokenExp === null) return [{ type: "cancelTimer", name: "token" }];
    return [{ type: "startTimer", name: "token", delay: refreshDelay(this.tokenExp, this.now(), this.options.refreshMargin) }];
  }

  /** `mode`: `true` resumes from the channels' positions, `"latest"` asks for the newest message first. */
  sendSubscribe(channels, mode) {
    const id = this.nextId++;
    const frame = { id, op: "subscribe", channels };
    const resume = mode === true;
    const latest = mode === "latest";
    if (resume) {
      const positions = {};
      for (const channel of channels) positions[channel] = this.subs.get(channel).offset;
      frame.since = { positions, epoch: this.epoch };
    } else if (latest) {
      frame.since = "latest";
    }
    this.requests.set(id, { op: "subscribe", channels, resume, latest });
    for (const channel of channels) this.subs.get(channel).requestId = id;
    return [{ type: "send", frame }];
  }

  sendPublish(key) {
    const entry = this.publishes.get(key);
    if (!entry) return [];
    if (this.transport === "sse") {
      return [{ type: "httpPublish", key, channel: entry.channel, data: entry.data, token: this.token }];
    }
    if (this.state !== State.connected || !this.socketOpen || entry.requestId !== null) return [];
    const id = this.nextId++;
    entry.requestId = id;
    this.requests.set(id, { op: "publish", key });
    const frame = { id, op: "publish", channel: entry.channel, data: entry.data, idempotency_key: key };
    if (entry.excludeSelf) frame.exclude_self = true;
    return [{ type: "send", frame }];
  }

  retryPublish(key) {
    const entry = this.publishes.get(key);
    if (!entry) return [];
    entry.requestId = null;
    const delay = backoffDelay(entry.attempt, this.options.minReconnectDelay, this.options.maxReconnectDelay, this.random);
    entry.attempt += 1;
    return [{ type: "startTimer", name: "publish:" + key, delay }];
  }

  deliver(envelope, sseLastEventId) {
    const channel = envelope.channel;
    const sub = this.subs.get(channel);
    const actions = [];
    if (typeof sseLastEventId === "string" && sseLastEventId) this.absorbSSEPositions(sseLastEventId, channel, envelope.offset);
    if (!sub && this.transport === "sse" && typeof channel === "string" && channel) {
      // A channel the stream carries that we did not name: the token's storm.channels (server-side).
      this.subs.set(channel, { state: SubscriptionState.unsubscribed, offset: null, requestId: null, latest: false, server: true });
      // Not added to sseIds: the stream's ids list its channels in the gateway's order (named ones,
      // then the token's); the next stream names it, and its position comes from this message on.
      actions.push(...this.setSubState(channel, SubscriptionState.subscribed, { server: true }));
      actions.push({ type: "emit", event: "subscribed", payload: { channels: [channel], added: [channel], epoch: null } });
      return actions.concat(this.deliver(envelope));
    }
    if (!sub || sub.state === SubscriptionState.unsubscribed) return actions;
    if (this.transport === "websocket" && sub.requestId !== null) {
      const pending = this.requests.get(sub.requestId);
      // A resume or "latest" replays from the position once it is answered; anything before the
      // reply came from a subscription the connection already held (a server-side one) and is part
      // of that replay: drop it rather than move the position past what is still to come.
      if (pending && (pending.resume || pending.latest)) return actions;
    }
    if (this.transport === "sse" && this.excluded.has(envelope.id)) {
      if (typeof envelope.offset === "number" && (sub.offset === null || envelope.offset > sub.offset)) sub.offset = envelope.offset;
      return actions;  // our own excludeSelf publish, which went out over HTTP
    }
    if (typeof envelope.offset === "number") {
      const restarted = sub.newStream && sub.offset !== null && envelope.offset <= sub.offset;
      sub.newStream = false;
      if (restarted) {
        // SSE carries no epoch, but a stream opened with since=N never replays N or older: a lower
        // offset first means the offsets started again (a new epoch), so recovery was not possible.
        actions.push({ type: "emitSub", channel, event: "recovered", payload: { recovered: false, epoch: null } });
      } else if (sub.offset !== null && envelope.offset <= sub.offset) {
        return actions;  // a repeat: already delivered
      }
      sub.offset = envelope.offset;
    }
    actions.push({ type: "emitSub", channel, event: "message", payload: envelope });
    return actions;
  }

  /** An SSE event id names every channel's position (`12,40,7`, in stream order) or one offset. */
  absorbSSEPositions(lastEventId, channel, offset) {
    const parts = lastEventId.split(",");
    if (parts.length !== this.sseIds.length || parts.length < 2) return;
    parts.forEach((part, index) => {
      const value = Number(part);
      const sub = this.subs.get(this.sseIds[index]);
      // Positions of other channels advance the resume point; the message's own channel is set by dedup.
      if (sub && Number.isInteger(value) && this.sseIds[index] !== channel && (sub.offset === null || value > sub.offset)) sub.offset = value;
    });
    void offset;
  }

  reply(id, result) {
    const request = this.requests.get(id);
    if (!request) return [];
    this.requests.delete(id);
    const actions = [];
    if (request.op === "subscribe") {
      if (typeof result.epoch === "string") {
        if (this.epoch !== null && result.epoch !== this.epoch && !request.resume) {
          // A new epoch (the stream was recreated): older offsets mean nothing now.
          for (const sub of this.subs.values()) sub.offset = null;
        }
        this.epoch = result.epoch;
      }
      for (const channel of request.channels) {
        const sub = this.subs.get(channel);
        if (!sub || sub.requestId !== id) continue;
        sub.requestId = null;
        const asked = request.resume || request.latest;
        if (asked && result.recovered === false) {
          const payload = { recovered: false, epoch: result.epoch };
          if (request.latest) payload.latest = true;
          if (result.recovery_error) payload.error = result.recovery_error;
          if (request.resume) sub.offset = null;  // offsets of the old epoch or removed history: start dedup afresh
          actions.push({ type: "emitSub", channel, event: "recovered", payload });
        }
        actions.push(...this.setSubState(channel, SubscriptionState.subscribed, { recovered: asked ? result.recovered !== false : undefined }));
      }
    } else if (request.op === "publish") {
      this.publishes.delete(request.key);
      actions.push({ type: "cancelTimer", name: "publish:" + request.key });
      actions.push({ type: "publishDone", key: request.key, result });
    } else if (request.op === "refresh") {
      if (typeof result.exp === "number") this.tokenExp = result.exp;
    }
    return actions;
  }

  error(id, error) {
    const request = this.requests.get(id);
    const actions = [];
    if (!request) {
      actions.push({ type: "emit", event: "error", payload: error });
      return actions;
    }
    this.requests.delete(id);
    if (request.op === "subscribe") {
      for (const channel of request.channels) {
        const sub = this.subs.get(channel);
        if (!sub || sub.requestId !== id) continue;
        this.subs.delete(channel);
        actions.push({ type: "emitSub", channel, event: "error", payload: error });
        actions.push({ type: "emitSub", channel, event: "state", payload: { state: SubscriptionState.unsubscribed, previous: sub.state, error } });
      }
    } else if (request.op === "publish") {
      if (RETRYABLE_PUBLISH_CODES.has(error.code)) return this.retryPublish(request.key);
      this.publishes.delete(request.key);
      actions.push({ type: "publishFailed", key: request.key, error });
    } else {
      actions.push({ type: "emit", event: "error", payload: error });
    }
    return actions;
  }
}

/** A small event emitter: `on(event, fn)` returns a function that removes the listener. */
class Emitter {
  constructor() {
    this.listeners = new Map();
  }
  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }
  off(event, fn) {
    const set = this.listeners.get(event);
    if (set) set.delete(fn);
  }
  emit(event, payload) {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(payload);
      } catch (error) {
        setTimeout(() => { throw error; }, 0);  // a listener's bug must not break the client
      }
    }
  }
}

/** One channel's subscription: `state`, `offset` (last delivered), events `state`, `message`, `recovered`, `error`. */
export class Subscription extends Emitter {
  constructor(client, channel) {
    super();
    this.client = client;
    this.channel = channel;
    this.state = SubscriptionState.unsubscribed;
  }
  /** The offset of the last message delivered, or null. */
  get offset() {
    const sub = this.client.machine.subs.get(this.channel);
    return sub ? sub.offset : null;
  }
  unsubscribe() {
    this.client.unsubscribe(this.channel);
  }
}

/**
 * The client: `new Storm(url, options)`, then `subscribe`, `publish`, `connect`, `close`.
 *
 * `url` is the gateway's HTTP base (`http://127.0.0.1:8080`; in a browser the page's origin by
 * default). Options: `WebSocket`, `EventSource`, `fetch` (constructors/functions; default the global
 * ones), `transports` (`["websocket","sse"]`), `token`, `getToken` (async, returns a token),
 * `minReconnectDelay` (500 ms), `maxReconnectDelay` (20000 ms), `sseAfterFailures` (3).
 */
export class Storm extends Emitter {
  constructor(url, options = {}) {
    super();
    const base = url || (typeof location !== "undefined" ? location.origin : "");
    this.base = String(base).replace(/\/+$/, "");
    this.WebSocket = options.WebSocket || globalThis.WebSocket || null;
    this.EventSource = options.EventSource || globalThis.EventSource || null;
    this.fetch = options.fetch || (globalThis.fetch ? globalThis.fetch.bind(globalThis) : null);
    this.getToken = options.getToken || null;
    let transports = options.transports || DEFAULTS.transports;
    if (!this.WebSocket) transports = transports.filter((t) => t !== "websocket");
    if (!this.EventSource) transports = transports.filter((t) => t !== "sse");
    if (!transports.length) throw new Error("storm.js: no transport available (pass a WebSocket constructor in the options, or EventSource for SSE)");
    this.machine = new StormMachine({ ...options, transports, hasTokenSource: Boolean(this.getToken) });
    this.socket = null;
    this.timers = new Map();
    this.subscriptions = new Map();
    this.pendingPublishes = new Map();
  }

  get state() {
    return this.machine.state;
  }

  get transport() {
    return this.machine.transport;
  }

  connect() {
    this.run(this.machine.connect());
    return this;
  }

  close() {
    this.run(this.machine.close());
  }

  /** Replaces the token (sent with `refresh` on an open WebSocket, or used for the next connect). */
  setToken(token) {
    this.run(this.machine.tokenReceived(token));
  }

  /**
   * The subscription to `channel` (the same object while it lives); subscribes when not yet.
   * `options.since: "latest"` starts with the channel's newest stored message.
   */
  subscribe(channel, options = {}) {
    let subscription = this.subscriptions.get(channel);
    if (!subscription) {
      subscription = new Subscription(this, channel);
      this.subscriptions.set(channel, subscription);
    }
    this.run(this.machine.subscribe(channel, options));
    return subscription;
  }

  /** The live subscription to `channel` (one of ours or a server-side one), or undefined. */
  subscription(channel) {
    return this.subscriptions.get(channel);
  }

  unsubscribe(channel) {
    this.run(this.machine.unsubscribe(channel));
  }

  /**
   * Publishes `data` (any JSON value; over HTTP a string is sent as the body's text) and resolves
   * with the gateway's answer `{id, channel, ts, offset}`. Retried with the same `idempotencyKey`
   * (generated when not given) until the gateway answers, so it is stored once. `excludeSelf: true`:
   * the message is not delivered back to this client (every other subscriber gets it).
   */
  publish(channel, data, options = {}) {
    const key = options.idempotencyKey || newIdempotencyKey();
    const existing = this.pendingPublishes.get(key);
    if (existing) return existing.promise;
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    this.pendingPublishes.set(key, { promise, resolve, reject });
    this.run(this.machine.publish(channel, data, key, { excludeSelf: options.excludeSelf }));
    return promise;
  }

  // --- executing actions ------------------------------------------------------------------------

  run(actions) {
    for (const action of actions) this.execute(action);
  }

  execute(action) {
    switch (action.type) {
      case "open": return action.transport === "sse" ? this.openSSE(action) : this.openWebSocket(action);
      case "closeSocket": return this.closeSocket(action.code);
      case "send": return this.send(action.frame);
      case "startTimer": return this.startTimer(action.name, action.delay);
      case "cancelTimer": return this.cancelTimer(action.name);
      case "fetchToken": return this.fetchToken();
      case "httpPublish": return this.httpPublish(action);
      case "publishDone": return this.settle(action.key, true, action.result);
      case "publishFailed": return this.settle(action.key, false, action.error);
      case "emit":
        if (action.event === "subscribed") {
          const subscriptions = action.payload.channels.map((c) => this.subscriptions.get(c)).filter(Boolean);
          return this.emit("subscribed", { ...action.payload, subscriptions });
        }
        return this.emit(action.event, action.payload);
      case "emitSub": return this.emitSub(action.channel, action.event, action.payload);
      default: return undefined;
    }
  }

  emitSub(channel, event, payload) {
    let subscription = this.subscriptions.get(channel);
    if (!subscription && this.machine.subs.has(channel)) {
      // A server-side subscription: the gateway subscribed us (storm.channels, the connect hook).
      subscription = new Subscription(this, channel);
      subscription.server = true;
      this.subscriptions.set(channel, subscription);
    }
    if (!subscription) return;
    if (event === "state") {
      subscription.state = payload.state;
      if (payload.state === SubscriptionState.unsubscribed && !this.machine.subs.has(channel)) this.subscriptions.delete(channel);
    }
    subscription.emit(event, payload);
    if (event === "message") this.emit("message", payload);
  }

  settle(key, ok, value) {
    const pending = this.pendingPublishes.get(key);
    if (!pending) return;
    this.pendingPublishes.delete(key);
    if (ok) {
      pending.resolve(value);
    } else {
      const error = new Error(value && value.message ? value.message : "publish failed");
      error.code = value && value.code;
      pending.reject(error);
    }
  }

  startTimer(name, delay) {
    this.cancelTimer(name);
    const handle = setTimeout(() => {
      this.timers.delete(name);
      this.run(this.machine.timerFired(name));
    }, delay);
    if (handle && typeof handle.unref === "function" && name !== "reconnect" && !name.startsWith("publish:")) handle.unref();
    this.timers.set(name, handle);
  }

  cancelTimer(name) {
    const handle = this.timers.get(name);
    if (handle !== undefined) clearTimeout(handle);
    this.timers.delete(name);
  }

  async fetchToken() {
    let token;
    try {
      token = await this.getToken();
    } catch (error) {
      this.run(this.machine.tokenFailed(error));
      return;
    }
    if (typeof token !== "string" || !token) {
      this.run(this.machine.tokenFailed(new Error("getToken returned no token")));
      return;
    }
    this.run(this.machine.tokenReceived(token));
  }

  authHeaders(token) {
    return token ? { Authorization: "Bearer " + token } : {};
  }

  openWebSocket(action) {
    const url = new URL(this.base + "/ws");
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (action.token) url.searchParams.set("token", action.token);
    let socket;
    try {
      socket = new this.WebSocket(url.toString());
    } catch (_) {
      queueMicrotask(() => this.run(this.machine.socketClosed(1006, "the WebSocket could not be created")));
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (this.socket === socket) this.run(this.machine.socketOpened());
    };
    socket.onmessage = (event) => {
      if (this.socket !== socket) return;
      let frame;
      try {
        frame = JSON.parse(typeof event.data === "string" ? event.data : String(event.data));
      } catch (_) {
        return;
      }
      this.run(this.machine.message(frame));
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.run(this.machine.socketClosed(event && event.code ? event.code : 1006, event && event.reason ? event.reason : ""));
    };
    socket.onerror = () => { /* onclose follows */ };
  }

  openSSE(action) {
    if (!action.channels.length && !action.serverChannels) {
      // Nothing to stream: the client is "connected" for publishing over HTTP.
      this.socket = { close() {} };
      queueMicrotask(() => this.run(this.machine.socketOpened()));
      return;
    }
    const params = new URLSearchParams();
    for (const channel of action.channels) params.append("subject", channel);
    if (action.since) params.set("since", action.since);
    if (action.token) params.set("token", action.token);
    const url = this.base + "/events?" + params.toString();
    const source = new this.EventSource(url);
    this.socket = source;
    let opened = false;
    source.onopen = () => {
      if (this.socket !== source) return;
      opened = true;
      this.run(this.machine.socketOpened());
    };
    source.onmessage = (event) => {
      if (this.socket !== source) return;
      let envelope;
      try {
        envelope = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      this.run(this.machine.message(envelope, event.lastEventId));
    };
    source.onerror = () => {
      if (this.socket !== source) return;
      // Our reconnects, not EventSource's: each carries the positions (since=) and a fresh token.
      source.close();
      this.socket = null;
      if (opened) {
        this.run(this.machine.socketClosed(1006, "stream lost"));
      } else {
        this.diagnose(url, action.token);
      }
    };
  }

  /** A stream that never opened: one plain request tells a refusal (401, 403, 400) from a gateway that is down. */
  async diagnose(url, token) {
    let code = 1006;
    let reason = "gateway unreachable";
    if (this.fetch) {
      const controller = new AbortController();
      try {
        const response = await this.fetch(url, { headers: this.authHeaders(token), signal: controller.signal, cache: "no-store" });
        if (!response.ok) {
          reason = await errorText(response);
          if (response.status === 401) code = 4001;
          else if (response.status === 403) code = 4003;
          else if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) code = 1008;
        } else {
          reason = "stream failed";
        }
      } catch (_) {
        // network error: the gateway is down or restarting
      } finally {
        controller.abort();
      }
    }
    if (this.socket !== null) return;  // something reopened meanwhile
    this.run(this.machine.socketClosed(code, reason));
  }

  closeSocket(code) {
    const socket = this.socket;
    this.socket = null;
    if (!socket) return;
    try {
      socket.close(code);
    } catch (_) {
      try { socket.close(); } catch (_) { /* already closed */ }
    }
  }

  send(frame) {
    if (this.socket && typeof this.socket.send === "function") this.socket.send(JSON.stringify(frame));
  }

  async httpPublish(action) {
    let status = 0;
    let body = null;
    try {
      const response = await this.fetch(this.base + "/publish?subject=" + encodeURIComponent(action.channel), {
        method: "POST",
        headers: { "Content-Type": "application/octet-stream", "Idempotency-Key": action.key, ...this.authHeaders(action.token) },
        body: new TextEncoder().encode(typeof action.data === "string" ? action.data : JSON.stringify(action.data)),
        cache: "no-store",
      });
      status = response.status;
      const text = await response.text();
      try { body = JSON.parse(text); } catch (_) { body = { error: { code: "http_" + status, message: "HTTP " + status + (text ? ": " + text.slice(0, 200) : "") } }; }
    } catch (_) {
      status = 0;
    }
    this.run(this.machine.httpPublishAnswered(action.key, status, body));
  }
}

/** The message of a STORM JSON error body, or the raw text when it is not one. */
export async function errorText(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error.message === "string") return body.error.code + ": " + body.error.message;
  } catch (_) { /* not JSON: show as is */ }
  return "HTTP " + response.status + (text ? ": " + text.slice(0, 200) : "");
}
