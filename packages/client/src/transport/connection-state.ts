import type { PluginError } from "atomix-plugins-core/errors/plugin-error";

/**
 * The life of one connection to the server as one value, shared by the
 * channel of unary and client-streaming calls (grpc-channel.ts) and the pull
 * reader's connections (socket-pull-transport.ts). Each phase holds what is
 * only there in it (the tunnel being dialled, the live link, the GOAWAY, why
 * it closed), so no combination of flags can say two things at once, and
 * every change goes through `next` below, named by the event that caused it.
 *
 * - `idle`: nothing dialled; the next call dials.
 * - `connecting`: dialling (a proxy's tunnel, TCP, TLS); `dial` is what is
 *   being waited on.
 * - `ready`: the link carries calls.
 * - `draining`: the server said GOAWAY: calls it took finish, no new ones.
 * - `closed`: for good; `reason` fails what is still asked of it, `reached`
 *   says whether it ever got past connecting (to tell "cannot connect" from
 *   "the connection dropped").
 */
export type ConnectionState<Dial, Link> =
  | { readonly phase: "idle" }
  | { readonly phase: "connecting"; readonly dial: Dial }
  | { readonly phase: "ready"; readonly link: Link }
  | { readonly phase: "draining"; readonly link: Link; readonly goAway: GoAway }
  | { readonly phase: "closed"; readonly reason: PluginError; readonly reached: boolean };

export interface GoAway {
  lastStream: number;
  error: number;
}

export type ConnectionEvent<Dial, Link> =
  /** A dial started, or went a step further (a tunnel's socket is there, its handshake still to come). */
  | { readonly type: "dial"; readonly dial: Dial }
  /** The handshake is done (or a session is up): calls may go. */
  | { readonly type: "connected"; readonly link: Link }
  /** The server is going away on `link` (again, with a later last stream). */
  | { readonly type: "go-away"; readonly link: Link; readonly goAway: GoAway }
  /** `of` (a dial or a link) is gone or abandoned; if it is the current one, the next call dials again. */
  | { readonly type: "lost"; readonly of: Dial | Link }
  /** Closed for good: by the client, or because the connection failed. */
  | { readonly type: "close"; readonly reason: PluginError };

/**
 * The state after `event`. An event that does not apply to the current
 * phase leaves it as it is: a dial or a session that settles after close(),
 * a loss of a link that is no longer the current one, a second close. This
 * is what the hand-written flags each checked on their own before.
 */
export function next<Dial, Link>(
  state: ConnectionState<Dial, Link>,
  event: ConnectionEvent<Dial, Link>,
): ConnectionState<Dial, Link> {
  if (state.phase === "closed") return state;
  switch (event.type) {
    case "dial":
      return state.phase === "idle" || state.phase === "connecting"
        ? { phase: "connecting", dial: event.dial }
        : state;
    case "connected":
      return state.phase === "idle" || state.phase === "connecting" || state.phase === "ready"
        ? { phase: "ready", link: event.link }
        : state;
    case "go-away":
      // A server may say it twice (first "soon", then the last stream it took): the last one counts.
      return state.phase === "idle" ? state : { phase: "draining", link: event.link, goAway: event.goAway };
    case "lost":
      return current(state) === event.of ? { phase: "idle" } : state;
    case "close":
      return {
        phase: "closed",
        reason: event.reason,
        reached: state.phase === "ready" || state.phase === "draining",
      };
  }
}

/** What the state is waiting on or using: its dial or its link. */
function current<Dial, Link>(state: ConnectionState<Dial, Link>): Dial | Link | undefined {
  switch (state.phase) {
    case "connecting":
      return state.dial;
    case "ready":
    case "draining":
      return state.link;
    default:
      return undefined;
  }
}
