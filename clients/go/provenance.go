package plugins

// The check of signed provenance, the same as the TypeScript client's
// (src/client/provenance-check.ts): before a pulled plugin is cached or
// loaded, the server's Sigstore bundle for it must carry a DSSE signature by
// a trusted key over an in-toto Statement v1 with a SLSA Provenance v1
// predicate whose one subject names exactly this build key and these bytes.
// Only the standard library is used, so what is checked is all in this file.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/atomix/atomix-plugins/clients/go/internal/adminv1"
)

// The words of provenance, as src/model/provenance.ts defines them.
const (
	payloadType   = "application/vnd.in-toto+json"
	statementType = "https://in-toto.io/Statement/v1"
	predicateType = "https://slsa.dev/provenance/v1"
	// A bundle the server writes is a few KiB, and its bytes come from
	// whoever answers.
	maxBundleBytes = 1 << 20
)

// Sigstore bundle media types, as @sigstore/bundle accepts them.
var bundleMediaType = regexp.MustCompile(`^application/vnd\.dev\.sigstore\.bundle(\+json;version=\d\.\d|\.v\d\.\d\+json)`)

// trustedKeys are the public keys provenance may be signed by, by key id:
// the lowercase hex sha256 of the key's SubjectPublicKeyInfo DER, which is
// the hint a bundle names its signer by.
type trustedKeys map[string]crypto.PublicKey

func (t trustedKeys) ids() string {
	ids := make([]string, 0, len(t))
	for id := range t {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return strings.Join(ids, ", ")
}

// parseTrustedKeys reads PEM public keys, ECDSA P-256 or Ed25519. Several at
// once is how a deployment rotates its signing key.
func parseTrustedKeys(pems [][]byte) (trustedKeys, error) {
	keys := trustedKeys{}
	for n, text := range pems {
		where := fmt.Sprintf("plugins: trusted key %d", n+1)
		block, _ := pem.Decode(text)
		if block == nil || block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("%s: not a PEM public key (want the PREFIX.pub that atomix-plugins keygen writes)", where)
		}
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		switch k := key.(type) {
		case ed25519.PublicKey:
		case *ecdsa.PublicKey:
			if k.Curve != elliptic.P256() {
				return nil, fmt.Errorf("%s: an ECDSA key on %s; provenance is signed with ECDSA P-256 or Ed25519 keys", where, k.Curve.Params().Name)
			}
		default:
			return nil, fmt.Errorf("%s: a %T; provenance is signed with ECDSA P-256 or Ed25519 keys", where, key)
		}
		// The id of the key as parsed, not of the PEM's bytes: the same DER
		// the server hashes for its hint.
		der, err := x509.MarshalPKIXPublicKey(key)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		id := sha256.Sum256(der)
		keys[hex.EncodeToString(id[:])] = key
	}
	return keys, nil
}

// checkProvenance asks the server, on the pull's connection, for the
// provenance of the artifact just pulled and verifies it (verifyProvenance).
// A call that fails for another reason than a missing provenance is a
// *StatusError: nothing was learnt about the artifact.
func checkProvenance(ctx context.Context, conn grpc.ClientConnInterface, key Key, digest string, trusted trustedKeys) error {
	refuse := func(format string, args ...interface{}) error {
		return &VerificationError{Key: key, Digest: digest, Reason: fmt.Sprintf(format, args...)}
	}
	answer, err := adminv1.NewPluginAdminClient(conn).GetProvenance(ctx,
		&adminv1.GetProvenanceRequest{Runtime: runtimeInfo(key), Plugin: pluginInfo(key)},
		// Room for the bundle and the answer's other fields, and no more.
		grpc.MaxCallRecvMsgSize(maxBundleBytes+4096))
	switch status.Code(err) {
	case codes.OK:
	case codes.NotFound:
		return refuse("the server has no signed provenance for it: %s", status.Convert(err).Message())
	case codes.Unimplemented:
		// A server of atomix.runtime.v1 alone has no admin API, so no provenance.
		return refuse("the server has no signed provenance for it: it does not serve the admin API (%s)", status.Convert(err).Message())
	case codes.ResourceExhausted:
		return refuse("its provenance answer is larger than %d bytes: %s", maxBundleBytes, status.Convert(err).Message())
	default:
		return statusError("provenance", key, err)
	}
	if answer.Digest != digest {
		// The key now names other bytes: a race with a push or a build, not a
		// refusal (the TypeScript client says ABORTED). Nothing is loaded.
		return &StatusError{Op: "provenance", Key: key, Code: codes.Aborted,
			Message: fmt.Sprintf("replaced on the server during the pull (%s, now %s); pull again", digest, answer.Digest)}
	}
	return verifyProvenance(answer.Bundle, key.subject(), digest, trusted, refuse)
}

