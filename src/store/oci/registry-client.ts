import { setTimeout as delay } from "node:timers/promises";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { OciLocation } from "./oci-location.js";
import type { RegistryCredentials } from "./registry-credentials.js";

export interface RegistryClientOptions extends OciLocation {
  credentials?: RegistryCredentials | undefined;
  /**
   * How long one request may wait for the registry's response headers
   * (uploads: for the body to be sent and answered). Bodies being streamed to
   * a reader are not limited. Default 30 s.
   */
  requestTimeoutMs?: number | undefined;
}

interface FetchInit {
  method: string;
  headers: Record<string, string>;
  body?: Buffer | string | undefined;
  signal?: AbortSignal | undefined;
}

export interface RequestOptions {
  headers?: Record<string, string>;
  body?: Buffer | string;
  signal?: AbortSignal | undefined;
  /** Statuses the caller handles; anything else becomes a PluginError. */
  expect: readonly number[];
}

/** Requests that read (HEAD, GET) and those that write get separate tokens. */
type AccessSlot = "pull" | "push";

/**
 * The HTTP side of the OCI distribution API (v2) for one repository: auth,
 * timeouts, and errors as PluginErrors naming the registry. Auth follows the
 * distribution spec: a request goes out with what worked last; on a 401 the
 * `WWW-Authenticate` challenge says `Basic` (send the credentials) or
 * `Bearer realm=...,service=...,scope=...` (ask the token endpoint, with the
 * credentials if any, for a token of that scope), and the request is sent
 * once more. Bodies are buffers, so a retried request is sent whole again.
 */
const READS = new Set(["GET", "HEAD"]);
const TRANSIENT = new Set([500, 502, 503, 504]);
const READ_RETRIES = 3;
const READ_RETRY_DELAY_MS = 50;

export class RegistryClient {
  readonly origin: string;
  readonly repository: string;
  readonly #credentials: RegistryCredentials | undefined;
  readonly #timeoutMs: number;
  readonly #authorization: Record<AccessSlot, string | undefined> = { pull: undefined, push: undefined };

  constructor(options: RegistryClientOptions) {
    this.origin = options.origin;
    this.repository = options.repository;
    this.#credentials = options.credentials;
    this.#timeoutMs = options.requestTimeoutMs ?? 30_000;
  }

  /** `/v2/<repository>/<rest>` as an absolute URL. */
  url(rest: string): string {
    return `${this.origin}/v2/${this.repository}/${rest}`;
  }

  /**
   * Sends one request and returns the response once its headers are in. A
   * response whose status is in `expect` is the caller's to consume (or to
   * cancel); other statuses are read and thrown as PluginErrors.
   */
  async request(method: string, target: string, options: RequestOptions): Promise<Response> {
    const url = target.startsWith("http") ? target : this.url(target);
    const slot: AccessSlot = method === "GET" || method === "HEAD" ? "pull" : "push";
    let response = await this.#send(method, url, slot, options);
    // Reads are idempotent: a registry's passing 5xx (Distribution answers 500
    // to a GET racing a PUT of the same tag; S3-backed registries have their
    // own) is retried a few times before it becomes the caller's failure.
    const passing = (status: number) => TRANSIENT.has(status) && !options.expect.includes(status);
    for (let retry = 0; READS.has(method) && passing(response.status) && retry < READ_RETRIES; retry++) {
      await discard(response);
      await delay(READ_RETRY_DELAY_MS * 2 ** retry, undefined, { signal: options.signal });
      response = await this.#send(method, url, slot, options);
    }
    if (response.status === 401 && !options.expect.includes(401)) {
      const challenge = response.headers.get("www-authenticate");
      await discard(response);
      await this.#answerChallenge(challenge, slot, options.signal);
      response = await this.#send(method, url, slot, options);
    }
    if (options.expect.includes(response.status)) return response;
    throw await this.#failure(method, url, response);
  }

