package plugins_test

// These tests run against real servers that test/go-client.test.ts starts
// and names in the environment: an atomix-plugins server (ATOMIX_GOCLIENT_OURS,
// signing with the key ATOMIX_GOCLIENT_TRUST; ATOMIX_GOCLIENT_STRANGER is
// another) holding "big", "empty" and "module" for runtime 1.0.0/node20, and
// the grpc-go peer of the benchmark in each of its modes
// (ATOMIX_GOCLIENT_PEER_<MODE>, ..._CUT cutting its first pull after 1 MiB).
// Without them they are skipped.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	plugins "github.com/atomix/atomix-plugins/clients/go"
)

const cutAt = 1 << 20

func env(t *testing.T, name string) string {
	t.Helper()
	value := os.Getenv(name)
	if value == "" {
		t.Skipf("%s is not set: run through test/go-client.test.ts", name)
	}
	return value
}

// big is the artifact "big" as the servers hold it, and its digest.
func big(t *testing.T) ([]byte, string) {
	t.Helper()
	data, err := os.ReadFile(env(t, "ATOMIX_GOCLIENT_BIG"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return data, "sha256:" + hex.EncodeToString(sum[:])
}

func key(name string) plugins.Key { return plugins.Key{Name: name, Version: "1.0.0"} }

func newClient(t *testing.T, address, cacheDir string, opts ...plugins.Option) *plugins.Client {
	t.Helper()
	if cacheDir == "" {
		cacheDir = t.TempDir()
	}
	all := append([]plugins.Option{
		plugins.WithRuntime("1.0.0"), plugins.WithBuild("node20"),
		plugins.WithCache(cacheDir, 0), plugins.WithRetry(6, 20*time.Millisecond, 200*time.Millisecond),
	}, opts...)
	c, err := plugins.NewClient(address, all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func trusted(t *testing.T, names ...string) plugins.Option {
	t.Helper()
	var pems [][]byte
	for _, name := range names {
		pem, err := os.ReadFile(env(t, name))
		if err != nil {
			t.Fatal(err)
		}
		pems = append(pems, pem)
	}
	return plugins.WithTrustedKeys(pems...)
}

func pull(t *testing.T, c *plugins.Client, name string, opts ...plugins.PullOption) *plugins.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := c.Pull(ctx, key(name), opts...)
	if err != nil {
		t.Fatalf("pull %s: %v", name, err)
	}
	return res
}

func pullErr(t *testing.T, c *plugins.Client, name string, opts ...plugins.PullOption) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := c.Pull(ctx, key(name), opts...)
	if err == nil {
		t.Fatalf("pull %s: accepted (%+v), want a refusal", name, res)
	}
	return err
}

// assertArtifact checks the result names the bytes and that its file holds them.
func assertArtifact(t *testing.T, res *plugins.Result, data []byte, digest string) {
	t.Helper()
	if res.Digest != digest || res.Size != int64(len(data)) {
		t.Fatalf("got %s (%d bytes), want %s (%d bytes)", res.Digest, res.Size, digest, len(data))
	}
	held, err := os.ReadFile(res.Path)
	if err != nil || !bytes.Equal(held, data) {
		t.Fatalf("the cached file %s does not hold the artifact (%v)", res.Path, err)
	}
}

// assertNothingCached checks a refused pull left the cache directory empty.
func assertNothingCached(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("the refused artifact left %d entries in the cache, e.g. %s", len(entries), entries[0].Name())
	}
}

func TestPullFromOurServerThenFromTheCacheAfterARestart(t *testing.T) {
	data, digest := big(t)
	dir := t.TempDir()
	first := pull(t, newClient(t, env(t, "ATOMIX_GOCLIENT_OURS"), dir), "big")
	assertArtifact(t, first, data, digest)
	if first.VerifiedBy != plugins.VerifiedByServer || first.FromCache || first.Transferred != int64(len(data)) {
		t.Fatalf("first pull: %+v", first)
	}
	// Another client on the same cache, as after a restart of the runtime:
	// the server answers "not modified" and no artifact byte moves.
	again := pull(t, newClient(t, env(t, "ATOMIX_GOCLIENT_OURS"), dir), "big")
	assertArtifact(t, again, data, digest)
	if !again.FromCache || again.Transferred != 0 || again.Attempts != 1 || again.Stale {
		t.Fatalf("pull after a restart: %+v", again)
	}
	// The empty artifact is an artifact.
	empty := pull(t, newClient(t, env(t, "ATOMIX_GOCLIENT_OURS"), dir), "empty")
	assertArtifact(t, empty, nil, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
}

func TestTheLastKnownGoodCopyWhenTheServerIsUnreachable(t *testing.T) {
	data, digest := big(t)
	dir := t.TempDir()
	pull(t, newClient(t, env(t, "ATOMIX_GOCLIENT_OURS"), dir), "big")

	// A port nothing listens on: the server is down.
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := listener.Addr().String()
	listener.Close()
	offline := newClient(t, down, dir)
	res := pull(t, offline, "big")
	assertArtifact(t, res, data, digest)
	if !res.Stale || !res.FromCache || res.VerifiedBy != plugins.VerifiedByServer || status.Code(res.StaleReason) != codes.Unavailable {
		t.Fatalf("offline pull: %+v", res)
	}
	// A client that trusts keys does not serve a copy no signature vouched for.
	err = pullErr(t, newClient(t, down, dir, trusted(t, "ATOMIX_GOCLIENT_TRUST")), "big")
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("offline pull with trusted keys of a copy verified by the server only: %v", err)
	}
	// One that was verified by provenance when it was cached is served.
	signedDir := t.TempDir()
	pull(t, newClient(t, env(t, "ATOMIX_GOCLIENT_OURS"), signedDir, trusted(t, "ATOMIX_GOCLIENT_TRUST")), "big")
	signed := pull(t, newClient(t, down, signedDir, trusted(t, "ATOMIX_GOCLIENT_TRUST")), "big")
	if !signed.Stale || signed.VerifiedBy != plugins.VerifiedByProvenance {
		t.Fatalf("offline pull with trusted keys of a signed copy: %+v", signed)
	}
	// Without a cached copy there is nothing to fall back on.
	err = pullErr(t, offline, "module")
	var failure *plugins.StatusError
	if !errors.As(err, &failure) || failure.Code != codes.Unavailable || failure.Op != "pull" {
		t.Fatalf("offline pull of an uncached key: %v", err)
	}
}

func TestSignedProvenance(t *testing.T) {
	data, digest := big(t)
	ours := env(t, "ATOMIX_GOCLIENT_OURS")
	res := pull(t, newClient(t, ours, "", trusted(t, "ATOMIX_GOCLIENT_STRANGER", "ATOMIX_GOCLIENT_TRUST")), "big")
	assertArtifact(t, res, data, digest)
	if res.VerifiedBy != plugins.VerifiedByProvenance {
		t.Fatalf("verified by %s, want provenance", res.VerifiedBy)
	}

	for name, address := range map[string]string{
		"signed by a key not trusted": ours,
		"unsigned":                    env(t, "ATOMIX_GOCLIENT_PEER_FULL"),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			err := pullErr(t, newClient(t, address, dir, trusted(t, "ATOMIX_GOCLIENT_STRANGER")), "big")
			var refusal *plugins.VerificationError
			if !errors.As(err, &refusal) || refusal.Digest != digest {
				t.Fatalf("want a *VerificationError for %s, got %v", digest, err)
			}
			assertNothingCached(t, dir)
		})
	}
}

