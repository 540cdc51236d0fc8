import { randomUUID } from "node:crypto";
import { ANNOTATIONS } from "atomix-plugins-core/model/annotations";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import {
  PROVENANCE,
  type ProvenanceStatement,
  type ResourceDescriptor,
  subjectName,
} from "atomix-plugins-core/model/provenance";
import { SERVER_VERSION } from "../version.js";

/** How an artifact came to be stored: built here, or pushed by an operator. */
export type Origin =
  | { kind: "built"; startedOn: Date; finishedOn: Date }
  | {
      kind: "pushed";
      /** Who pushed: a name for the credential, never the credential itself. */
      credential: string;
      receivedOn: Date;
    };

/**
 * The in-toto Statement v1 with a SLSA Provenance v1 predicate for one
 * stored artifact. Everything it says is read from the manifest the store is
 * about to commit (key, digest, and the annotations the toolchain wrote), so
 * the statement and the manifest cannot disagree.
 */
export function provenanceStatement(
  manifest: ArtifactManifest,
  origin: Origin,
  builderId: string,
): ProvenanceStatement {
  const { key, annotations } = manifest;
  const externalParameters = {
    runtime: { version: key.runtime.version, buildVersion: key.runtime.buildVersion },
    plugin: { name: key.plugin.name, version: key.plugin.version },
  };
  const pushed = origin.kind === "pushed";
  const [startedOn, finishedOn] = pushed
    ? [origin.receivedOn, origin.receivedOn]
    : [origin.startedOn, origin.finishedOn];
  return {
    _type: PROVENANCE.statementType,
    subject: [{ name: subjectName(key), digest: { sha256: manifest.digest.slice("sha256:".length) } }],
    predicateType: PROVENANCE.predicateType,
    predicate: {
      buildDefinition: pushed
        ? {
            buildType: PROVENANCE.pushedType,
            externalParameters: { ...externalParameters, mediaType: manifest.mediaType },
            internalParameters: { pushedBy: origin.credential },
          }
        : {
            buildType: PROVENANCE.builtType,
            externalParameters,
            internalParameters: { toolchain: annotations[ANNOTATIONS.toolchain] ?? "unknown" },
            resolvedDependencies: resolvedDependencies(manifest),
          },
      runDetails: {
        builder: { id: builderId, version: { "atomix-plugins": SERVER_VERSION } },
        metadata: {
          invocationId: randomUUID(),
          startedOn: startedOn.toISOString(),
          finishedOn: finishedOn.toISOString(),
        },
      },
    },
  };
}

/** The source, the runtime release and the toolchain, as far as the manifest records them. */
function resolvedDependencies(manifest: ArtifactManifest): ResourceDescriptor[] {
  const { key, annotations } = manifest;
  const found: ResourceDescriptor[] = [];
  const source = annotations[ANNOTATIONS.source];
  const integrity = annotations[ANNOTATIONS.sourceIntegrity];
  if (source || integrity) {
    found.push({
      name: `${key.plugin.name}@${key.plugin.version}`,
      ...(source ? { uri: source } : {}),
      ...(integrity ? { digest: integrityDigest(integrity) } : {}),
      annotations: { role: "source", ...(integrity ? { integrity } : {}) },
    });
  }
  const runtimeDigest = annotations[ANNOTATIONS.runtimeDigest];
  found.push({
    name: `runtime ${key.runtime.version}`,
    uri: `atomix-runtime://${key.runtime.version}`,
    ...(runtimeDigest?.startsWith("sha256:")
      ? { digest: { sha256: runtimeDigest.slice("sha256:".length) } }
      : {}),
    annotations: { role: "runtime", buildVersion: key.runtime.buildVersion },
  });
  const toolchain = annotations[ANNOTATIONS.toolchain];
  if (toolchain) {
    found.push({
      name: toolchain,
      annotations: { role: "toolchain", version: annotations[ANNOTATIONS.toolchainVersion] ?? "unknown" },
    });
  }
  return found;
}

/**
 * An in-toto DigestSet for a source's integrity: npm's Subresource Integrity
 * (`sha512-<base64>`) becomes `{sha512: <hex>}`; Go's `h1:<base64>` (a hash
 * of the module's file list, not of one file) is kept under its own name,
 * `dirhash1`, as in-toto allows for algorithms it does not list.
 */
export function integrityDigest(integrity: string): Record<string, string> {
  const sri = /^(sha256|sha384|sha512)-([A-Za-z0-9+/]+={0,2})$/.exec(integrity);
  if (sri?.[1] && sri[2]) return { [sri[1]]: Buffer.from(sri[2], "base64").toString("hex") };
  if (integrity.startsWith("h1:")) return { dirhash1: integrity.slice(3) };
  return { integrity };
}
