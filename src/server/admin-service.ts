import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import type {
  handleClientStreamingCall,
  ServerReadableStream,
  ServerUnaryCall,
  sendUnaryData,
} from "@grpc/grpc-js";
import { Code, codeName, PluginError, quoted } from "atomix-plugins-core/errors/plugin-error";
import {
  type ListPluginsRequest,
  PluginAdminDefinition,
  type PushHeader,
  PushPluginRequest,
  type PushPluginResponse,
} from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import { RESERVED_ANNOTATION_PREFIX } from "atomix-plugins-core/model/annotations";
import { type ArtifactManifest, DIGEST_PATTERN, type Digest } from "atomix-plugins-core/model/artifact";
import { type BuildKey, formatBuildKey, parseBuildKey } from "atomix-plugins-core/model/build-key";
import { PROVENANCE } from "atomix-plugins-core/model/provenance";
import type { Logger } from "pino";
import type { Compiler } from "../compiler/compiler.js";
import { collectCaches, type DiskCache } from "../compiler/disk-cache.js";
import type { ServeConfig } from "../config.js";
import type { Attestor } from "../provenance/attestor.js";
import { type ArtifactStore, heldHere } from "../store/artifact-store.js";
import { listPage } from "../store/manifest-pages.js";
import type { AdminAuth } from "./admin-auth.js";
import { grpcService, type HandlersOf } from "./grpc-service.js";
import { toManifestMessage } from "./manifest-message.js";
import { toServiceError } from "./status.js";

export interface AdminDeps {
  config: Pick<ServeConfig, "maxArtifactBytes">;
  auth: AdminAuth;
  store: ArtifactStore;
  log: Logger;
  /** Signs the provenance of pushed artifacts; absent, they are stored unsigned. */
  attestor?: Attestor | undefined;
  /** Names the key a build version's artifact is stored under (`node20.20.2` → `node20`); absent, every key is its own. */
  compiler?: Pick<Compiler, "storedKey"> | undefined;
  /** What the server keeps on disk between builds: `gc` reclaims and reports each. */
  caches?: readonly DiskCache[];
}

/**
 * PluginAdmin's handlers as generated, except that PushPlugin's requests arrive
 * as `decodePushRequest` leaves them (a request, or the reason it could not
 * be decoded): the one place the admin service departs from the generated
 * types, so that a bad push is answered INVALID_ARGUMENT, not INTERNAL. The
 * runtime-release calls are served by runtime-admin-service.ts.
 */
export type AdminServer = Omit<
  HandlersOf<typeof PluginAdminDefinition>,
  "pushPlugin" | "registerRuntime" | "listRuntimes" | "inspectRuntime" | "removeRuntime" | "getBuildLog"
> & {
  pushPlugin: handleClientStreamingCall<DecodedPushRequest, PushPluginResponse>;
};

