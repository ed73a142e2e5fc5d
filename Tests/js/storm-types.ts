// Compiled (not run) by scripts/test-js with `tsc --noEmit --strict`: storm.d.ts describes storm.js's API.
import { Storm, StormMachine, State, type Envelope, type StateChange, type PublishResult } from "../../Sources/StormWeb/Resources/storm";

const storm = new Storm("http://127.0.0.1:8080", { getToken: async () => "token", transports: ["websocket", "sse"], minReconnectDelay: 250 });
const chat = storm.subscribe("chat.lobby");
const stop: () => void = chat.on("message", (envelope: Envelope) => console.log(envelope.channel, envelope.offset ?? null, envelope.data));
chat.on("recovered", (event) => console.log(event.recovered));
chat.on("state", (change) => console.log(change.state, change.recovered));
storm.on("state", (change: StateChange) => console.log(change.state === State.connected, change.code, change.willReconnect));
const published: Promise<PublishResult> = storm.publish("chat.lobby", { text: "hi" }, { idempotencyKey: "order-17" });
published.then((result) => console.log(result.id, result.offset));
const prices = storm.subscribe("prices.eur", { since: "latest" });
prices.on("recovered", (event) => console.log(event.latest === true, event.error?.code));
storm.on("subscribed", (event) => {
  for (const subscription of event.subscriptions) subscription.on("message", (envelope: Envelope) => console.log(subscription.server, envelope.data));
  console.log(event.channels, event.added, event.epoch);
});
const inbox = storm.subscription("inbox.alice");
if (inbox) console.log(inbox.offset);
storm.publish("chat.lobby", "hello", { excludeSelf: true });
storm.connect().setToken("next");
stop();
chat.unsubscribe();
storm.close();

const machine = new StormMachine({ transports: ["websocket"], now: () => 0, random: () => 0.5 });
for (const action of [...machine.connect(), ...machine.socketOpened(), ...machine.socketClosed(4008), ...machine.subscribe("x", { since: "latest" }), ...machine.publish("x", 1, "k", { excludeSelf: true })]) {
  if (action.type === "startTimer") console.log(action.name, action.delay);
  if (action.type === "open" && action.transport === "sse") console.log(action.channels, action.since);
}
