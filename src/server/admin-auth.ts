import { createHash, scryptSync, timingSafeEqual } from "node:crypto";
import type { Metadata } from "@grpc/grpc-js";
import { Code, PluginError } from "../errors/plugin-error.js";
import type { Secret } from "../model/secret.js";

/**
 * Guards the admin API (push, remove, gc): whoever can push can replace what
 * every runtime of the fleet loads. With a token configured, admin calls
 * must carry `authorization: Bearer <token>`; the runtime API stays open.
 */
export interface AdminAuth {
  readonly required: boolean;
  /**
   * Throws UNAUTHENTICATED (no credentials) or PERMISSION_DENIED (wrong ones);
   * otherwise names the credential for provenance and logs: a fingerprint of
   * the token, never the token.
   */
  check(metadata: Metadata): string;
}

export function createAdminAuth(token: Secret | undefined): AdminAuth {
  if (!token) return { required: false, check: () => "anyone (the server has no admin token)" };
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
    check(metadata) {
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