/** atomix.plugins.admin.v1.PluginAdmin: push, list, inspect, remove, gc. */
export function createAdminService(deps: AdminDeps): AdminServer {
  const { store, log } = deps;
  /** What `key` finds under the key its artifact is built and stored under, when that is another one. */
  const storedElsewhere = async <T>(key: BuildKey, find: (at: BuildKey) => Promise<T | undefined>) => {
    const storedKey = (await deps.compiler?.storedKey?.(key)) ?? key;
    return storedKey === key ? undefined : find(storedKey);
  };

  /**
   * Adapts a promise-returning handler to grpc-js's callback style. Calls
   * that change the store need the admin token; reads are as open as the
   * catalog page.
   */
  function unary<Request, Response>(
    access: "read" | "write",
    handler: (request: Request) => Promise<Response>,
  ) {
    return (call: ServerUnaryCall<Request, Response>, callback: sendUnaryData<Response>) => {
      Promise.resolve()
        .then(() => {
          if (access === "write") deps.auth.check(call);
          return handler(call.request);
        })
        .then(
          (response) => callback(null, response),
          (error: unknown) => callback(toServiceError(error, log)),
        );
    };
  }

  async function pushPlugin(
    call: ServerReadableStream<DecodedPushRequest, PushPluginResponse>,
    signal: AbortSignal,
  ) {
    const credential = deps.auth.check(call);
    const messages = call[Symbol.asyncIterator]() as AsyncIterator<DecodedPushRequest>;
    const first = await messages.next();
    const part = first.done ? undefined : decoded(first.value).part;
    if (part?.$case !== "header") {
      throw new PluginError(Code.InvalidArgument, "the first PushPluginRequest must carry the header");
    }
    const header: PushHeader = part.value;
    const key = parseBuildKey(header);
    const expected = checkPushHeader(header, deps.config.maxArtifactBytes);
    async function* data(): AsyncGenerator<Uint8Array> {
      for (let next = await messages.next(); !next.done; next = await messages.next()) {
        const { part } = decoded(next.value);
        if (part?.$case !== "data") {
          throw new PluginError(Code.InvalidArgument, "only the first PushPluginRequest may carry a header");
        }
        yield part.value;
      }
    }
    let manifest: ArtifactManifest;
    try {
      manifest = await store.put(key, data(), {
        mediaType: header.mediaType,
        annotations: header.annotations,
        maxSize: deps.config.maxArtifactBytes,
        ...expected,
        signal,
        // A signature vouches for who pushed: without an admin token anyone
        // could, so such pushes are stored unsigned and verifying runtimes refuse them.
        ...(deps.attestor && deps.auth.required ? { attest: attestPush(deps.attestor, credential) } : {}),
      });
    } catch (error) {
      // Said once the store has let go of the push: from this line on, nothing
      // of it can appear, so an operator (or a test) knows the key is as it was.
      const code = PluginError.from(signal.aborted ? signal.reason : error).code;
      log.info({ key: formatBuildKey(key), code: codeName(code), by: credential }, "push not stored");
      throw error;
    }
    log.info(
      { key: formatBuildKey(key), digest: manifest.digest, size: manifest.size, by: credential },
      "artifact pushed",
    );
    return { manifest: toManifestMessage(manifest, heldHere(deps.store, manifest.digest)) };
  }

  return {
    pushPlugin: clientStreaming(pushPlugin, log),
    listPlugins: unary("read", async (request: ListPluginsRequest) => {
      const page = await listPage(store, {
        pluginName: request.pluginName,
        runtimeVersion: request.runtimeVersion,
        limit: request.pageSize,
        pageToken: request.pageToken,
      });
      return {
        manifests: page.manifests.map((m) => toManifestMessage(m, heldHere(deps.store, m.digest))),
        nextPageToken: page.next ?? "",
      };
    }),
    inspectPlugin: unary("read", async (request: Parameters<typeof parseBuildKey>[0]) => {
      const key = parseBuildKey(request);
      const manifest = (await store.get(key)) ?? (await storedElsewhere(key, (at) => store.get(at)));
      if (!manifest) throw new PluginError(Code.NotFound, `no artifact stored for ${formatBuildKey(key)}`);
      return toManifestMessage(manifest, heldHere(deps.store, manifest.digest));
    }),
    getProvenance: unary("read", async (request: Parameters<typeof parseBuildKey>[0]) => {
      const key = parseBuildKey(request);
      const found =
        (await store.getProvenance(key)) ?? (await storedElsewhere(key, (at) => store.getProvenance(at)));
      if (!found) throw new PluginError(Code.NotFound, `no artifact stored for ${formatBuildKey(key)}`);
      if (!found.bundle) {
        throw new PluginError(
          Code.NotFound,
          `the artifact stored for ${formatBuildKey(key)} (${found.manifest.digest}) has no signed provenance: it was stored by a server without --signing-key, or pushed to one without an admin token; build it again, or push it with the admin token to a server that signs`,
        );
      }
      return { digest: found.manifest.digest, mediaType: PROVENANCE.bundleMediaType, bundle: found.bundle };
    }),
    removePlugin: unary("write", async (request: Parameters<typeof parseBuildKey>[0]) => {
      const key = parseBuildKey(request);
      const removed = await store.remove(key);
      if (removed) log.info({ key: formatBuildKey(key) }, "artifact removed");
      return { removed };
    }),
    collectGarbage: unary("write", async () => {
      const report = { ...(await store.collectGarbage()), caches: await collectCaches(deps.caches ?? []) };
      log.info(report, "garbage collected");
      return report;
    }),
  };
}

