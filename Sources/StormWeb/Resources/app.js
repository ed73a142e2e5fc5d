// STORM web dashboard: a plain ES module on storm.js (the client served at /storm.js), no other dependency.
//
// Everything received (messages, channel names, error texts, metric labels) is untrusted and is
// rendered with textContent only, never as HTML.
import { Storm, State, errorText } from "/storm.js";

(() => {
  const MAX_MESSAGES = 500;          // rows kept in the message list
  const RATE_WINDOW_MS = 10000;      // per-channel rates are averaged over this window
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
    storm: null,                     // the storm.js client
    lastOffset: "",                  // offset of the newest message shown
    attempt: 0,                      // consecutive failed connects
    reconnects: 0,                   // successful re-opens after a drop
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
    if (state.lastOffset) parts.push("last event " + state.lastOffset);
    return parts.join(" · ");
  }

  // --- the event stream, through storm.js -------------------------------------------------------

  /**
   * One Storm client over SSE (the page is a receiver and publishes over HTTP, as before): storm.js
   * keeps each channel's offset, reconnects with backoff and `since=<positions>`, drops repeats by
   * offset, and tells a refused stream (shown, not retried) from a gateway that is down (retried).
   */
  function createClient() {
    const client = new Storm(location.origin, { transports: ["sse"], token: state.token, minReconnectDelay: RETRY_MIN_MS, maxReconnectDelay: RETRY_MAX_MS });
    client.on("state", (change) => {
      if (!state.channels.length) {
        setStatus("idle", "choose a channel to watch");
        return;
      }
      if (change.state === State.connected) {
        if (state.dropped) state.reconnects += 1;
        state.dropped = false;
        state.attempt = 0;
        setStatus("connected", connectedDetail());
      } else if (change.state === State.connecting) {
        setStatus(state.attempt || state.reconnects || state.dropped ? "reconnecting" : "connecting", state.lastOffset ? "resuming after " + state.lastOffset : "");
      } else if (change.state === State.disconnected) {
        if (change.previous === State.connected) state.dropped = true;
        if (change.willReconnect) {
          state.attempt = change.attempt || state.attempt + 1;
          const retry = typeof change.retryIn === "number" ? "; retry " + state.attempt + " in " + (change.retryIn / 1000).toFixed(1) + " s" : "";
          setStatus("reconnecting", (change.reason || "stream lost") + retry + (state.lastOffset ? ", resuming after " + state.lastOffset : ""));
        } else {
          setStatus("refused", change.reason || "refused");
        }
      }
    });
    return client;
  }

  function receive(envelope) {
    if (!envelope || typeof envelope !== "object" || typeof envelope.channel !== "string") return;
    if (typeof envelope.offset === "number") state.lastOffset = String(envelope.offset);
    const stats = state.stats.get(envelope.channel);
    if (stats) {
      stats.count += 1;
      stats.arrivals.push(performance.now());
    }
    addMessage(envelope, typeof envelope.id === "string" ? envelope.id : "");
    if (state.storm.state === State.connected) setStatus("connected", connectedDetail());
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
      state.storm.subscribe(name).on("message", receive);
      changed = true;
    }
    if (!changed) return;
    renderChannels();
    writeFragment();
    state.attempt = 0;
    state.storm.connect();
  }

  function unwatch(name) {
    state.channels = state.channels.filter((c) => c !== name);
    state.stats.delete(name);
    state.storm.unsubscribe(name);
    renderChannels();
    writeFragment();
    state.attempt = 0;
    if (!state.channels.length) {
      state.storm.close();
      setStatus("idle", "choose a channel to watch");
    }
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
      // Retried with the same idempotency key while the gateway is unreachable: stored once.
      const body = await state.storm.publish(channel, payload);
      result.dataset.outcome = "ok";
      result.textContent = "published " + String(body.id) + " on " + String(body.channel);
    } catch (error) {
      result.dataset.outcome = "error";
      result.textContent = error && error.code ? error.code + ": " + error.message : "publish failed: " + String(error && error.message ? error.message : error);
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
    state.storm = createClient();
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
      state.storm.setToken(state.token);
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
