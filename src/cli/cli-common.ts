import { readFileSync, statSync } from "node:fs";
import { dirname } from "node:path";
import type { ConnectionOptions } from "atomix-plugins-client/connection-options";
import type { PluginClient } from "atomix-plugins-client/plugin-client";
import { parseProxyUrl } from "atomix-plugins-client/proxy-selection";
import {
  Code,
  codeName,
  PluginError,
  quoted,
  ServerUnreachableError,
  type UnreachableReason,
  UntrustedArtifactError,
} from "atomix-plugins-core/errors/plugin-error";
import { visibleJson, visibleText } from "atomix-plugins-core/errors/visible-text";
import type { Digest } from "atomix-plugins-core/model/artifact";
import {
  type BuildKey,
  formatBuildKey,
  parseBuildKey,
  parsePluginSpec,
} from "atomix-plugins-core/model/build-key";
import { BYTE_SIZE_EXAMPLE, parseByteSize } from "atomix-plugins-core/model/byte-size";
import { parseReference } from "atomix-plugins-core/model/reference";
import { type Command, Option } from "commander";
import { DEFAULT_LISTEN } from "../config.js";

/** Exit codes, one per class of failure, so scripts can tell them apart. */
export const EXIT = {
  ok: 0,
  /** Anything not classed below (INTERNAL, UNKNOWN, ...). */
  failure: 1,
  /** A bad flag or argument: commander's errors, INVALID_ARGUMENT, OUT_OF_RANGE. */
  usage: 2,
  notFound: 3,
  /** FAILED_PRECONDITION, ALREADY_EXISTS: the request is sound but the state refuses it. */
  failedPrecondition: 4,
  /** UNAVAILABLE, DEADLINE_EXCEEDED: worth retrying later. */
  unavailable: 5,
  /** DATA_LOSS: the artifact failed verification; nothing was written. */
  dataLoss: 6,
  /** UNAUTHENTICATED, PERMISSION_DENIED. */
  denied: 7,
  /** RESOURCE_EXHAUSTED: queue full, disk full, artifact too large. */
  resourceExhausted: 8,
  /** The artifact's signed provenance is missing, untrusted or for other bytes; nothing was written. */
  untrusted: 9,
  /** CANCELLED: interrupted (Ctrl-C), as shells report SIGINT. */
  cancelled: 130,
} as const;

export function exitCodeFor(code: Code): number {
  switch (code) {
    case Code.InvalidArgument:
    case Code.OutOfRange:
      return EXIT.usage;
    case Code.NotFound:
      return EXIT.notFound;
    case Code.FailedPrecondition:
    case Code.AlreadyExists:
      return EXIT.failedPrecondition;
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return EXIT.unavailable;
    case Code.DataLoss:
      return EXIT.dataLoss;
    case Code.Unauthenticated:
    case Code.PermissionDenied:
      return EXIT.denied;
    case Code.ResourceExhausted:
      return EXIT.resourceExhausted;
    case Code.Cancelled:
      return EXIT.cancelled;
    default:
      return EXIT.failure;
  }
}

export const SERVER_ENV = "ATOMIX_PLUGINS_SERVER";
export const CACHE_ENV = "ATOMIX_PLUGINS_CACHE";
export const CACHE_MAX_ENV = "ATOMIX_PLUGINS_CACHE_MAX_BYTES";
/** Files of the public keys whose signed provenance pulls require, separated by ":". */
export const TRUSTED_KEYS_ENV = "ATOMIX_PLUGINS_TRUSTED_KEYS";
/** The admin token, for servers run with --admin-token-file. */
export const TOKEN_ENV = "ATOMIX_PLUGINS_TOKEN";

export function serverOption(): Option {
  return new Option("-s, --server <address>", "server host:port, dns:host:port or unix:/path")
    .env(SERVER_ENV)
    .default(DEFAULT_LISTEN);
}

/** Options every command that talks to a server shares. */
export interface ClientFlags {
  server: string;
  json?: boolean;
  timeout?: string;
  tls?: boolean;
  ca?: string;
  cert?: string;
  key?: string;
  tlsServerName?: string;
  token?: string;
  tokenFile?: string;
  proxy?: string;
  /** Set by commands that verify provenance (withTrustOptions). */
  trustKey?: string[];
}

/**
 * The commands that present the admin token (`push`, `rm`, `gc`, `runtime
 * add` and `runtime rm`), by name: only their help shows --token-file.
 * The others take it too (a shell's environment sets it for all), unshown.
 */
const ADMIN_COMMANDS = new Set(["push", "rm", "gc", "add"]);