/**
 * PushPlugin's requests as the handler receives them: decoded here rather
 * than by grpc-js, so that a message that cannot be decoded (a header
 * `size` past 2^53, which a JavaScript number cannot hold) is answered
 * INVALID_ARGUMENT naming the field instead of INTERNAL.
 */
type DecodedPushRequest = PushPluginRequest | { undecodable: PluginError };

/** PluginAdmin, with PushPlugin's requests decoded by `decodePushRequest`. */
const generated = grpcService(PluginAdminDefinition);
export const pluginAdminDefinition = {
  ...generated,
  pushPlugin: { ...generated.pushPlugin, requestDeserialize: decodePushRequest },
};

function decoded(request: DecodedPushRequest): PushPluginRequest {
  if ("undecodable" in request) throw request.undecodable;
  return request;
}

function decodePushRequest(bytes: Buffer): DecodedPushRequest {
  try {
    return PushPluginRequest.decode(bytes);
  } catch (error) {
    const size = headerSizeField(bytes);
    if (size !== undefined && size > BigInt(Number.MAX_SAFE_INTEGER)) {
      return {
        undecodable: new PluginError(
          Code.InvalidArgument,
          `size ${size} is larger than any artifact can be (at most ${Number.MAX_SAFE_INTEGER} bytes)`,
        ),
      };
    }
    return {
      undecodable: new PluginError(
        Code.InvalidArgument,
        `a PushPluginRequest is not a valid protobuf message: ${(error as Error).message}`,
        { cause: error },
      ),
    };
  }
}

/** PushHeader.size (field 4 of field 1) read as a bigint, or undefined. */
function headerSizeField(bytes: Uint8Array): bigint | undefined {
  try {
    const request = new BinaryReader(bytes);
    while (request.pos < request.len) {
      const [field, wireType] = request.tag();
      if (field !== 1 || wireType !== WireType.LengthDelimited) {
        request.skip(wireType);
        continue;
      }
      const header = new BinaryReader(request.bytes());
      while (header.pos < header.len) {
        const [headerField, headerWireType] = header.tag();
        if (headerField === 4 && headerWireType === WireType.Varint) return BigInt(header.uint64());
        header.skip(headerWireType);
      }
      return undefined;
    }
  } catch {
    // not even the header's size can be read: the caller says so
  }
  return undefined;
}

/** Annotation keys the server writes itself and the catalog page shows as facts. */

const MAX_MEDIA_TYPE_LENGTH = 255;
/** RFC 6838 §4.2 restricted-name: 1 to 127 characters, the first a letter or digit. */
const RESTRICTED_NAME = "[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}";
/** RFC 9110 §5.6.2 token and §5.6.4 quoted-string, for parameter values. */
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const QUOTED_STRING = '"(?:[\\t !#-\\[\\]-~]|\\\\[\\t -~])*"';
const MEDIA_TYPE = new RegExp(
  `^${RESTRICTED_NAME}/${RESTRICTED_NAME}(?:[ \\t]*;[ \\t]*${TOKEN}=(?:${TOKEN}|${QUOTED_STRING}))*$`,
);

/** type/subtype with optional parameters, as RFC 6838 and RFC 9110 write them; no CR, LF or other controls. */
function isMediaType(value: string): boolean {
  return value.length <= MAX_MEDIA_TYPE_LENGTH && MEDIA_TYPE.test(value);
}

/**
 * What the header announces, checked before any byte is read. A push must
 * announce its size or its digest: the store commits only once the bytes
 * received match them, so a stream cut short by a cancelled, timed-out or
 * killed client never replaces the key's artifact. `size` 0 is proto3's
 * "not set"; an empty artifact is pushed with its digest.
 */