  /** Reads a JSON body of an expected response. */
  async json<T>(response: Response, what: string): Promise<T> {
    try {
      return (await response.json()) as T;
    } catch (error) {
      throw new PluginError(
        Code.Unavailable,
        `the OCI registry ${this.origin} sent ${what} that is not JSON`,
        {
          cause: error,
        },
      );
    }
  }

  async #send(method: string, url: string, slot: AccessSlot, options: RequestOptions): Promise<Response> {
    const headers: Record<string, string> = { ...options.headers };
    const authorization = this.#authorization[slot];
    // Credentials go to the registry only, never to a host a Location or Link names.
    if (authorization && new URL(url).origin === this.origin) headers.authorization = authorization;
    return this.fetch(url, { method, headers, body: options.body, signal: options.signal });
  }

  /**
   * fetch with the time limit on the response headers and the registry named
   * in every failure. The limit is lifted once the headers are in, so a
   * streamed body may take as long as its reader does.
   */
  async fetch(url: string, init: FetchInit): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      init.signal?.throwIfAborted();
      const timeout = new AbortController();
      const signal = init.signal ? AbortSignal.any([init.signal, timeout.signal]) : timeout.signal;
      const timer = setTimeout(() => timeout.abort(), this.#timeoutMs);
      try {
        return await fetch(url, {
          method: init.method,
          headers: init.headers,
          ...(init.body !== undefined ? { body: init.body } : {}),
          signal,
          redirect: "follow",
        });
      } catch (error) {
        if (init.signal?.aborted)
          throw PluginError.from(init.signal.reason ?? error, `${init.method} ${url}`);
        if (timeout.signal.aborted) {
          throw new PluginError(
            Code.Unavailable,
            `the OCI registry ${this.origin} did not answer ${init.method} ${pathOf(url)} within ${this.#timeoutMs} ms`,
            { cause: error },
          );
        }
        // A pooled keep-alive connection the registry closed (a restart, an
        // idle timeout) fails the first request sent on it: reads go once more.
        const code = (error as { cause?: { code?: string } }).cause?.code;
        const stale = code === "UND_ERR_SOCKET" || code === "ECONNRESET" || code === "EPIPE";
        if (stale && attempt === 0 && (init.method === "GET" || init.method === "HEAD")) continue;
        throw new PluginError(
          Code.Unavailable,
          `the OCI registry ${this.origin} is unreachable: ${reason(error)}`,
          {
            cause: error,
          },
        );
      } finally {
        clearTimeout(timer);
      }
    }
  }

  async #answerChallenge(challenge: string | null, slot: AccessSlot, signal: AbortSignal | undefined) {
    const parsed = challenge ? parseChallenge(challenge) : undefined;
    if (!parsed) {
      throw new PluginError(
        Code.Unavailable,
        `the OCI registry ${this.origin} asks for authentication without a usable WWW-Authenticate challenge (${challenge ?? "none"})`,
      );
    }
    if (parsed.scheme === "basic") {
      if (!this.#credentials) throw this.#needsCredentials();
      const basic = `Basic ${basicToken(this.#credentials)}`;
      this.#authorization.pull = basic;
      this.#authorization.push = basic;
      return;
    }
    const realm = parsed.params.realm;
    if (!realm) {
      throw new PluginError(
        Code.Unavailable,
        `the OCI registry ${this.origin} sent a Bearer challenge with no realm`,
      );
    }
    const tokenUrl = new URL(realm);
    if (parsed.params.service) tokenUrl.searchParams.set("service", parsed.params.service);
    for (const scope of (parsed.params.scope ?? "").split(" ").filter(Boolean)) {
      tokenUrl.searchParams.append("scope", scope);
    }
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.#credentials) headers.authorization = `Basic ${basicToken(this.#credentials)}`;
    const response = await this.fetch(tokenUrl.toString(), { method: "GET", headers, signal });
    if (response.status === 401 || response.status === 403) {
      await discard(response);
      throw this.#credentials ? this.#refused(response.status, tokenUrl.origin) : this.#needsCredentials();
    }
    if (!response.ok) {
      await discard(response);
      throw new PluginError(
        Code.Unavailable,
        `the token endpoint ${tokenUrl.origin}${tokenUrl.pathname} of the OCI registry ${this.origin} answered ${response.status}`,
      );
    }
    const body = await this.json<{ token?: string; access_token?: string }>(response, "a token response");
    const token = body.token ?? body.access_token;
    if (!token) {
      throw new PluginError(
        Code.Unavailable,
        `the token endpoint of the OCI registry ${this.origin} sent no token`,
      );
    }
    this.#authorization[slot] = `Bearer ${token}`;
  }

  #needsCredentials(): PluginError {
    return new PluginError(
      Code.Unavailable,
      `the OCI registry ${this.origin} requires credentials; set ATOMIX_PLUGINS_OCI_USERNAME and ATOMIX_PLUGINS_OCI_PASSWORD or --oci-credentials`,
    );
  }

  #refused(status: number, where: string): PluginError {
    return new PluginError(
      Code.Unavailable,
      `the OCI registry ${this.origin} refused the configured credentials for ${this.repository} (${status} from ${where}); check the user name, password and its rights`,
    );
  }

  async #failure(method: string, url: string, response: Response): Promise<PluginError> {
    const text = await response.text().catch(() => "");
    let detail = text.slice(0, 300);
    try {
      const body = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
      if (body.errors?.length) detail = body.errors.map((e) => `${e.code}: ${e.message}`).join("; ");
    } catch {
      // not a distribution error body; keep the text
    }
    const status = response.status;
    if (status === 401 || status === 403) {
      return this.#credentials ? this.#refused(status, this.origin) : this.#needsCredentials();
    }
    const what = `the OCI registry ${this.origin} answered ${status} to ${method} ${pathOf(url)}${detail ? `: ${detail}` : ""}`;
    if (status === 413) return new PluginError(Code.ResourceExhausted, what);
    if (status >= 500 || status === 429 || status === 408) return new PluginError(Code.Unavailable, what);
    if (status === 405 && detail.includes("UNSUPPORTED")) {
      return new PluginError(
        Code.FailedPrecondition,
        method === "DELETE"
          ? `${what}; deleting needs storage.delete.enabled: true in the registry's configuration`
          : `${what}; the registry takes no writes (a mirror, such as Distribution in proxy mode or Harbor's proxy cache): run this server with --store-writes read-only and --upstream <the server whose registry it mirrors>`,
      );
    }
    return new PluginError(Code.Internal, what);
  }
}