// verifyProvenance checks, in the TypeScript client's order: the bundle's
// size and shape, a trusted signer named by its hint, the DSSE signature over
// the pre-authentication encoding, the payload type, the statement and
// predicate types, and the one subject's name and sha256.
func verifyProvenance(bundleBytes []byte, name, digest string, trusted trustedKeys, refuse func(string, ...interface{}) error) error {
	if len(bundleBytes) > maxBundleBytes {
		return refuse("its provenance bundle has %d bytes, more than %d", len(bundleBytes), maxBundleBytes)
	}
	env, hint, err := parseBundle(bundleBytes)
	if err != nil {
		return refuse("its provenance is not a Sigstore bundle: %v", err)
	}
	if env == nil {
		return refuse("its provenance bundle holds no DSSE envelope")
	}
	if hint == nil {
		return refuse("its provenance is signed with a certificate, not with a key this runtime can trust")
	}
	signer, ok := trusted[*hint]
	if !ok {
		shown := *hint
		if shown == "" {
			shown = "(unnamed)"
		}
		return refuse("its provenance is signed by key %s, which is not trusted (trusted: %s)", shown, trusted.ids())
	}
	if !verifySignature(signer, pae(env.payloadType, env.payload), env.signature) {
		return refuse("the signature of its provenance does not verify with trusted key %s", *hint)
	}
	if env.payloadType != payloadType {
		return refuse("its provenance carries %s, not an in-toto statement", env.payloadType)
	}
	statement, err := object(env.payload)
	if err != nil {
		return refuse("its provenance statement is not JSON: %v", err)
	}
	gotType, gotPredicate := text(statement, "_type"), text(statement, "predicateType")
	if gotType != statementType || gotPredicate != predicateType {
		return refuse("its provenance is not an in-toto v1 statement of SLSA provenance v1 (%s, %s)", gotType, gotPredicate)
	}
	var subjects []json.RawMessage
	if json.Unmarshal(statement["subject"], &subjects) != nil {
		subjects = nil // not an array: no subject
	}
	var subject map[string]json.RawMessage
	if len(subjects) == 1 {
		subject, _ = object(subjects[0])
	}
	if subject == nil || text(subject, "name") != name {
		names := make([]string, 0, len(subjects))
		for _, s := range subjects {
			o, _ := object(s)
			names = append(names, text(o, "name"))
		}
		signedFor := strings.Join(names, ", ")
		if signedFor == "" {
			signedFor = "no subject"
		}
		return refuse("its provenance was signed for %s, not for %s", signedFor, name)
	}
	subjectDigest, _ := object(subject["digest"])
	if got := text(subjectDigest, "sha256"); got != strings.TrimPrefix(digest, "sha256:") {
		return refuse("its provenance was signed for bytes with digest sha256:%s, and these bytes hash to %s", got, digest)
	}
	return nil
}

type envelope struct {
	payloadType string
	payload     []byte
	signature   []byte
}

// parseBundle reads what the check needs of a Sigstore bundle, refusing one
// that @sigstore/bundle would refuse too: an unknown media type, a DSSE
// envelope without payload or without exactly one signature, no
// verification material. It returns a nil envelope when the bundle's content
// is something else, and a nil hint when its verification material is not a
// public key.
func parseBundle(data []byte) (*envelope, *string, error) {
	bundle, err := object(data)
	if err != nil {
		return nil, nil, err
	}
	if !bundleMediaType.MatchString(text(bundle, "mediaType")) {
		return nil, nil, fmt.Errorf("media type %q", text(bundle, "mediaType"))
	}
	material, err := object(bundle["verificationMaterial"])
	if err != nil || material == nil {
		return nil, nil, errors.New("no verificationMaterial")
	}
	var hint *string
	if publicKey, _ := object(material["publicKey"]); publicKey != nil {
		h := text(publicKey, "hint")
		hint = &h
	}
	dsse, err := object(bundle["dsseEnvelope"])
	if err != nil {
		return nil, nil, fmt.Errorf("dsseEnvelope: %w", err)
	}
	if dsse == nil {
		return nil, hint, nil
	}
	env := &envelope{payloadType: text(dsse, "payloadType")}
	if env.payload, err = bytesField(dsse, "payload"); err != nil || len(env.payload) == 0 {
		return nil, nil, fmt.Errorf("dsseEnvelope.payload is empty or not base64")
	}
	var signatures []json.RawMessage
	if json.Unmarshal(dsse["signatures"], &signatures) != nil || len(signatures) != 1 {
		return nil, nil, fmt.Errorf("dsseEnvelope.signatures: want exactly one signature")
	}
	signature, _ := object(signatures[0])
	if env.signature, err = bytesField(signature, "sig"); err != nil || len(env.signature) == 0 {
		return nil, nil, fmt.Errorf("dsseEnvelope.signatures[0].sig is empty or not base64")
	}
	return env, hint, nil
}

// pae is DSSE v1's pre-authentication encoding: what is signed, so that the
// payload type cannot be swapped under a signature.
func pae(payloadType string, payload []byte) []byte {
	head := fmt.Sprintf("DSSEv1 %d %s %d ", len(payloadType), payloadType, len(payload))
	return append([]byte(head), payload...)
}

// verifySignature: ECDSA P-256 signs the SHA-256 of the message (ASN.1 DER
// signature), Ed25519 signs the message itself.
func verifySignature(key crypto.PublicKey, message, signature []byte) bool {
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		sum := sha256.Sum256(message)
		return ecdsa.VerifyASN1(k, sum[:], signature)
	case ed25519.PublicKey:
		return ed25519.Verify(k, message, signature)
	}
	return false
}

// object decodes a JSON object with its keys as written: encoding/json
// matches struct fields case-insensitively, which a JavaScript reader of the
// same bytes does not. Absent (nil) or null input gives a nil map.
func object(raw json.RawMessage) (map[string]json.RawMessage, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var o map[string]json.RawMessage
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, err
	}
	return o, nil
}

// text is the string at key, or "" when it is absent or not a string.
func text(o map[string]json.RawMessage, key string) string {
	var s string
	if json.Unmarshal(o[key], &s) != nil {
		return ""
	}
	return s
}

// bytesField decodes a protobuf-JSON bytes field: base64, standard or
// URL-safe, padded or not.
func bytesField(o map[string]json.RawMessage, key string) ([]byte, error) {
	s := text(o, key)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}