function checkPushHeader(
  header: PushHeader,
  maxArtifactBytes: number,
): { expectedDigest?: Digest; expectedSize?: number } {
  if (header.digest && !DIGEST_PATTERN.test(header.digest)) {
    throw new PluginError(
      Code.InvalidArgument,
      `digest ${quoted(header.digest)} must be sha256:<64 lowercase hex>`,
    );
  }
  if (!header.digest && header.size === 0) {
    throw new PluginError(
      Code.InvalidArgument,
      "size is required when digest is not set: announce the artifact's size in bytes (or its digest), so that a push cut short is not stored",
    );
  }
  if (header.mediaType && !isMediaType(header.mediaType)) {
    throw new PluginError(
      Code.InvalidArgument,
      `media_type ${quoted(header.mediaType)} must be a media type (RFC 6838) such as text/javascript or application/octet-stream; parameters as ;name=value, at most ${MAX_MEDIA_TYPE_LENGTH} characters`,
    );
  }
  for (const name of Object.keys(header.annotations)) {
    if (name.toLowerCase().startsWith(RESERVED_ANNOTATION_PREFIX)) {
      throw new PluginError(
        Code.InvalidArgument,
        `annotations ${quoted(name)}: keys under ${RESERVED_ANNOTATION_PREFIX} are set by the server (toolchain, source, build), not by a push`,
      );
    }
  }
  if (header.size > maxArtifactBytes) {
    throw new PluginError(
      Code.ResourceExhausted,
      `size ${header.size} is larger than the limit of ${maxArtifactBytes} bytes`,
    );
  }
  return {
    ...(header.digest ? { expectedDigest: header.digest as Digest } : {}),
    ...(header.size > 0 ? { expectedSize: header.size } : {}),
  };
}

/**
 * Adapts a promise-returning client-streaming handler to grpc-js: the
 * handler gets a signal that aborts with the call (see abortWithCall), and
 * once the call is cancelled or past its deadline, what failed is the
 * stream, and the reason is the signal's.
 */
export function clientStreaming<Request, Response>(
  handler: (call: ServerReadableStream<Request, Response>, signal: AbortSignal) => Promise<Response>,
  log: Logger,
) {
  return (call: ServerReadableStream<Request, Response>, callback: sendUnaryData<Response>) => {
    const abort = abortWithCall(call as ServerReadableStream<unknown, unknown>);
    handler(call, abort.signal).then(
      (response) => {
        abort.done();
        callback(null, response);
      },
      (error: unknown) => {
        abort.done();
        callback(toServiceError(abort.signal.aborted ? abort.signal.reason : error, log));
      },
    );
  };
}

/**
 * An AbortSignal for one client-streaming call: aborted with CANCELLED when
 * the client cancels (or its connection drops), with DEADLINE_EXCEEDED when
 * the call's deadline passes. `done()` once the handler has answered: grpc-js
 * also reports "cancelled" after a call that ended well.
 */
export function abortWithCall(call: ServerReadableStream<unknown, unknown>): {
  signal: AbortSignal;
  done(): void;
} {
  const controller = new AbortController();
  let finished = false;
  call.on("cancelled", () => {
    if (!finished) {
      controller.abort(new PluginError(Code.Cancelled, "the push was cancelled; nothing was stored"));
    }
  });
  const deadline = Number(call.getDeadline());
  const timer = Number.isFinite(deadline)
    ? setTimeout(
        () =>
          controller.abort(
            new PluginError(Code.DeadlineExceeded, "the push's deadline passed; nothing was stored"),
          ),
        Math.max(0, deadline - Date.now()),
      )
    : undefined;
  return {
    signal: controller.signal,
    done() {
      finished = true;
      clearTimeout(timer);
    },
  };
}

function attestPush(attestor: Attestor, credential: string) {
  const receivedOn = new Date();
  return (manifest: ArtifactManifest) =>
    attestor.attest(manifest, { kind: "pushed", credential, receivedOn });
}
