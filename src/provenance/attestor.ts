import type { bundleToJSON } from "@sigstore/bundle";
import type { DSSEBundleBuilder, Signer } from "@sigstore/sign";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import { PROVENANCE } from "atomix-plugins-core/model/provenance";
import type { SigningKey } from "./signing-key.js";
import { type Origin, provenanceStatement } from "./statement.js";

/** Signs the provenance of what the server stores. */
export interface Attestor {
  readonly keyId: string;
  readonly builderId: string;
  /** The Sigstore bundle (JSON bytes) of `manifest`'s provenance. */
  attest(manifest: ArtifactManifest, origin: Origin): Promise<Buffer>;
}

/**
 * DSSE bundles signed with the server's own key. The bundle names the key by
 * its hint and carries no certificate, transparency-log entry or timestamp:
 * it is meant to verify offline, against keys a runtime is configured with.
 */
export function createAttestor(key: SigningKey, builderId: string = PROVENANCE.defaultBuilderId): Attestor {
  const signer: Signer = {
    sign: async (data) => ({
      signature: key.sign(data),
      key: { $case: "publicKey", publicKey: key.publicKeyPem, hint: key.keyId },
    }),
  };
  // @sigstore/sign (with the HTTP stack it brings for Fulcio and Rekor,
  // unused here) is about 8 MiB of a fresh server: loaded at the first
  // signature, not at start (README, Performance: a fresh server's memory).
  let loaded: Promise<SigstoreParts> | undefined;
  const sigstore = () => {
    loaded ??= loadSigstore(signer);
    return loaded;
  };
  return {
    keyId: key.keyId,
    builderId,
    async attest(manifest, origin) {
      const statement = provenanceStatement(manifest, origin, builderId);
      const { builder, bundleToJSON } = await sigstore();
      const bundle = await builder.create({
        data: Buffer.from(JSON.stringify(statement)),
        type: PROVENANCE.payloadType,
      });
      return Buffer.from(JSON.stringify(bundleToJSON(bundle)));
    },
  };
}

interface SigstoreParts {
  builder: DSSEBundleBuilder;
  bundleToJSON: typeof bundleToJSON;
}

async function loadSigstore(signer: Signer): Promise<SigstoreParts> {
  const [sign, bundle] = await Promise.all([import("@sigstore/sign"), import("@sigstore/bundle")]);
  return {
    builder: new sign.DSSEBundleBuilder({ signer, witnesses: [] }),
    bundleToJSON: bundle.bundleToJSON,
  };
}
