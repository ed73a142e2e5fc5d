/// The web dashboard's files, embedded as string literals so stormd is one self-contained binary.
///
/// No SwiftPM resources, no build step, no CDN: edit the page here. Raw string literals (`#"""`) keep
/// JavaScript's backslashes as they are; a line may not contain a quote-quote-quote-hash sequence or
/// a backslash-hash.
enum WebAssets {
    /// The page itself: markup only; behaviour comes from `appJS` (no inline script, so the CSP can forbid it).
    static let indexHTML = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>STORM</title>
<link rel="icon" href="/ui/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/ui/app.css">
<script src="/ui/app.js" defer></script>
</head>
<body>
<header>
  <h1>STORM</h1>
  <span id="status" class="status" data-state="idle" role="status" aria-live="polite">starting</span>
  <span id="status-detail" class="detail"></span>
</header>
<main>
  <section id="watch" aria-labelledby="watch-title">
    <h2 id="watch-title">Channels</h2>
    <form id="watch-form" autocomplete="off">
      <input id="watch-channel" name="channel" placeholder="channel, e.g. chat.lobby" maxlength="255" spellcheck="false" required>
      <button type="submit">Watch</button>
    </form>
    <p id="watch-error" class="error" hidden></p>
    <table id="channels">
      <thead><tr><th>channel</th><th class="num">messages</th><th class="num">per second</th><th></th></tr></thead>
      <tbody id="channel-rows"></tbody>
    </table>
    <p id="channels-empty" class="hint">No channel watched: add one above.</p>
  </section>

  <section id="publish" aria-labelledby="publish-title">
    <h2 id="publish-title">Publish</h2>
    <form id="publish-form" autocomplete="off">
      <input id="publish-channel" name="channel" placeholder="channel" maxlength="255" spellcheck="false" required>
      <textarea id="publish-payload" name="payload" rows="3" placeholder="payload: JSON or text" spellcheck="false"></textarea>
      <button id="publish-submit" type="submit">Publish</button>
    </form>
    <p id="publish-result" class="result" data-outcome=""></p>
  </section>

  <section id="gateway" aria-labelledby="gateway-title">
    <h2 id="gateway-title">Gateway</h2>
    <dl id="figures">
      <dt>ready</dt><dd id="fig-ready">–</dd>
      <dt>version</dt><dd id="fig-version">–</dd>
      <dt>instance</dt><dd id="fig-instance">–</dd>
      <dt>broker</dt><dd id="fig-broker">–</dd>
      <dt>connections</dt><dd id="fig-connections">–</dd>
      <dt>published</dt><dd id="fig-published">–</dd>
      <dt>delivered</dt><dd id="fig-delivered">–</dd>
      <dt>fan-out latency</dt><dd id="fig-latency">–</dd>
      <dt>dropped</dt><dd id="fig-dropped">–</dd>
      <dt>client errors</dt><dd id="fig-errors">–</dd>
    </dl>
    <p id="figures-error" class="error" hidden></p>
  </section>

  <section id="auth" aria-labelledby="auth-title">
    <h2 id="auth-title">Token</h2>
    <form id="token-form" autocomplete="off">
      <input id="token" name="token" type="password" placeholder="bearer token (optional)" spellcheck="false">
      <button type="submit">Apply</button>
    </form>
    <p class="hint">Also read from the address: <code>#token=…</code>. Sent as <code>?token=</code> on the event stream and as <code>Authorization: Bearer</code> on requests.</p>
  </section>