/** Adds `--server`, `--json`, `--timeout`, the TLS flags, and --token-file (shown where it means something). */
export function withClientOptions(command: Command): Command {
  return command
    .addOption(serverOption())
    .option("--json", "print machine-readable JSON on stdout (errors as JSON on stderr)")
    .option("--timeout <seconds>", "give up after this long (DEADLINE_EXCEEDED); no limit by default")
    .addOption(new Option("--tls", "connect with TLS (system roots unless --ca)").env("ATOMIX_PLUGINS_TLS"))
    .addOption(
      new Option("--ca <file>", "PEM CA certificate(s) of the server (implies --tls)").env(
        "ATOMIX_PLUGINS_CA",
      ),
    )
    .addOption(
      new Option("--cert <file>", "PEM client certificate for mutual TLS").env("ATOMIX_PLUGINS_CERT"),
    )
    .addOption(new Option("--key <file>", "PEM key of --cert").env("ATOMIX_PLUGINS_KEY"))
    .option("--tls-server-name <name>", "name the server's certificate must carry")
    .option(
      "--proxy <url>",
      'HTTP proxy to reach the server through (CONNECT), http://[user:password@]host[:port], even for a loopback server; "direct" ignores grpc_proxy/https_proxy/http_proxy (by default used unless no_grpc_proxy/no_proxy exempts the server; never for localhost, loopback or unix:)',
    )
    .addOption(
      new Option(
        "--token-file <file>",
        `file holding the admin token this command presents (or the token itself in ${TOKEN_ENV})`,
      )
        .env("ATOMIX_PLUGINS_TOKEN_FILE")
        .hideHelp(!ADMIN_COMMANDS.has(command.name())),
    )
    .addOption(
      // Environment only: a token on the command line would show in `ps`.
      new Option("--token <token>").env(TOKEN_ENV).hideHelp(),
    );
}

export function connectionFrom(flags: ClientFlags): ConnectionOptions {
  // What the client library takes: host:port, [v6]:port, dns:[///]host:port, unix:path.
  const hostPort = /^(\[[0-9a-fA-F:.]+\]|[^:\s/]+):\d{1,5}$/;
  const server = flags.server;
  const valid =
    hostPort.test(server) ||
    hostPort.test(server.replace(/^dns:(\/\/\/)?/, "")) ||
    /^unix:(\/\/)?\/\S+$/.test(server);
  if (!valid) {
    throw new PluginError(
      Code.InvalidArgument,
      `--server ${quoted(server)} must be host:port, dns:host:port or unix:/path (flag or ${SERVER_ENV})`,
    );
  }
  // Checked here so that a bad one is named as the flag it came from.
  if (flags.proxy !== undefined && flags.proxy !== "direct") parseProxyUrl(flags.proxy, "--proxy");
  const tls = flags.tls || flags.ca || flags.cert || flags.key || flags.tlsServerName;
  // Read by the client as it connects: checked here so that the message names the flag.
  if (flags.ca) checkLocalFile("--ca", flags.ca);
  if (flags.cert) checkLocalFile("--cert", flags.cert);
  if (flags.key) checkLocalFile("--key", flags.key);
  const token = flags.tokenFile ? readToken(flags.tokenFile) : flags.token;
  const trustedKeys = (flags.trustKey ?? []).map(readTrustedKey);
  return {
    address: flags.server,
    ...(token ? { token } : {}),
    ...(flags.proxy !== undefined ? { proxy: flags.proxy === "direct" ? false : flags.proxy } : {}),
    ...(trustedKeys.length > 0 ? { trustedKeys } : {}),
    ...(tls
      ? {
          tls: {
            ...(flags.ca ? { caFile: flags.ca } : {}),
            ...(flags.cert ? { certFile: flags.cert } : {}),
            ...(flags.key ? { keyFile: flags.key } : {}),
            ...(flags.tlsServerName ? { serverName: flags.tlsServerName } : {}),
          },
        }
      : {}),
  };
}

/**
 * Adds `--trust-key FILE` (repeatable; or $ATOMIX_PLUGINS_TRUSTED_KEYS):
 * the command then refuses an artifact without provenance signed by one of
 * these keys (exit 9).
 */
export function withTrustOptions(command: Command): Command {
  const fromEnvironment = (process.env[TRUSTED_KEYS_ENV] ?? "").split(":").filter(Boolean);
  return command.option(
    "--trust-key <file>",
    `PEM public key whose signed provenance the artifact must carry (repeatable) [env ${TRUSTED_KEYS_ENV}, files separated by ":"]`,
    (value: string, previous: string[] | undefined) =>
      previous === fromEnvironment ? [value] : [...(previous ?? []), value],
    fromEnvironment,
  );
}

