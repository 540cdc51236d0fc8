import { createPublicKey, type KeyObject } from "node:crypto";
import { type Bundle, bundleFromJSON } from "@sigstore/bundle";
import { toSignedEntity, toTrustMaterial, Verifier } from "@sigstore/verify";
import { UntrustedArtifactError } from "atomix-plugins-core/errors/plugin-error";
import type { Digest } from "atomix-plugins-core/model/artifact";
import { type BuildKey, formatBuildKey } from "atomix-plugins-core/model/build-key";
import {
  keyId,
  PROVENANCE,
  type ProvenanceStatement,
  subjectName,
} from "atomix-plugins-core/model/provenance";

/** A public key a client trusts: PEM text or bytes, or a KeyObject. */
export type TrustedKey = string | Buffer | KeyObject;

/** Trusted keys by key id, built once per client. */
export type TrustedKeySet = ReadonlyMap<string, KeyObject>;

/**
 * Bundles larger than this are refused before parsing: a bundle the server
 * writes is a few KiB, and its bytes come from whoever answers.
 */
export const MAX_BUNDLE_BYTES = 1024 * 1024;

/**
 * Reads the keys a client trusts. Several at once is how a deployment
 * rotates its signing key: trust the new key beside the old one, switch the
 * servers, then drop the old key once its artifacts are rebuilt or re-pushed.
 */
export function trustedKeySet(keys: readonly TrustedKey[]): TrustedKeySet {
  const set = new Map<string, KeyObject>();
  keys.forEach((key, index) => {
    let publicKey: KeyObject;
    try {
      publicKey = typeof key === "object" && "asymmetricKeyType" in key ? key : createPublicKey(key);
    } catch (error) {
      throw new UntrustedArtifactError(
        `trusted key ${index + 1} is not a PEM public key: ${(error as Error).message}`,
        { cause: error },
      );
    }
    if (publicKey.type === "private") publicKey = createPublicKey(publicKey);
    const type = publicKey.asymmetricKeyType;
    const curve = publicKey.asymmetricKeyDetails?.namedCurve;
    if (!(type === "ed25519" || (type === "ec" && curve === "prime256v1"))) {
      throw new UntrustedArtifactError(
        `trusted key ${index + 1} is ${type}${curve ? ` ${curve}` : ""}; provenance is signed with ECDSA P-256 or Ed25519 keys`,
      );
    }
    set.set(keyId(publicKey), publicKey);
  });
  return set;
}

/**
 * Checks the provenance bundle of an artifact before a single byte of it is
 * renamed into place or loaded: the DSSE signature verifies under one of the
 * trusted keys, the payload is an in-toto statement with a SLSA provenance
 * predicate, and its one subject is the build key asked for (or, for a
 * Node.js build version, the release line it refines, see lineKeys) with the
 * digest of the bytes received. Anything else is an UntrustedArtifactError
 * saying which of these failed.
 */