func TestTamperedBytesAreRefused(t *testing.T) {
	_, digest := big(t)
	dir := t.TempDir()
	err := pullErr(t, newClient(t, env(t, "ATOMIX_GOCLIENT_PEER_CORRUPT"), dir, plugins.WithRetry(1, 0, 0)), "big")
	var refusal *plugins.IntegrityError
	if !errors.As(err, &refusal) || refusal.Claimed != "server" || refusal.Field != "digest" || refusal.Want != digest {
		t.Fatalf("want an *IntegrityError against the server's digest, got %v", err)
	}
	assertNothingCached(t, dir)
}

func TestAnyServerOfTheAPI(t *testing.T) {
	data, digest := big(t)
	wrong := "sha256:" + hex.EncodeToString(make([]byte, 32))
	for _, mode := range []struct {
		name       string
		verifiedBy plugins.VerifiedBy
		references bool
	}{
		{"FULL", plugins.VerifiedByServer, true},
		{"TRAILER", plugins.VerifiedByServer, true},
		{"SIZE", plugins.VerifiedByNone, false},
		{"NONE", plugins.VerifiedByNone, false},
	} {
		t.Run(mode.name, func(t *testing.T) {
			address := env(t, "ATOMIX_GOCLIENT_PEER_"+mode.name)
			res := pull(t, newClient(t, address, ""), "big")
			assertArtifact(t, res, data, digest)
			if res.VerifiedBy != mode.verifiedBy {
				t.Fatalf("verified by %s, want %s", res.VerifiedBy, mode.verifiedBy)
			}
			pinned := pull(t, newClient(t, address, ""), "big", plugins.WithDigest(digest))
			if pinned.VerifiedBy != plugins.VerifiedByPin {
				t.Fatalf("with a pin: verified by %s", pinned.VerifiedBy)
			}
			dir := t.TempDir()
			err := pullErr(t, newClient(t, address, dir), "big", plugins.WithDigest(wrong))
			var refusal *plugins.IntegrityError
			if !errors.As(err, &refusal) || refusal.Claimed != "pin" || refusal.Want != wrong {
				t.Fatalf("a wrong pin: want an *IntegrityError, got %v", err)
			}
			assertNothingCached(t, dir)

			compiled, err := newClient(t, address, "").Compile(context.Background(), key("big"))
			if err != nil {
				t.Fatal(err)
			}
			if compiled.Plugin == "" || (compiled.Reference != nil) != mode.references {
				t.Fatalf("compile answered %q, parsed as %+v", compiled.Plugin, compiled.Reference)
			}
			if mode.references && compiled.Reference.Digest != digest {
				t.Fatalf("compile answered %s, want the digest %s", compiled.Plugin, digest)
			}
		})
	}
	t.Run("OURS compile", func(t *testing.T) {
		compiled, err := newClient(t, env(t, "ATOMIX_GOCLIENT_OURS"), "").Compile(context.Background(), key("big"))
		if err != nil {
			t.Fatal(err)
		}
		want := plugins.Reference{Key: plugins.Key{Runtime: "1.0.0", Build: "node20", Name: "big", Version: "1.0.0"}, Digest: digest}
		if compiled.Reference == nil || *compiled.Reference != want || compiled.Plugin != want.String() {
			t.Fatalf("compile answered %q, parsed as %+v", compiled.Plugin, compiled.Reference)
		}
		_, err = newClient(t, env(t, "ATOMIX_GOCLIENT_OURS"), "").Compile(context.Background(), key("missing"))
		if status.Code(err) != codes.NotFound {
			t.Fatalf("compile of a missing plugin: %v, want NOT_FOUND", err)
		}
	})
}

