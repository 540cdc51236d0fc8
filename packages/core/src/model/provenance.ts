import { createHash, type KeyObject } from "node:crypto";
import type { BuildKey } from "./build-key.js";

/**
 * The words of signed provenance, shared by the server that writes it and
 * the clients that check it. Formats are the standard ones, so a security
 * team checks them with its own tools:
 *
 * - an in-toto Statement v1 (https://in-toto.io/Statement/v1) whose one
 *   subject is the artifact: its name is `subjectName(key)`, its digest the
 *   artifact's sha256;
 * - a SLSA Provenance v1 predicate: how it was built (or that it was pushed);
 * - signed in a DSSE envelope, packaged as a Sigstore bundle v0.3 whose
 *   verification material is a public-key hint (`keyId`), not a certificate:
 *   no transparency log or timestamp authority is asked, so it verifies
 *   offline.
 */
export const PROVENANCE = {
  bundleMediaType: "application/vnd.dev.sigstore.bundle.v0.3+json",
  payloadType: "application/vnd.in-toto+json",
  statementType: "https://in-toto.io/Statement/v1",
  predicateType: "https://slsa.dev/provenance/v1",
  /** buildType of an artifact this service compiled from its source. */
  builtType: "https://atomix.dev/plugins/build/v1",
  /** buildType of an artifact an operator pushed prebuilt: the service vouches only for who pushed it. */
  pushedType: "https://atomix.dev/plugins/push/v1",
  /** Default builder.id: deployments set their own (`serve --builder-id`). */
  defaultBuilderId: "https://atomix.dev/plugins/server",
} as const;

export interface ResourceDescriptor {
  name?: string;
  uri?: string;
  digest?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** What the client reads of a Statement; the rest is for people and their tools. */
export interface ProvenanceStatement {
  _type: string;
  subject: ResourceDescriptor[];
  predicateType: string;
  predicate: {
    buildDefinition: {
      buildType: string;
      externalParameters: Record<string, unknown>;
      internalParameters?: Record<string, unknown>;
      resolvedDependencies?: ResourceDescriptor[];
    };
    runDetails: {
      builder: { id: string; version?: Record<string, string> };
      metadata?: { invocationId?: string; startedOn?: string; finishedOn?: string };
    };
  };
}

/**
 * The subject name of an artifact: the plugin reference without its digest,
 * `atomix-plugin://<runtime>/<build>/<name>@<version>`. A statement signed
 * for one key cannot be replayed for another.
 */
export function subjectName(key: BuildKey): string {
  const { runtime, plugin } = key;
  return `atomix-plugin://${runtime.version}/${runtime.buildVersion}/${plugin.name}@${plugin.version}`;
}

/**
 * The key id a bundle names its signer by (its public-key hint): the sha256
 * of the key's SubjectPublicKeyInfo DER, in hex, as cosign and sigstore-js
 * compute it for a PEM public key. The server and every client derive it from
 * the key itself, so it needs no registry of names.
 */
export function keyId(publicKey: KeyObject): string {
  return createHash("sha256")
    .update(publicKey.export({ type: "spki", format: "der" }))
    .digest("hex");
}