export function verifyProvenance(
  bundleBytes: Uint8Array,
  expected: { key: BuildKey; digest: Digest },
  trusted: TrustedKeySet,
): ProvenanceStatement {
  // The digest is left out: a reason about bytes names it, and the line stays short.
  const what = formatBuildKey(expected.key);
  const refuse = (reason: string, cause?: unknown) =>
    new UntrustedArtifactError(`${what}: ${reason}`, cause === undefined ? undefined : { cause });
  if (bundleBytes.byteLength > MAX_BUNDLE_BYTES) {
    throw refuse(`its provenance bundle has ${bundleBytes.byteLength} bytes, more than ${MAX_BUNDLE_BYTES}`);
  }
  let bundle: Bundle;
  try {
    bundle = bundleFromJSON(JSON.parse(Buffer.from(bundleBytes).toString("utf8")));
  } catch (error) {
    throw refuse(`its provenance is not a Sigstore bundle: ${(error as Error).message}`, error);
  }
  if (bundle.content.$case !== "dsseEnvelope") {
    throw refuse("its provenance bundle holds no DSSE envelope");
  }
  const material = bundle.verificationMaterial.content;
  if (material.$case !== "publicKey") {
    throw refuse("its provenance is signed with a certificate, not with a key this client can trust");
  }
  const hint = material.publicKey.hint;
  const signer = trusted.get(hint);
  if (!signer) {
    const ids = [...trusted.keys()];
    const count = ids.length === 1 ? "the 1 trusted key" : `any of the ${ids.length} trusted keys`;
    throw refuse(
      `its provenance is signed by key ${hint ? shortKeyId(hint) : "(unnamed)"}, not by ${count} (${ids.map(shortKeyId).join(", ")}); pull from a server that signs with a trusted key, or trust its key with --trust-key`,
    );
  }
  const verifier = new Verifier(
    toTrustMaterial(
      { mediaType: "", tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [] },
      (name: string) => {
        const publicKey = trusted.get(name);
        if (!publicKey) throw refuse(`key ${name} is not trusted`);
        return { publicKey, validFor: () => true };
      },
    ),
    // Offline by design: the signature itself is the proof; no transparency
    // log or timestamp authority is part of this trust model.
    { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 },
  );
  try {
    verifier.verify(toSignedEntity(bundle));
  } catch (error) {
    throw refuse(
      `the signature of its provenance does not verify with trusted key ${shortKeyId(hint)}${ALTERED}`,
      error,
    );
  }
  const envelope = bundle.content.dsseEnvelope;
  if (envelope.payloadType !== PROVENANCE.payloadType) {
    throw refuse(`its provenance carries ${envelope.payloadType}, not an in-toto statement`);
  }
  let statement: ProvenanceStatement;
  try {
    statement = JSON.parse(envelope.payload.toString("utf8")) as ProvenanceStatement;
  } catch (error) {
    throw refuse("its provenance statement is not JSON", error);
  }
  if (statement?._type !== PROVENANCE.statementType || statement.predicateType !== PROVENANCE.predicateType) {
    throw refuse(
      `its provenance is not an in-toto v1 statement of SLSA provenance v1 (${String(statement?._type)}, ${String(statement?.predicateType)})`,
    );
  }
  const subjects = Array.isArray(statement.subject) ? statement.subject : [];
  const name = subjectName(expected.key);
  const hex = expected.digest.slice("sha256:".length);
  const subject = subjects.length === 1 ? subjects[0] : undefined;
  if (!subject || !lineKeys(expected.key).some((key) => subjectName(key) === subject.name)) {
    throw refuse(
      `its provenance was signed for ${subjects.map((s) => String(s?.name)).join(", ") || "no subject"}, not for ${name}${ALTERED}`,
    );
  }
  if (subject.digest?.sha256 !== hex) {
    throw refuse(
      `its provenance was signed for bytes with digest sha256:${String(subject.digest?.sha256)}, and these bytes hash to ${expected.digest}${ALTERED}`,
    );
  }
  return statement;
}

/** What to do when what the server holds is not what was signed. */
const ALTERED = "; the server's copy was altered after it was signed: have it rebuilt or pushed again";

/** A key id as a person compares it: the first 16 of its 64 hex digits (what keygen prints begins so). */
function shortKeyId(id: string): string {
  return id.length > 16 ? `${id.slice(0, 16)}…` : id;
}

/**
 * `key`, and for a Node.js build version the release lines it refines, most
 * precise first: a server builds and signs `node20.20.2` as the `node20` (or
 * `node20.20`) its runtime declares, one artifact for the line, so that
 * naming another patch release makes no new build. A line is only ever a
 * prefix of what was asked: never another major release, runtime or plugin.
 */
function lineKeys(key: BuildKey): BuildKey[] {
  const match = /^node(\d+(?:\.\d+){0,2})$/.exec(key.runtime.buildVersion);
  const parts = match?.[1]?.split(".") ?? [];
  const keys = [key];
  for (let length = parts.length - 1; length >= 1; length--) {
    keys.push({
      ...key,
      runtime: { ...key.runtime, buildVersion: `node${parts.slice(0, length).join(".")}` },
    });
  }
  return keys;
}