  <section id="messages" aria-labelledby="messages-title">
    <h2 id="messages-title">Messages <button id="clear-messages" type="button" class="small">clear</button></h2>
    <ol id="message-list" reversed></ol>
  </section>
</main>
</body>
</html>
"""#

    /// The page's styles.
    static let appCSS = #"""
:root {
  --fg: #1d232b; --muted: #5d6773; --line: #d9dee4; --bg: #f6f7f9; --card: #fff;
  --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --accent: #0b5cad;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: var(--bg);
}
* { box-sizing: border-box; }
body { margin: 0; }
header { display: flex; align-items: center; gap: 12px; padding: 10px 20px; background: #14202e; color: #fff; }
header h1 { font-size: 18px; margin: 0 8px 0 0; letter-spacing: .08em; }
header .detail { color: #c5d0dc; font-size: 13px; overflow-wrap: anywhere; }
.status { padding: 2px 10px; border-radius: 999px; font-weight: 600; font-size: 12px; text-transform: uppercase; background: #59636e; }
.status[data-state="connected"] { background: var(--ok); }
.status[data-state="connecting"], .status[data-state="reconnecting"] { background: var(--warn); }
.status[data-state="refused"] { background: var(--bad); }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 16px; padding: 16px 20px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; min-width: 0; }
section#messages { grid-column: 1 / -1; }
h2 { font-size: 15px; margin: 0 0 10px; display: flex; align-items: center; gap: 8px; }
form { display: flex; gap: 8px; flex-wrap: wrap; }
input, textarea { flex: 1 1 180px; font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; padding: 6px 8px; border: 1px solid var(--line); border-radius: 6px; }
textarea { flex-basis: 100%; resize: vertical; }
button { font: inherit; padding: 5px 14px; border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 6px; cursor: pointer; }
button:disabled { opacity: .6; cursor: default; }
button.small { padding: 1px 8px; font-size: 12px; background: #fff; color: var(--accent); }
table { width: 100%; border-collapse: collapse; margin-top: 10px; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid var(--line); overflow-wrap: anywhere; }
th { color: var(--muted); font-weight: 500; font-size: 12px; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
td.channel { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 14px; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
dd[data-ready="true"] { color: var(--ok); }
dd[data-ready="false"] { color: var(--bad); }
.hint { color: var(--muted); font-size: 12px; margin: 8px 0 0; }
.error { color: var(--bad); margin: 8px 0 0; overflow-wrap: anywhere; }
.result { margin: 8px 0 0; min-height: 1.4em; overflow-wrap: anywhere; }
.result[data-outcome="ok"] { color: var(--ok); }
.result[data-outcome="error"] { color: var(--bad); }
#message-list { list-style: none; margin: 0; padding: 0; max-height: 60vh; overflow: auto; font: 12.5px ui-monospace, SFMono-Regular, Menlo, monospace; }
.message { display: grid; grid-template-columns: 95px minmax(90px, 200px) 1fr max-content; gap: 10px; padding: 3px 4px; border-bottom: 1px solid #eef0f3; }
.message time, .message .id { color: var(--muted); }
.message .channel { color: var(--accent); overflow-wrap: anywhere; }
.message .data { white-space: pre-wrap; overflow-wrap: anywhere; }
.message .data[data-encoding="base64"] { color: var(--warn); }
"""#

    /// The page's behaviour: channels watched over one EventSource, publishing with fetch, gateway figures from `/metrics` and `/readyz`. Renders untrusted data with `textContent` only.
    static let appJS = #"""
// STORM web dashboard: plain JavaScript, no dependencies, served by stormd itself.
//
// Everything received (messages, channel names, error texts, metric labels) is untrusted and is
// rendered with textContent only, never as HTML.
"use strict";

(() => {
  const MAX_MESSAGES = 500;          // rows kept in the message list
  const RATE_WINDOW_MS = 10000;      // per-channel rates are averaged over this window
  const SEEN_IDS = 2000;             // ids remembered to drop duplicates a resumed stream replays
  const METRICS_EVERY_MS = 2000;
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 5000;
  const MAX_CHANNELS = 128;          // the gateway's default --max-channels-per-connection
  const CHANNEL_PATTERN = /^[A-Za-z0-9_\-:@=]+(\.[A-Za-z0-9_\-:@=]+)*$/;

  const $ = (id) => document.getElementById(id);

  const state = {
    channels: [],                    // watched channel names, in the order they were added
    stats: new Map(),                // channel -> { count, arrivals: [ms], row }
    token: "",
    source: null,                    // the current EventSource
    opened: false,                   // whether the current EventSource reached onopen
    lastEventId: "",
    attempt: 0,                      // consecutive failed connects
    reconnects: 0,                   // successful re-opens after a drop
    retryTimer: 0,
    seen: new Set(),
    seenOrder: [],
    dropped: false,                  // the stream was lost and has not reopened since
    previousMetrics: null,
  };

  // --- helpers ----------------------------------------------------------------------------------

  function validChannel(name) {
    return name.length > 0 && new TextEncoder().encode(name).length <= 255 && CHANNEL_PATTERN.test(name);
  }

  function authHeaders() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  function setText(id, text) {
    $(id).textContent = text;
  }

  function formatNumber(value) {
    if (!Number.isFinite(value)) return "–";
    return Math.abs(value) >= 100 || Number.isInteger(value) ? Math.round(value).toLocaleString("en-US") : value.toFixed(1);
  }

  function formatTime(ms) {
    const date = new Date(ms);
    const pad = (n, w) => String(n).padStart(w, "0");
    return pad(date.getHours(), 2) + ":" + pad(date.getMinutes(), 2) + ":" + pad(date.getSeconds(), 2) + "." + pad(date.getMilliseconds(), 3);
  }

  /** The error message of a STORM JSON error body, or the raw text when it is not one. */
  async function errorText(response) {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      if (body && body.error && typeof body.error.message === "string") return body.error.code + ": " + body.error.message;
    } catch (_) { /* not JSON: show as is */ }
    return "HTTP " + response.status + (text ? ": " + text.slice(0, 200) : "");
  }

  // --- the address: #channels=a,b&token=… -------------------------------------------------------

  function readFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = params.get("token");
    if (token !== null) {
      state.token = token;
      sessionStorage.setItem("storm.token", token);
    } else {
      state.token = sessionStorage.getItem("storm.token") || "";
    }
    const channels = (params.get("channels") || params.get("channel") || "").split(",").map((c) => c.trim()).filter(validChannel);
    return [...new Set(channels)].slice(0, MAX_CHANNELS);
  }

  /** Keeps the watched channels in the address (so a reload or a link keeps them); never the token. */
  function writeFragment() {
    const hash = state.channels.length ? "#channels=" + state.channels.map(encodeURIComponent).join(",") : "";
    history.replaceState(null, "", location.pathname + location.search + hash);
  }

  // --- connection status ------------------------------------------------------------------------

  function setStatus(kind, detail) {
    const labels = { idle: "idle", connecting: "connecting", connected: "connected", reconnecting: "reconnecting", refused: "refused" };
    const status = $("status");
    status.dataset.state = kind;
    status.textContent = labels[kind] || kind;
    setText("status-detail", detail || "");
  }

  function connectedDetail() {
    const parts = [state.channels.length + (state.channels.length === 1 ? " channel" : " channels")];
    if (state.reconnects) parts.push(state.reconnects + (state.reconnects === 1 ? " reconnect" : " reconnects"));
    if (state.lastEventId) parts.push("last event " + state.lastEventId);
    return parts.join(" · ");
  }

  // --- the event stream -------------------------------------------------------------------------

  /**
   * Opens one EventSource for all watched channels. Reconnects are ours rather than EventSource's,
   * so each one can carry `since=<last event id>` and so a refused stream (which EventSource gives
   * up on for good) is retried or reported.
   */
  function connect() {
    disconnect();
    if (!state.channels.length) {
      setStatus("idle", "choose a channel to watch");
      return;
    }
    const params = new URLSearchParams();
    for (const channel of state.channels) params.append("subject", channel);
    if (state.lastEventId) params.set("since", state.lastEventId);
    if (state.token) params.set("token", state.token);
    const url = "/events?" + params.toString();
    const source = new EventSource(url);
    state.source = source;
    state.opened = false;
    setStatus(state.attempt || state.reconnects ? "reconnecting" : "connecting", state.lastEventId ? "resuming after " + state.lastEventId : "");

    source.onopen = () => {
      if (state.source !== source) return;
      if (state.dropped) state.reconnects += 1;
      state.dropped = false;
      state.opened = true;
      state.attempt = 0;
      setStatus("connected", connectedDetail());
    };
    source.onmessage = (event) => {
      if (state.source !== source) return;
      receive(event);
    };
    source.onerror = () => {
      if (state.source !== source) return;
      const opened = state.opened;
      source.close();
      state.source = null;
      state.attempt += 1;
      if (opened) {
        state.dropped = true;
        scheduleReconnect("stream lost");
      } else {
        diagnose(url);
      }
    };
  }

  function disconnect() {
    clearTimeout(state.retryTimer);
    state.retryTimer = 0;
    if (state.source) {
      state.source.close();
      state.source = null;
    }
  }

  function scheduleReconnect(reason) {
    const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(state.attempt - 1, 4)) * (0.8 + Math.random() * 0.4);
    setStatus("reconnecting", reason + "; retry " + state.attempt + " in " + (delay / 1000).toFixed(1) + " s" + (state.lastEventId ? ", resuming after " + state.lastEventId : ""));
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(connect, delay);
  }

  /**
   * A stream that never opened: the gateway is down, or it answered an error that EventSource hides.
   * One plain request tells which; a refusal of the request itself (a bad channel, a missing token) is
   * shown and not retried, anything else is.
   */
  async function diagnose(url) {
    const controller = new AbortController();
    let reason = "gateway unreachable";
    let retry = true;
    try {
      const response = await fetch(url, { headers: authHeaders(), signal: controller.signal, cache: "no-store" });
      if (response.ok) {
        reason = "stream failed";
      } else {
        reason = await errorText(response);
        retry = !(response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429);
      }
    } catch (_) {
      // network error: the gateway is down or restarting
    } finally {
      controller.abort();
    }
    if (state.source || state.retryTimer) return;  // the user changed something meanwhile
    if (retry) {
      scheduleReconnect(reason);
    } else {
      setStatus("refused", reason);
    }
  }

  function remember(id) {
    if (state.seen.has(id)) return false;
    state.seen.add(id);
    state.seenOrder.push(id);
    if (state.seenOrder.length > SEEN_IDS) state.seen.delete(state.seenOrder.shift());
    return true;
  }

  function receive(event) {
    if (event.lastEventId) state.lastEventId = event.lastEventId;
    let envelope;
    try {
      envelope = JSON.parse(event.data);
    } catch (_) {
      return;  // not an envelope: ignore rather than show garbage
    }
    if (!envelope || typeof envelope !== "object" || typeof envelope.channel !== "string") return;
    const id = typeof envelope.id === "string" ? envelope.id : event.lastEventId;
    if (id && !remember(id)) return;
    const stats = state.stats.get(envelope.channel);
    if (stats) {
      stats.count += 1;
      stats.arrivals.push(performance.now());
    }
    addMessage(envelope, id);
    if (state.source && state.opened) setStatus("connected", connectedDetail());
  }

  function payloadText(envelope) {
    if (envelope.encoding === "text" && typeof envelope.data === "string") return envelope.data;
    if (envelope.encoding === "base64") return "base64 " + String(envelope.data);
    return JSON.stringify(envelope.data);
  }

  function addMessage(envelope, id) {
    const item = document.createElement("li");
    item.className = "message";
    item.dataset.channel = envelope.channel;
    if (id) item.dataset.id = id;
    if (typeof envelope.offset === "number") item.dataset.offset = String(envelope.offset);

    const time = document.createElement("time");
    const ts = typeof envelope.ts === "number" ? envelope.ts : Date.now();
    time.dateTime = new Date(ts).toISOString();
    time.textContent = formatTime(ts);

    const channel = document.createElement("span");
    channel.className = "channel";
    channel.textContent = envelope.channel;

    const data = document.createElement("code");
    data.className = "data";
    if (envelope.encoding) data.dataset.encoding = envelope.encoding;
    data.textContent = payloadText(envelope);

    const idSpan = document.createElement("span");
    idSpan.className = "id";
    idSpan.textContent = id || "";

    item.append(time, channel, data, idSpan);
    const list = $("message-list");
    list.prepend(item);
    while (list.childElementCount > MAX_MESSAGES) list.lastElementChild.remove();
  }

  // --- watched channels -------------------------------------------------------------------------

  function renderChannels() {
    const body = $("channel-rows");
    body.replaceChildren();
    for (const name of state.channels) {
      const stats = state.stats.get(name);
      const row = document.createElement("tr");
      row.dataset.channel = name;
      const cell = (text, className) => {
        const td = document.createElement("td");
        if (className) td.className = className;
        td.textContent = text;
        row.append(td);
        return td;
      };
      cell(name, "channel");
      stats.countCell = cell("0", "num count");
      stats.rateCell = cell("0", "num rate");
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "small";
      remove.textContent = "stop";
      remove.title = "stop watching " + name;
      remove.addEventListener("click", () => unwatch(name));
      const actions = document.createElement("td");
      actions.append(remove);
      row.append(actions);
      body.append(row);
    }
    $("channels-empty").hidden = state.channels.length > 0;
    updateRates();
  }

  function updateRates() {
    const now = performance.now();
    for (const name of state.channels) {
      const stats = state.stats.get(name);
      while (stats.arrivals.length && now - stats.arrivals[0] > RATE_WINDOW_MS) stats.arrivals.shift();
      const span = Math.min(RATE_WINDOW_MS, Math.max(1000, now - stats.since));
      if (stats.countCell) stats.countCell.textContent = formatNumber(stats.count);
      if (stats.rateCell) stats.rateCell.textContent = formatNumber(stats.arrivals.length * 1000 / span);
    }
  }

  function watch(names) {
    let changed = false;
    for (const name of names) {
      if (state.channels.includes(name) || state.channels.length >= MAX_CHANNELS) continue;
      state.channels.push(name);
      state.stats.set(name, { count: 0, arrivals: [], since: performance.now() });
      changed = true;
    }
    if (!changed) return;
    renderChannels();
    writeFragment();
    state.attempt = 0;
    connect();
  }

  function unwatch(name) {
    state.channels = state.channels.filter((c) => c !== name);
    state.stats.delete(name);
    renderChannels();
    writeFragment();
    state.attempt = 0;
    connect();
  }

  // --- publishing -------------------------------------------------------------------------------

  async function publish(event) {
    event.preventDefault();
    const channel = $("publish-channel").value.trim();
    const payload = $("publish-payload").value;
    const result = $("publish-result");
    if (!validChannel(channel)) {
      result.dataset.outcome = "error";
      result.textContent = "invalid channel name: 1 to 255 bytes of A-Z a-z 0-9 _ - : @ =, tokens split by single dots";
      return;
    }
    const button = $("publish-submit");
    button.disabled = true;
    result.dataset.outcome = "pending";
    result.textContent = "publishing…";
    try {
      const response = await fetch("/publish?subject=" + encodeURIComponent(channel), {
        method: "POST",
        headers: { "Content-Type": "application/octet-stream", ...authHeaders() },
        body: new TextEncoder().encode(payload),
        cache: "no-store",
      });
      if (response.ok) {
        const body = await response.json();
        result.dataset.outcome = "ok";
        result.textContent = "published " + String(body.id) + " on " + String(body.channel);
      } else {
        result.dataset.outcome = "error";
        result.textContent = await errorText(response);
      }
    } catch (error) {
      result.dataset.outcome = "error";
      result.textContent = "gateway unreachable: " + String(error && error.message ? error.message : error);
    } finally {
      button.disabled = false;
    }
  }

  // --- gateway figures from /metrics and /readyz ------------------------------------------------

  /** Parses Prometheus text into samples {name, labels, value}; enough for the figures shown. */
  function parseMetrics(text) {
    const samples = [];
    for (const line of text.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const match = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!match) continue;
      const labels = {};
      const labelPattern = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let label;
      while ((label = labelPattern.exec(match[2] || "")) !== null) {
        labels[label[1]] = label[2].replace(/\\n/g, "\n").replace(/\\(.)/g, "$1");
      }
      samples.push({ name: match[1], labels, value: Number(match[3]) });
    }
    return samples;
  }

  function sum(samples, name, labelFilter) {
    let total = 0;
    let found = false;
    for (const s of samples) {
      if (s.name !== name) continue;
      if (labelFilter && !Object.entries(labelFilter).every(([k, v]) => s.labels[k] === v)) continue;
      total += s.value;
      found = true;
    }
    return found ? total : NaN;
  }

  function rateSince(previous, current, key) {
    if (!previous) return NaN;
    const seconds = (current.at - previous.at) / 1000;
    const delta = current[key] - previous[key];
    return seconds > 0 && delta >= 0 ? delta / seconds : NaN;
  }

  async function refreshFigures() {
    try {
      const [metrics, ready] = await Promise.all([
        fetch("/metrics", { headers: authHeaders(), cache: "no-store" }),
        fetch("/readyz", { headers: authHeaders(), cache: "no-store" }),
      ]);
      if (ready.ok) {
        const body = await ready.json().catch(() => ({}));
        setText("fig-ready", "ready" + (body && body.broker ? " (" + String(body.broker) + ")" : ""));
        $("fig-ready").dataset.ready = "true";
      } else {
        setText("fig-ready", "not ready: " + (await errorText(ready)));
        $("fig-ready").dataset.ready = "false";
      }
      if (!metrics.ok) throw new Error(await errorText(metrics));
      const samples = parseMetrics(await metrics.text());
      const build = samples.find((s) => s.name === "storm_build_info");
      const current = {
        at: performance.now(),
        published: sum(samples, "storm_messages_published_total"),
        delivered: sum(samples, "storm_messages_delivered_total"),
        latencySum: sum(samples, "storm_fanout_latency_seconds_sum"),
        latencyCount: sum(samples, "storm_fanout_latency_seconds_count"),
        instance: build ? build.labels.instance_id : "",
      };
      // A restarted gateway starts its counters from zero: rates restart with it.
      const previous = state.previousMetrics && state.previousMetrics.instance === current.instance ? state.previousMetrics : null;
      state.previousMetrics = current;

      setText("fig-version", build ? build.labels.version || "–" : "–");
      setText("fig-instance", build ? build.labels.instance_id || "–" : "–");
      const connected = sum(samples, "storm_broker_connected");
      const subscriptions = sum(samples, "storm_broker_subscriptions");
      setText("fig-broker", (connected === 1 ? "connected" : connected === 0 ? "disconnected" : "–") + ", " + formatNumber(subscriptions) + (subscriptions === 1 ? " channel subscription" : " channel subscriptions"));
      setText("fig-connections", formatNumber(sum(samples, "storm_connections", { transport: "websocket" })) + " WebSocket, " + formatNumber(sum(samples, "storm_connections", { transport: "sse" })) + " SSE");
      setText("fig-published", formatNumber(current.published) + " total, " + formatNumber(rateSince(previous, current, "published")) + "/s");
      setText("fig-delivered", formatNumber(current.delivered) + " total, " + formatNumber(rateSince(previous, current, "delivered")) + "/s");
      const deliveries = previous ? current.latencyCount - previous.latencyCount : NaN;
      const latency = deliveries > 0 ? (current.latencySum - previous.latencySum) / deliveries * 1000 : NaN;
      setText("fig-latency", Number.isFinite(latency) ? latency.toFixed(2) + " ms average since last refresh" : "no deliveries since last refresh");
      setText("fig-dropped", formatNumber(sum(samples, "storm_messages_dropped_total")));
      setText("fig-errors", formatNumber(sum(samples, "storm_client_errors_total")));
      $("figures-error").hidden = true;
    } catch (error) {
      setText("fig-ready", "unreachable");
      $("fig-ready").dataset.ready = "false";
      const box = $("figures-error");
      box.textContent = "gateway figures unavailable: " + String(error && error.message ? error.message : error);
      box.hidden = false;
    }
  }

  // --- start ------------------------------------------------------------------------------------

  function start() {
    const initial = readFragment();
    $("token").value = state.token;
    if (state.token || location.hash.includes("token=")) writeFragment();  // take the token out of the address bar

    $("watch-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("watch-channel");
      const names = input.value.split(/[\s,]+/).filter(Boolean);
      const invalid = names.filter((n) => !validChannel(n));
      const error = $("watch-error");
      if (invalid.length) {
        error.textContent = "invalid channel name: " + invalid.join(", ") + " (1 to 255 bytes of A-Z a-z 0-9 _ - : @ =, tokens split by single dots)";
        error.hidden = false;
        return;
      }
      error.hidden = true;
      input.value = "";
      if (!$("publish-channel").value && names.length) $("publish-channel").value = names[0];
      watch(names);
    });
    $("publish-form").addEventListener("submit", publish);
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.token = $("token").value.trim();
      sessionStorage.setItem("storm.token", state.token);
      state.attempt = 0;
      connect();
      refreshFigures();
    });
    $("clear-messages").addEventListener("click", () => $("message-list").replaceChildren());
    window.addEventListener("hashchange", () => {
      const names = readFragment();
      if (names.length) watch(names);
    });

    if (initial.length) {
      $("publish-channel").value = initial[0];
      watch(initial);
    } else {
      renderChannels();
      setStatus("idle", "choose a channel to watch");
    }
    refreshFigures();
    setInterval(refreshFigures, METRICS_EVERY_MS);
    setInterval(updateRates, 1000);
  }

  start();
})();
"""#

    /// A small icon, so browsers do not ask for `/favicon.ico` (a 404 on every load).
    static let faviconSVG = #"""
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#14202e"/><path d="M18 3 7 18h8l-2 11 12-16h-8z" fill="#f5c542"/></svg>
"""#
}