function readTrustedKey(path: string): string {
  return readLocalFile("--trust-key", path);
}

function readToken(path: string): string {
  return readLocalFile("--token-file", path).trim();
}

/**
 * A local file a command reads (the file to push, a key, a token), checked
 * before anything is sent. A missing one or a folder is the caller's
 * mistake: INVALID_ARGUMENT (exit 2) naming the flag and the path, not
 * NOT_FOUND (which says the server lacks a plugin) nor INTERNAL EISDIR.
 */
export function checkLocalFile(what: string, path: string): void {
  let isFolder: boolean;
  try {
    isFolder = statSync(path).isDirectory();
  } catch (error) {
    throw localFileError(what, path, error);
  }
  if (isFolder) throw localFileError(what, path, "EISDIR");
}

/** A local file's text, with checkLocalFile's messages. */
export function readLocalFile(what: string, path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw localFileError(what, path, error);
  }
}

/** A folder the command keeps files in (--cache): made when missing, but a file there is a mistake. */
export function checkFolder(what: string, path: string): void {
  let isFile = false;
  try {
    isFile = !statSync(path).isDirectory();
  } catch {
    return; // missing: made on first use
  }
  if (isFile)
    throw new PluginError(Code.InvalidArgument, `${what} ${quoted(path, 200)} is a file, not a folder`);
}

/** Where `-o` writes: its folder must exist, and it must not be a folder itself. */
export function checkOutputFile(what: string, path: string): void {
  let isFolder = false;
  try {
    isFolder = statSync(path).isDirectory();
  } catch {
    try {
      if (!statSync(dirname(path)).isDirectory()) throw new Error("not a folder");
    } catch {
      throw new PluginError(
        Code.InvalidArgument,
        `${what} ${quoted(path, 200)}: the folder ${quoted(dirname(path), 200)} does not exist; create it first`,
      );
    }
  }
  if (isFolder) {
    throw new PluginError(
      Code.InvalidArgument,
      `${what} ${quoted(path, 200)} is a folder: give the name of the file to write in it`,
    );
  }
}

/** `error` (or an errno code) from reading a local file, as what the person should change. */
function localFileError(what: string, path: string, error: unknown): PluginError {
  const errno = typeof error === "string" ? error : (error as NodeJS.ErrnoException).code;
  const shown = quoted(path, 200);
  switch (errno) {
    case "ENOENT":
    case "ENOTDIR":
      return new PluginError(Code.InvalidArgument, `${what} ${shown} does not exist`);
    case "EISDIR":
      return new PluginError(Code.InvalidArgument, `${what} ${shown} is a folder, not a file`);
    case "EACCES":
    case "EPERM":
      return new PluginError(Code.InvalidArgument, `${what} ${shown} cannot be read: permission denied`);
    default:
      return PluginError.from(error, `reading ${what} ${shown}`);
  }
}

function readNumber(value: string, unit: "bytes" | "seconds" | "count"): number | undefined {
  if (unit === "bytes") return parseByteSize(value);
  const pattern = unit === "seconds" ? /^\s*\d{1,15}(\.\d{1,9})?\s*$/ : /^\s*\d{1,15}\s*$/;
  return pattern.test(value) ? Number(value) : undefined;
}

/** `--timeout` in milliseconds, or undefined. */
export function timeoutMs(flags: ClientFlags): number | undefined {
  if (flags.timeout === undefined) return undefined;
  return Math.round(numberFlag("--timeout", flags.timeout, "seconds") * 1000);
}

/**
 * The value of a numeric flag, or INVALID_ARGUMENT (exit 2) saying what it
 * takes: every numeric flag of the client commands is read here, so that
 * `--chunk-size abc` and `--limit x` are answered alike. Sizes take a unit
 * (64KiB, parseByteSize); seconds a fraction; counts are whole numbers.
 */
export function numberFlag(
  flag: string,
  value: string,
  unit: "bytes" | "seconds" | "count",
  least: 0 | 1 = 1,
  most = Number.MAX_SAFE_INTEGER,
): number {
  const n = readNumber(value, unit);
  if (n !== undefined && n <= most && (least === 0 ? n >= 0 : n > 0)) return n;
  const [kind, range] = least === 0 ? ["", ", 0 or more"] : ["positive ", ""];
  const upTo = most < Number.MAX_SAFE_INTEGER ? `, at most ${most}` : "";
  const what =
    unit === "bytes"
      ? `a ${kind}number of bytes${range} (${BYTE_SIZE_EXAMPLE})`
      : unit === "seconds"
        ? `a ${kind}number of seconds${range} (such as 30 or 0.5)`
        : `a ${kind}whole number${range}`;
  throw new PluginError(Code.InvalidArgument, `${flag} must be ${what}${upTo}, not ${quoted(value)}`);
}