/** Reads and drops a body, so its connection goes back to the pool. */
export async function discard(response: Response): Promise<void> {
  try {
    await response.body?.cancel();
  } catch {
    // already consumed or broken: nothing to release
  }
}

function basicToken(credentials: RegistryCredentials): string {
  return Buffer.from(`${credentials.username}:${credentials.password.reveal()}`).toString("base64");
}

/** Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`. */
export function parseChallenge(
  header: string,
): { scheme: "basic" | "bearer"; params: Record<string, string> } | undefined {
  const match = /^\s*(\w+)\s*(.*)$/.exec(header);
  if (!match) return undefined;
  const scheme = match[1]?.toLowerCase();
  if (scheme !== "basic" && scheme !== "bearer") return undefined;
  const params: Record<string, string> = {};
  const pattern = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/g;
  for (let m = pattern.exec(match[2] ?? ""); m; m = pattern.exec(match[2] ?? "")) {
    const name = m[1]?.toLowerCase();
    if (name) params[name] = (m[2] ?? m[3] ?? "").replace(/\\(.)/g, "$1");
  }
  return { scheme, params };
}

function reason(error: unknown): string {
  const cause = (error as { cause?: unknown }).cause;
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code;
    return code ? `${code} (${cause.message})` : cause.message;
  }
  return error instanceof Error ? error.message : String(error);
}

function pathOf(url: string): string {
  try {
    const parsed = new URL(url);
    return parsed.pathname;
  } catch {
    return url;
  }
}