func TestACutStreamResumesOrStartsOver(t *testing.T) {
	data, digest := big(t)
	// The peer in full mode announces a digest and honours x-plugin-offset.
	resumed := pull(t, newClient(t, env(t, "ATOMIX_GOCLIENT_PEER_FULL_CUT"), ""), "big")
	assertArtifact(t, resumed, data, digest)
	if resumed.Attempts != 2 || resumed.Transferred != int64(len(data)) {
		t.Fatalf("resumed pull: %d attempts, %d bytes transferred, want 2 and %d", resumed.Attempts, resumed.Transferred, len(data))
	}
	// Our server, through a network that drops the connection after 1 MiB:
	// the pull resumes from the bytes in hand on a new connection.
	ours := pull(t, newClient(t, env(t, "ATOMIX_GOCLIENT_OURS_CUT"), ""), "big")
	assertArtifact(t, ours, data, digest)
	if ours.Attempts != 2 || ours.Transferred != int64(len(data)) {
		t.Fatalf("resumed pull from our server: %d attempts, %d bytes transferred, want 2 and %d", ours.Attempts, ours.Transferred, len(data))
	}
	// Without metadata, a server does not say it resumes: start over.
	restarted := pull(t, newClient(t, env(t, "ATOMIX_GOCLIENT_PEER_NONE_CUT"), ""), "big")
	assertArtifact(t, restarted, data, digest)
	if restarted.Attempts != 2 || restarted.Transferred != int64(len(data)+cutAt) {
		t.Fatalf("restarted pull: %d attempts, %d bytes transferred, want 2 and %d", restarted.Attempts, restarted.Transferred, len(data)+cutAt)
	}
}