/**
 * Runs `use` with a client of the server the flags name, and an AbortSignal
 * that Ctrl-C aborts (the command then fails with CANCELLED, exit 130,
 * leaving no half-written file).
 */
export function withClient<T>(
  flags: ClientFlags,
  use: (client: PluginClient, control: { signal: AbortSignal; timeoutMs?: number }) => Promise<T>,
): Promise<T> {
  return withClientOf(
    async (connection) =>
      (await import("atomix-plugins-client/plugin-client")).createPluginClient(connection),
    flags,
    use,
  );
}

/**
 * withClient for any client made from the flags' connection (the runtime
 * admin client, say). `create` may import the client first: `serve` loads
 * no client code (README, Performance: a fresh server's memory).
 */
export async function withClientOf<Client extends { close(): void }, T>(
  create: (connection: ConnectionOptions) => Client | Promise<Client>,
  flags: ClientFlags,
  use: (client: Client, control: { signal: AbortSignal; timeoutMs?: number }) => Promise<T>,
): Promise<T> {
  const limit = timeoutMs(flags);
  const client = await create(connectionFrom(flags));
  const controller = new AbortController();
  const interrupt = () => controller.abort(new PluginError(Code.Cancelled, "interrupted"));
  process.once("SIGINT", interrupt);
  try {
    return await use(client, { signal: controller.signal, ...(limit ? { timeoutMs: limit } : {}) });
  } finally {
    process.off("SIGINT", interrupt);
    client.close();
  }
}

/** Adds `--runtime` and `--build` (needed unless the plugin is given as a reference). */
export function withRuntimeOptions(command: Command): Command {
  return command
    .option("-r, --runtime <version>", "runtime release the plugin is built for, e.g. 1.0.0")
    .option("-b, --build <build_version>", "runtime build, e.g. node20 or go1.19.8");
}

export const PLUGIN_ARGUMENT_HELP =
  "name@version (counter@1.0.0, @acme/driver@1.2.0) or a reference atomix-plugin://V/B/name@version@sha256:...";

/**
 * The build key named by the `<plugin>` argument and `--runtime`/`--build`;
 * a reference (what `compile` prints) names the runtime and pins the digest.
 */
export function keyFromArgs(
  spec: string,
  options: { runtime?: string; build?: string },
): { key: BuildKey; digest?: Digest } {
  if (spec.startsWith("atomix-plugin://")) {
    const reference = parseReference(spec);
    const { runtime } = reference.key;
    if (
      (options.runtime && options.runtime !== runtime.version) ||
      (options.build && options.build !== runtime.buildVersion)
    ) {
      throw new PluginError(Code.InvalidArgument, `--runtime/--build contradict the reference ${spec}`);
    }
    return { key: reference.key, digest: reference.digest };
  }
  if (!options.runtime || !options.build) {
    throw new PluginError(
      Code.InvalidArgument,
      `${spec}: --runtime and --build are required (or give a reference atomix-plugin://...)`,
    );
  }
  const plugin = parsePluginSpec(spec);
  return {
    key: parseBuildKey({ runtime: { version: options.runtime, buildVersion: options.build }, plugin }),
  };
}

/**
 * Prints one line naming the gRPC code and the message (a JSON object under
 * `--json`) and exits with the code's class.
 */
export function fail(error: unknown, json = false): never {
  const pluginError = PluginError.from(error);
  const untrusted = pluginError instanceof UntrustedArtifactError;
  const exitCode = untrusted ? EXIT.untrusted : exitCodeFor(pluginError.code);
  // Exit 9 has a word of its own: PERMISSION_DENIED (7) is about the caller, this about the artifact.
  const code = untrusted ? "UNTRUSTED" : codeName(pluginError.code);
  const message = withAdvice(pluginError).replace(/\s*\n\s*/g, " ");
  // The message is often the server's, quoting what a plugin's build printed.
  process.stderr.write(
    json
      ? `${visibleJson({ error: { code, message, exitCode } })}\n`
      : `atomix-plugins: ${code}: ${visibleText(message)}\n`,
  );
  process.exit(exitCode);
}

