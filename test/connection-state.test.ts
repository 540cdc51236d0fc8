import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type ConnectionEvent,
  type ConnectionState,
  next,
} from "atomix-plugins-client/transport/connection-state";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";

/**
 * The one state machine both client connections follow (the channel of
 * unary calls and the pull reader's connections): the phases a connection
 * goes through and what each event does in each, including the events that
 * arrive late (a tunnel up after close(), a GOAWAY on a session already
 * replaced) and must change nothing.
 */
describe("connection state", () => {
  type Dial = { name: string };
  type Link = { name: string };
  type State = ConnectionState<Dial, Link>;
  const run = (events: ConnectionEvent<Dial, Link>[], from: State = { phase: "idle" }) =>
    events.reduce(next<Dial, Link>, from);
  const tunnel: Dial = { name: "tunnel" };
  const session: Link = { name: "session" };
  const other: Link = { name: "other" };
  const closedByClient = new PluginError(Code.Cancelled, "the client was closed");
  const goAway = { lastStream: 1, error: 0 };

  it("goes idle → connecting → ready → draining → closed, and says it had been reached", () => {
    const seen: string[] = [];
    let state: State = { phase: "idle" };
    for (const event of [
      { type: "dial", dial: tunnel },
      { type: "connected", link: session },
      { type: "go-away", link: session, goAway },
      { type: "close", reason: closedByClient },
    ] as const) {
      state = next(state, event);
      seen.push(state.phase);
    }
    assert.deepEqual(seen, ["connecting", "ready", "draining", "closed"]);
    assert.deepEqual(state, { phase: "closed", reason: closedByClient, reached: true });
  });

  it("says a connection closed while connecting was never reached (cannot connect, not dropped)", () => {
    const state = run([
      { type: "dial", dial: tunnel },
      { type: "close", reason: closedByClient },
    ]);
    assert.deepEqual(state, { phase: "closed", reason: closedByClient, reached: false });
  });

  it("stays closed whatever settles afterwards: a tunnel, a session, a GOAWAY, another close", () => {
    const closed: State = { phase: "closed", reason: closedByClient, reached: false };
    const state = run(
      [
        { type: "dial", dial: tunnel },
        { type: "connected", link: session },
        { type: "go-away", link: session, goAway },
        { type: "lost", of: session },
        { type: "close", reason: new PluginError(Code.Unavailable, "dropped") },
      ],
      closed,
    );
    assert.equal(state, closed);
  });

  it("forgets only the current dial or link: losing a replaced session keeps the new one", () => {
    const ready = run([{ type: "connected", link: session }]);
    assert.deepEqual(next(ready, { type: "lost", of: other }), ready);
    assert.deepEqual(next(ready, { type: "lost", of: session }), { phase: "idle" });
    const connecting = run([{ type: "dial", dial: tunnel }]);
    assert.deepEqual(next(connecting, { type: "lost", of: { name: "abandoned" } }), connecting);
    assert.deepEqual(next(connecting, { type: "lost", of: tunnel }), { phase: "idle" });
  });

  it("keeps the last GOAWAY a server sends, and takes no new session while draining", () => {
    const last = { lastStream: 7, error: 2 };
    const draining = run([
      { type: "connected", link: session },
      { type: "go-away", link: session, goAway },
      { type: "go-away", link: session, goAway: last },
    ]);
    assert.deepEqual(draining, { phase: "draining", link: session, goAway: last });
    assert.equal(next(draining, { type: "connected", link: other }), draining);
    assert.equal(next(draining, { type: "dial", dial: tunnel }), draining);
  });
});