func TestConcurrentPullsShareOneTransfer(t *testing.T) {
	data, digest := big(t)
	c := newClient(t, env(t, "ATOMIX_GOCLIENT_OURS"), "")
	var wg sync.WaitGroup
	results := make([]*plugins.Result, 100)
	errs := make([]error, 100)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], errs[i] = c.Pull(context.Background(), key("big"))
		}(i)
	}
	wg.Wait()
	var transferred int64
	for i, res := range results {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		assertArtifact(t, res, data, digest)
		transferred += res.Transferred
	}
	if transferred != int64(len(data)) {
		t.Fatalf("100 concurrent pulls transferred %d bytes, want one transfer of %d", transferred, len(data))
	}
}

func TestTheCacheIsReverifiedAndBounded(t *testing.T) {
	data, digest := big(t)
	dir := t.TempDir()
	ours := env(t, "ATOMIX_GOCLIENT_OURS")
	first := pull(t, newClient(t, ours, dir), "big")
	// A cached copy damaged on disk is not used: the bytes are fetched again.
	damaged := append([]byte{}, data...)
	damaged[0] ^= 0xff
	if err := os.WriteFile(first.Path, damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	again := pull(t, newClient(t, ours, dir), "big")
	assertArtifact(t, again, data, digest)
	if again.FromCache || again.Transferred != int64(len(data)) {
		t.Fatalf("pull over a damaged cached copy: %+v", again)
	}

	// Room for big alone: adding module evicts big, the least recently used.
	bounded := newClient(t, ours, dir, plugins.WithCache(dir, int64(len(data))))
	module := pull(t, bounded, "module")
	if _, err := os.Stat(first.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("big was not evicted: %v", err)
	}
	if _, err := os.Stat(module.Path); err != nil {
		t.Fatalf("the artifact just added was evicted: %v", err)
	}
	if refetched := pull(t, bounded, "big"); refetched.FromCache || refetched.Transferred != int64(len(data)) {
		t.Fatalf("pull after eviction: %+v", refetched)
	}
	blobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	if len(blobs) != 1 {
		t.Fatalf("the bounded cache holds %d blobs, want 1 (big, which evicted module)", len(blobs))
	}
}

func TestKeysAndReferences(t *testing.T) {
	ref, err := plugins.ParseReference("atomix-plugin://3.0.0/go1.19.8/example.com/drivers/counter@v1.0.0@sha256:" + hex.EncodeToString(make([]byte, 32)))
	if err != nil || ref.Key.Name != "example.com/drivers/counter" || ref.Key.Version != "v1.0.0" || ref.Key.Build != "go1.19.8" {
		t.Fatalf("%+v %v", ref, err)
	}
	for _, bad := range []string{"counter-1.0.0.bin", "atomix-plugin://3.0.0/x@1@sha256:00", "atomix-plugin://3.0.0/go/x@sha256:" + hex.EncodeToString(make([]byte, 32))} {
		if _, err := plugins.ParseReference(bad); err == nil {
			t.Errorf("%q parsed as a reference", bad)
		}
	}
	if _, err := plugins.ParseKey("counter"); err == nil {
		t.Error("a key without a version parsed")
	}
}

func TestRetriesThenTheDeadlineComeToAnEnd(t *testing.T) {
	// This peer cuts every pull after 1 MiB.
	address := env(t, "ATOMIX_GOCLIENT_PEER_ALWAYS_CUT")
	_, err := newClient(t, address, "", plugins.WithRetry(3, time.Millisecond, time.Millisecond)).Pull(context.Background(), key("big"))
	var failure *plugins.StatusError
	if !errors.As(err, &failure) || failure.Code != codes.Unavailable || !strings.Contains(failure.Message, "gave up after 3 attempts") {
		t.Fatalf("want UNAVAILABLE after 3 attempts, got %v", err)
	}
	// The backoff before the second attempt outlasts the context's deadline.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = newClient(t, address, "", plugins.WithRetry(6, time.Hour, time.Hour)).Pull(ctx, key("big"))
	if !errors.As(err, &failure) || failure.Code != codes.DeadlineExceeded {
		t.Fatalf("want DEADLINE_EXCEEDED, got %v", err)
	}
}
