import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign as signBytes,
} from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { Code, PluginError } from "atomix-plugins-core/errors/plugin-error";
import { keyId } from "atomix-plugins-core/model/provenance";

export type KeyAlgorithm = "ecdsa-p256" | "ed25519";
export const KEY_ALGORITHMS: readonly KeyAlgorithm[] = ["ecdsa-p256", "ed25519"];

/** The server's signing key: what signs provenance, and how clients name it. */
export interface SigningKey {
  readonly algorithm: KeyAlgorithm;
  /** The public-key hint bundles carry (model/provenance.ts keyId). */
  readonly keyId: string;
  /** SPKI PEM: what runtimes are given to trust. */
  readonly publicKeyPem: string;
  /** A raw signature of `data`: ECDSA P-256 over SHA-256 (DER), or Ed25519. */
  sign(data: Buffer): Buffer;
}

/** A new key pair as PEM text: PKCS#8 private key, SPKI public key. */
export function generateSigningKey(algorithm: KeyAlgorithm): { privateKeyPem: string; publicKeyPem: string } {
  const pair =
    algorithm === "ed25519"
      ? generateKeyPairSync("ed25519")
      : generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  return {
    privateKeyPem: pair.privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicKeyPem: pair.publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

/**
 * Reads `serve --signing-key FILE`: a PEM private key (PKCS#8 or SEC1),
 * ECDSA P-256 or Ed25519, unencrypted (the file's permissions protect it,
 * as a TLS key's do). Every failure stops the server at start, naming the
 * file: a replica that cannot sign must not serve artifacts unsigned.
 */
export async function loadSigningKey(path: string): Promise<SigningKey & { readableByOthers: boolean }> {
  // PEM text given in place of the path is refused by the config schema
  // (config.ts, fileName), before anything could quote it.
  let text: string;
  let mode: number;
  try {
    [text, mode] = await Promise.all([readFile(path, "utf8"), stat(path).then((s) => s.mode)]);
  } catch (error) {
    throw PluginError.from(error, `reading the signing key ${path}`);
  }
  if (/-----BEGIN (ENCRYPTED PRIVATE KEY|[A-Z ]*PRIVATE KEY-----\r?\nProc-Type: 4,ENCRYPTED)/.test(text)) {
    throw new PluginError(
      Code.InvalidArgument,
      `--signing-key ${path} is encrypted; the server reads an unencrypted PEM private key, protected by the file's permissions (openssl pkey -in ${path} -out plain.key, or atomix-plugins keygen)`,
    );
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(text);
  } catch (error) {
    throw new PluginError(
      Code.InvalidArgument,
      `--signing-key ${path} is not an unencrypted PEM private key (write one with \`atomix-plugins keygen\`): ${(error as Error).message}`,
      { cause: error },
    );
  }
  return { ...signingKey(privateKey, path), readableByOthers: (mode & 0o077) !== 0 };
}

export function signingKey(privateKey: KeyObject, where = "the signing key"): SigningKey {
  const type = privateKey.asymmetricKeyType;
  let algorithm: KeyAlgorithm;
  if (type === "ed25519") algorithm = "ed25519";
  else if (type === "ec" && privateKey.asymmetricKeyDetails?.namedCurve === "prime256v1")
    algorithm = "ecdsa-p256";
  else {
    throw new PluginError(
      Code.InvalidArgument,
      `${where} is a ${type}${privateKey.asymmetricKeyDetails?.namedCurve ? ` ${privateKey.asymmetricKeyDetails.namedCurve}` : ""} key; provenance is signed with ECDSA P-256 or Ed25519 keys (atomix-plugins keygen writes one)`,
    );
  }
  const publicKey = createPublicKey(privateKey);
  const digest = algorithm === "ed25519" ? null : "sha256";
  return {
    algorithm,
    keyId: keyId(publicKey),
    publicKeyPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
    sign: (data) => signBytes(digest, data, privateKey),
  };
}
