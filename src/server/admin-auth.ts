import { createHash, scryptSync, timingSafeEqual } from "node:crypto";
import { isIP } from "node:net";
import type { Metadata } from "@grpc/grpc-js";
import { isLoopback } from "atomix-plugins-client/proxy-selection";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { Secret } from "atomix-plugins-core/model/secret";
import { splitHostPort } from "../config.js";
import { peerAddress } from "./caller-identity.js";

/** What the check reads of a call: its metadata, and who sent it. */
export interface AdminCall {
  readonly metadata: Metadata;
  getPeer(): string;
}

/**
 * Guards the admin API's writes (push, remove, gc, runtime registration and
 * removal): whoever can push can replace what every runtime of the fleet
 * loads. With a token configured, they must carry `authorization: Bearer
 * <token>`; the runtime API stays open.
 */
export interface AdminAuth {
  readonly required: boolean;
  /**
   * Without a token, on a server that listens beyond loopback: why every
   * admin write is refused, with the fix (for the start-up log too).
   */
  readonly refusal?: string;
  /**
   * Throws UNAUTHENTICATED (no credentials) or PERMISSION_DENIED (wrong ones);
   * otherwise names the credential for provenance and logs: a fingerprint of
   * the token, never the token.
   */
  check(call: AdminCall): string;
}

/**
 * `listen`, the gRPC address: without a token, admin writes are open only
 * on a server that listens on loopback alone, where only this host's users
 * reach it (`npm start`'s default). Anywhere else anyone who can connect
 * could replace what every runtime loads, so they are refused with the fix.
 * A server that names `trustedProxies` takes calls a load balancer forwards
 * from beyond this host, so it is refused too; and each call must come from
 * a loopback address itself, since a listen host that is a name (localhost,
 * *.localhost) is resolved by the resolver, which may say anything.
 */
export function createAdminAuth(
  token: Secret | undefined,
  options: { listen: string; trustedProxies?: readonly string[] },
): AdminAuth {
  if (!token) {
    const { host } = splitHostPort(options.listen);
    const fix = `start it with --admin-token-file FILE (or ATOMIX_PLUGINS_ADMIN_TOKEN) and send that token (ATOMIX_PLUGINS_TOKEN for the CLI)`;
    const writes = "push, rm, gc, runtime add and runtime rm are refused";
    let refusal: string | undefined;
    if (!isLoopback(host)) {
      refusal = `this server listens on ${options.listen}, beyond loopback, and has no admin token, so ${writes}: ${fix}, or listen on loopback only (--listen 127.0.0.1:5679)`;
    } else if ((options.trustedProxies ?? []).length > 0) {
      refusal = `this server takes calls forwarded by a load balancer (--trusted-proxy), from beyond this host, and has no admin token, so ${writes}: ${fix}`;
    }
    if (refusal !== undefined) {
      const denied = refusal;
      return {
        required: false,
        refusal,
        check: () => {
          throw new PluginError(Code.PermissionDenied, denied);
        },
      };
    }
    return {
      required: false,
      check(call) {
        const peer = peerAddress(call.getPeer());
        if (isIP(peer) === 0 || !isLoopback(peer)) {
          throw new PluginError(
            Code.PermissionDenied,
            `this call comes from ${peer}, beyond loopback, and this server has no admin token, so ${writes}: ${fix}, or listen on an address of loopback only (--listen 127.0.0.1:5679)`,
          );
        }
        return "anyone (the server has no admin token)";
      },
    };
  }
  // Compare digests: equal length, so timingSafeEqual never throws and leaks no length.
  const expected = createHash("sha256").update(token.reveal()).digest();
  // Signed statements name the pusher by this, and anyone may read them: a
  // memory-hard hash makes guessing a weak token from it costly (a fast hash
  // would not), and replicas given the same token name it alike.
  let fingerprint: string | undefined;
  const name = () =>
    (fingerprint ??= `admin token ${scryptSync(token.reveal(), "atomix-plugins admin token", 8, {
      N: 2 ** 15,
      r: 8,
      p: 1,
      maxmem: 64 * 1024 * 1024,
    }).toString("hex")}`);
  return {
    required: true,
    check({ metadata }) {
      const [header] = metadata.get("authorization");
      if (header === undefined) {
        throw new PluginError(
          Code.Unauthenticated,
          "the admin API needs a token: send authorization: Bearer <token> (ATOMIX_PLUGINS_TOKEN for the CLI)",
        );
      }
      const presented = /^Bearer (.+)$/i.exec(String(header))?.[1] ?? "";
      if (!timingSafeEqual(createHash("sha256").update(presented).digest(), expected)) {
        throw new PluginError(
          Code.PermissionDenied,
          "the admin token presented is not valid for this server",
        );
      }
      return name();
    },
  };
}