/** What to change on the command line, for each way the server was not reached. */
const UNREACHABLE_ADVICE: Record<UnreachableReason, string> = {
  refused:
    "start one with `atomix-plugins serve` (`npm start` in a checkout), or give its address with --server",
  unresolved: "check the host of --server (or $ATOMIX_PLUGINS_SERVER)",
  unroutable: "check --server, and the network between here and there",
  "connect-timeout": "check --server, and whether a firewall drops the connection",
  silent: "check the port of --server",
  http1: "give that port with --server",
  "expects-tls": "add --tls (and --ca if its certificate is not from a public CA)",
  "expects-plaintext": "drop --tls (and --ca, --cert, --key, $ATOMIX_PLUGINS_TLS)",
};

/** The message, and when the server was not reached (anywhere in its causes), the flag to change. */
function withAdvice(error: PluginError): string {
  let cause: unknown = error;
  while (cause instanceof Error && !(cause instanceof ServerUnreachableError)) cause = cause.cause;
  if (!(cause instanceof ServerUnreachableError)) return error.message;
  const advice = UNREACHABLE_ADVICE[cause.reason];
  return error.message.endsWith("?")
    ? `${error.message} ${advice.charAt(0).toUpperCase()}${advice.slice(1)}`
    : `${error.message}; ${advice}`;
}

/** Wraps an action so that every error ends in `fail` (as JSON when the command got `--json`). */
export function action<Args extends unknown[]>(
  run: (...args: Args) => Promise<void>,
): (...args: Args) => Promise<void> {
  return async (...args: Args) => {
    try {
      await run(...args);
    } catch (error) {
      const command = args.at(-1) as Command | undefined;
      const json = typeof command?.opts === "function" && command.opts().json === true;
      fail(error, json);
    }
  };
}

/** `value` as JSON on stdout: every string exact for a JSON reader, nothing a terminal acts on (visibleJson). */
export function printJson(value: unknown): void {
  process.stdout.write(`${visibleJson(value, 2)}\n`);
}

/**
 * Writes text for a person: whatever a server, a build or a plugin put in
 * it reaches the terminal as text, never as control (visibleText; lines and
 * tabs kept). Every human output of the CLI goes through here.
 */
export function printText(text: string, stream: NodeJS.WritableStream = process.stdout): void {
  stream.write(visibleText(text, { lines: true }));
}

/**
 * `name: value` lines, names padded to `width`; a value is one line
 * whatever it holds, so that it cannot print a field of its own.
 */
export function fieldLines(fields: readonly (readonly [string, string])[], width: number): string {
  return fields.map(([name, value]) => `${`${name}:`.padEnd(width)}${visibleText(value)}\n`).join("");
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/**
 * Columns padded to their widest cell, two spaces apart, like `docker
 * images`; a cell is one line whatever it holds (visibleText).
 */
export function table(header: string[], rawRows: string[][]): string {
  const rows = rawRows.map((row) => row.map((cell) => visibleText(cell)));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    `${cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd()}\n`;
  return [header, ...rows].map(line).join("");
}

/** Rows written as they come, for listings too long to hold. */
export interface RowWriter<Row> {
  write(rows: Row[]): Promise<void>;
  end(): Promise<void>;
}

/**
 * A JSON array written element by element (two-space indented, as
 * `printJson` writes one), waiting for stdout to drain between batches.
 */
export function jsonArrayWriter(): RowWriter<unknown> {
  let count = 0;
  return {
    async write(rows) {
      if (rows.length === 0) return;
      const items = rows.map((row) => `  ${visibleJson(row, 2).replaceAll("\n", "\n  ")}`);
      await writeOut(`${count === 0 ? "[\n" : ",\n"}${items.join(",\n")}`);
      count += rows.length;
    },
    async end() {
      await writeOut(count === 0 ? "[]\n" : "\n]\n");
    },
  };
}

/**
 * `table` written a batch at a time: the columns take the widths of the
 * header and the first batch; a longer cell later only pushes its own row.
 */
export function tableWriter(header: string[]): RowWriter<string[]> {
  let widths: number[] | undefined;
  const line = (cells: string[]) =>
    `${cells
      .map((c, i) => c.padEnd(widths?.[i] ?? 0))
      .join("  ")
      .trimEnd()}\n`;
  return {
    async write(rawRows) {
      // A cell is one line whatever it holds, as in `table`.
      const rows = rawRows.map((row) => row.map((cell) => visibleText(cell)));
      let text = "";
      if (!widths) {
        widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
        text += line(header);
      }
      await writeOut(text + rows.map(line).join(""));
    },
    async end() {
      if (!widths) await this.write([]);
    },
  };
}

function writeOut(text: string): Promise<void> {
  if (text === "" || process.stdout.write(text)) return Promise.resolve();
  return new Promise((resolve) => process.stdout.once("drain", () => resolve()));
}

export { formatBuildKey };
