// Type declarations for storm.js, the STORM client (docs/client.md).

export type ClientState = "disconnected" | "connecting" | "connected" | "closed";
export type SubscriptionStateName = "subscribing" | "subscribed" | "unsubscribed";
export type Transport = "websocket" | "sse";

export declare const State: Readonly<{ [K in ClientState]: K }>;
export declare const SubscriptionState: Readonly<{ [K in SubscriptionStateName]: K }>;

/** A delivered message (docs/protocol.md, "The envelope"). */
export interface Envelope {
  type: "message";
  channel: string;
  id: string;
  ts: number;
  data: unknown;
  offset?: number;
  encoding?: "text" | "base64";
}

export interface StormErrorBody {
  code: string;
  message: string;
}

export interface PublishResult {
  id: string;
  channel: string;
  ts: number;
  offset?: number;
  duplicate?: boolean;
}

export interface StateChange {
  state: ClientState;
  previous: ClientState;
  /** The close code that caused the change (1006 when the socket failed without one). */
  code?: number;
  reason?: string;
  willReconnect?: boolean;
  /** Milliseconds until the next attempt. */
  retryIn?: number;
  attempt?: number;
  transport?: Transport;
  waitingForToken?: boolean;
}

export interface SubscriptionStateChange {
  state: SubscriptionStateName;
  previous: SubscriptionStateName;
  /** On a resubscribe (or a `since: "latest"` subscribe): whether the gateway promised no gap and no repeat (or read the newest message). */
  recovered?: boolean;
  /** A server-side subscription (the token's `storm.channels`, the connect hook) that just started. */
  server?: boolean;
  error?: StormErrorBody;
}

export interface WebSocketLike {
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface EventSourceLike {
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: string; lastEventId: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  close(): void;
}

export interface StormOptions {
  /** A WebSocket constructor; default `globalThis.WebSocket` (Node 20 has none: pass one). */
  WebSocket?: new (url: string) => WebSocketLike;
  /** An EventSource constructor for the SSE fallback; default `globalThis.EventSource`. */
  EventSource?: new (url: string) => EventSourceLike;
  fetch?: typeof fetch;
  /** In order of preference; default `["websocket", "sse"]`. */
  transports?: Transport[];
  /** A fixed token; with `getToken` the first one. */
  token?: string;
  /** Called at connect, before the token's `exp`, and after a 4001 close. */
  getToken?: () => Promise<string>;
  /** Milliseconds; default 500. */
  minReconnectDelay?: number;
  /** Milliseconds; default 20000. */
  maxReconnectDelay?: number;
  /** WebSocket connects that never opened before falling back to SSE; default 3. */
  sseAfterFailures?: number;
  /** Milliseconds before `exp` to refresh a token (or at 80% of its life when later); default 30000. */
  refreshMargin?: number;
}

export interface PublishOptions {
  /** Makes retries safe: the gateway stores one message per key. Generated when absent. */
  idempotencyKey?: string;
  /** Not delivered back to this client (`"exclude_self": true`); every other subscriber gets it. */
  excludeSelf?: boolean;
}

export interface SubscribeOptions {
  /** `"latest"`: the channel's newest stored message first, then live ones (state channels). */
  since?: "latest";
}

/** The gateway subscribed the connection at connect (docs/protocol.md, "Server-side subscriptions"). */
export interface ServerSubscribed {
  /** Every channel the `subscribed` frame named. */
  channels: string[];
  /** Those that were not subscriptions of this client before. */
  added: string[];
  epoch: string | null;
}

declare class Emitter<Events> {
  on<K extends keyof Events>(event: K, listener: (payload: Events[K]) => void): () => void;
  off<K extends keyof Events>(event: K, listener: (payload: Events[K]) => void): void;
}

export interface SubscriptionEvents {
  state: SubscriptionStateChange;
  message: Envelope;
  /** `latest`: the newest message could not be read; `error`: the reply's `recovery_error`. */
  recovered: { recovered: false; epoch?: string | null; latest?: true; error?: StormErrorBody };
  error: StormErrorBody;
}

export declare class Subscription extends Emitter<SubscriptionEvents> {
  readonly channel: string;
  readonly state: SubscriptionStateName;
  /** The offset of the last message delivered, or null. */
  readonly offset: number | null;
  /** True for a subscription the gateway made (storm.channels, the connect hook), not `subscribe()`. */
  readonly server?: boolean;
  unsubscribe(): void;
}

export interface StormEvents {
  state: StateChange;
  message: Envelope;
  error: StormErrorBody;
  token: { exp: number | null };
  transport: { transport: Transport; reason: string };
  /** Server-side subscriptions, with their `Subscription` objects (listen to their `message` here). */
  subscribed: ServerSubscribed & { subscriptions: Subscription[] };
}

export declare class Storm extends Emitter<StormEvents> {
  /** `url`: the gateway's HTTP base, e.g. `http://127.0.0.1:8080`; in a browser default the page's origin. */
  constructor(url?: string, options?: StormOptions);
  readonly state: ClientState;
  readonly transport: Transport;
  connect(): this;
  close(): void;
  setToken(token: string): void;
  subscribe(channel: string, options?: SubscribeOptions): Subscription;
  /** The live subscription to `channel`, one of ours or a server-side one. */
  subscription(channel: string): Subscription | undefined;
  unsubscribe(channel: string): void;
  publish(channel: string, data: unknown, options?: PublishOptions): Promise<PublishResult>;
}

export type Action =
  | { type: "open"; transport: "websocket"; token: string | null }
  | { type: "open"; transport: "sse"; channels: string[]; since: string | null; token: string | null; serverChannels?: true }
  | { type: "closeSocket"; code: number }
  | { type: "send"; frame: Record<string, unknown> }
  | { type: "startTimer"; name: string; delay: number }
  | { type: "cancelTimer"; name: string }
  | { type: "fetchToken" }
  | { type: "httpPublish"; key: string; channel: string; data: unknown; token: string | null }
  | { type: "publishDone"; key: string; result: PublishResult }
  | { type: "publishFailed"; key: string; error: StormErrorBody }
  | { type: "emit"; event: keyof StormEvents; payload: unknown }
  | { type: "emitSub"; channel: string; event: keyof SubscriptionEvents; payload: unknown };

/** The protocol decisions, without I/O: each method takes an event and returns actions. */
export declare class StormMachine {
  constructor(options?: StormOptions & { hasTokenSource?: boolean; now?: () => number; random?: () => number });
  readonly state: ClientState;
  readonly transport: Transport;
  readonly epoch: string | null;
  connect(): Action[];
  close(): Action[];
  subscribe(channel: string, options?: SubscribeOptions): Action[];
  unsubscribe(channel: string): Action[];
  publish(channel: string, data: unknown, key?: string, options?: { excludeSelf?: boolean }): Action[];
  tokenReceived(token: string): Action[];
  tokenFailed(error: unknown): Action[];
  socketOpened(): Action[];
  socketClosed(code?: number, reason?: string): Action[];
  message(frame: unknown, sseLastEventId?: string): Action[];
  httpPublishAnswered(key: string, status: number, body: unknown): Action[];
  timerFired(name: string): Action[];
}

export declare function backoffDelay(attempt: number, minDelay: number, maxDelay: number, random?: () => number): number;
export declare function decodeTokenPayload(token: string): Record<string, unknown> | null;
export declare function refreshDelay(expSeconds: number, nowMs: number, margin?: number): number;
export declare function newIdempotencyKey(): string;
export declare function errorText(response: Response): Promise<string>;
