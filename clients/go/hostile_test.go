package plugins_test

// Hostile servers of the API, in this process over real sockets: each test
// serves PullPlugin as a server that lies or stalls would, and checks that
// a pull ends, names what failed, and leaves nothing in the cache.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	plugins "github.com/atomix/atomix-plugins/clients/go"
	"github.com/atomix/atomix-plugins/clients/go/internal/adminv1"
	"github.com/atomix/atomix-plugins/clients/go/internal/runtimev1"
)

// hostile serves PullPlugin with pull.
type hostile struct {
	runtimev1.UnimplementedPluginRegistryServer
	pull func(runtimev1.PluginRegistry_PullPluginServer) error
}

func (h *hostile) PullPlugin(_ *runtimev1.PullPluginRequest, stream runtimev1.PluginRegistry_PullPluginServer) error {
	return h.pull(stream)
}

// serveHostile starts a gRPC server whose PullPlugin is pull; its address.
func serveHostile(t *testing.T, pull func(runtimev1.PluginRegistry_PullPluginServer) error) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	runtimev1.RegisterPluginRegistryServer(server, &hostile{pull: pull})
	go server.Serve(listener)
	t.Cleanup(server.Stop)
	return listener.Addr().String()
}

// pullUnbounded pulls with a context that has no deadline, as a runtime
// that trusts the client's own bounds would; a pull that has not ended
// after a generous while is reported as hanging rather than waited for.
func pullUnbounded(t *testing.T, c *plugins.Client) (*plugins.Result, error) {
	t.Helper()
	type outcome struct {
		res *plugins.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := c.Pull(context.Background(), key("big"))
		done <- outcome{res, err}
	}()
	select {
	case o := <-done:
		return o.res, o.err
	case <-time.After(2 * time.Minute):
		t.Fatal("the pull from a hostile server has not ended")
		return nil, nil
	}
}

func assertStatus(t *testing.T, err error, code codes.Code, message string) {
	t.Helper()
	var failure *plugins.StatusError
	if !errors.As(err, &failure) || failure.Code != code || !strings.Contains(failure.Message, message) {
		t.Fatalf("want a *StatusError %s saying %q, got %v", code, message, err)
	}
}

func TestASizeAnnouncedBeyondWithMaxBytesIsRefused(t *testing.T) {
	// The server announces a terabyte and streams until the client stops it.
	address := serveHostile(t, func(stream runtimev1.PluginRegistry_PullPluginServer) error {
		if err := stream.SendHeader(metadata.Pairs("x-plugin-size", strconv.FormatInt(1<<40, 10))); err != nil {
			return err
		}
		chunk := make([]byte, 64<<10)
		for sent := 0; sent < 8<<20; sent += len(chunk) {
			if err := stream.Send(&runtimev1.PullPluginResponse{Data: chunk}); err != nil {
				return err
			}
		}
		return nil
	})
	dir := t.TempDir()
	c := newClient(t, address, dir, plugins.WithMaxBytes(1<<20), plugins.WithRetry(1, 0, 0))
	_, err := pullUnbounded(t, c)
	assertStatus(t, err, codes.ResourceExhausted, "WithMaxBytes")
	assertNothingCached(t, dir)
}

func TestMoreBytesThanWithMaxBytesAreRefusedWhateverTheSizeAnnounced(t *testing.T) {
	// The header announces no size; the trailer would announce the lie.
	address := serveHostile(t, func(stream runtimev1.PluginRegistry_PullPluginServer) error {
		chunk := make([]byte, 64<<10)
		for sent := 0; sent < 4<<20; sent += len(chunk) {
			if err := stream.Send(&runtimev1.PullPluginResponse{Data: chunk}); err != nil {
				return err
			}
		}
		stream.SetTrailer(metadata.Pairs("x-plugin-size", strconv.Itoa(4<<20)))
		return nil
	})
	dir := t.TempDir()
	c := newClient(t, address, dir, plugins.WithMaxBytes(1<<20), plugins.WithRetry(1, 0, 0))
	_, err := pullUnbounded(t, c)
	assertStatus(t, err, codes.ResourceExhausted, "WithMaxBytes")
	assertNothingCached(t, dir)
}

func TestAServerThatSendsNothingIsAbandoned(t *testing.T) {
	// No headers, no bytes, no end: the call is held open for ever.
	address := serveHostile(t, func(stream runtimev1.PluginRegistry_PullPluginServer) error {
		<-stream.Context().Done()
		return nil
	})
	dir := t.TempDir()
	c := newClient(t, address, dir, plugins.WithAnswerTimeout(200*time.Millisecond), plugins.WithRetry(2, 0, 0))
	res, err := pullUnbounded(t, c)
	assertStatus(t, err, codes.Unavailable, "gave up after 2 attempts")
	assertStatus(t, err, codes.Unavailable, "no answer in 200ms (WithAnswerTimeout)")
	if res != nil {
		t.Fatalf("a result from a server that sent nothing: %+v", res)
	}
	assertNothingCached(t, dir)
}

func TestASlowDripIsAbandoned(t *testing.T) {
	// A byte at a time, each well within the stall timeout, never the artifact.
	address := serveHostile(t, func(stream runtimev1.PluginRegistry_PullPluginServer) error {
		if err := stream.SendHeader(metadata.Pairs("x-plugin-size", strconv.Itoa(1<<20))); err != nil {
			return err
		}
		for {
			if err := stream.Send(&runtimev1.PullPluginResponse{Data: []byte{0}}); err != nil {
				return err
			}
			select {
			case <-stream.Context().Done():
				return nil
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	dir := t.TempDir()
	c := newClient(t, address, dir, plugins.WithStallTimeout(300*time.Millisecond), plugins.WithRetry(1, 0, 0))
	_, err := pullUnbounded(t, c)
	assertStatus(t, err, codes.Unavailable, "WithStallTimeout")
	assertNothingCached(t, dir)
}

// withholding never answers GetProvenance, not even at the call's deadline,
// until the test ends (closing release).
type withholding struct {
	adminv1.UnimplementedPluginAdminServer
	release chan struct{}
}

func (w withholding) GetProvenance(context.Context, *adminv1.GetProvenanceRequest) (*adminv1.GetProvenanceResponse, error) {
	<-w.release
	return nil, errors.New("released")
}

func TestAWithheldProvenanceAnswerIsNotWaitedFor(t *testing.T) {
	data := []byte("export default {};\n")
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	runtimev1.RegisterPluginRegistryServer(server, &hostile{pull: func(stream runtimev1.PluginRegistry_PullPluginServer) error {
		return stream.Send(&runtimev1.PullPluginResponse{Data: data})
	}})
	release := make(chan struct{})
	adminv1.RegisterPluginAdminServer(server, withholding{release: release})
	go server.Serve(listener)
	t.Cleanup(server.Stop)
	t.Cleanup(func() { close(release) })

	signer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&signer.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	trustedKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	dir := t.TempDir()
	c := newClient(t, listener.Addr().String(), dir, plugins.WithTrustedKeys(trustedKey),
		plugins.WithStallTimeout(200*time.Millisecond), plugins.WithRetry(1, 0, 0))
	_, err = pullUnbounded(t, c)
	assertStatus(t, err, codes.DeadlineExceeded, "no provenance answer within 200ms (WithStallTimeout)")
	assertNothingCached(t, dir)
}

// artifact is what the lying servers below send, and its digest.
var artifact = []byte("export default { name: 'lying' };\n")

func artifactDigest() string {
	sum := sha256.Sum256(artifact)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func assertIntegrity(t *testing.T, err error, field, want string) {
	t.Helper()
	var refusal *plugins.IntegrityError
	if !errors.As(err, &refusal) || refusal.Field != field || refusal.Claimed != "server" || refusal.Want != want {
		t.Fatalf("want an *IntegrityError on the server's %s claim %s, got %v", field, want, err)
	}
}

func TestANotModifiedAnswerUnaskedIsRefused(t *testing.T) {
	address := serveHostile(t, func(stream runtimev1.PluginRegistry_PullPluginServer) error {
		if err := stream.SendHeader(metadata.Pairs("x-plugin-digest", artifactDigest())); err != nil {
			return err
		}
		stream.SetTrailer(metadata.Pairs("x-plugin-not-modified", "true"))
		return nil
	})
	dir := t.TempDir()
	_, err := pullUnbounded(t, newClient(t, address, dir, plugins.WithRetry(1, 0, 0)))
	assertStatus(t, err, codes.DataLoss, `"not modified" unasked`)
	assertNothingCached(t, dir)
}

func TestANotModifiedAnswerForOtherBytesThanTheCachedOnesIsRefused(t *testing.T) {
	other := "sha256:" + strings.Repeat("ab", 32)
	address := serveHostile(t, func(stream runtimev1.PluginRegistry_PullPluginServer) error {
		md, _ := metadata.FromIncomingContext(stream.Context())
		if len(md.Get("x-plugin-if-none-match")) == 0 {
			if err := stream.SendHeader(metadata.Pairs("x-plugin-digest", artifactDigest())); err != nil {
				return err
			}
			return stream.Send(&runtimev1.PullPluginResponse{Data: artifact})
		}
		// Asked about the cached copy: "not modified", while naming other bytes.
		if err := stream.SendHeader(metadata.Pairs("x-plugin-digest", other)); err != nil {
			return err
		}
		stream.SetTrailer(metadata.Pairs("x-plugin-not-modified", "true"))
		return nil
	})
	c := newClient(t, address, "", plugins.WithRetry(1, 0, 0))
	if res, err := pullUnbounded(t, c); err != nil || res.Digest != artifactDigest() {
		t.Fatalf("the first pull: %+v, %v", res, err)
	}
	_, err := pullUnbounded(t, c)
	assertStatus(t, err, codes.DataLoss, `"not modified" unasked`)
}

func TestADigestTrailerThatContradictsTheHeaderIsRefused(t *testing.T) {
	other := "sha256:" + strings.Repeat("cd", 32)
	address := serveHostile(t, func(stream runtimev1.PluginRegistry_PullPluginServer) error {
		if err := stream.SendHeader(metadata.Pairs("x-plugin-digest", artifactDigest())); err != nil {
			return err
		}
		if err := stream.Send(&runtimev1.PullPluginResponse{Data: artifact}); err != nil {
			return err
		}
		stream.SetTrailer(metadata.Pairs("x-plugin-digest", other))
		return nil
	})
	dir := t.TempDir()
	_, err := pullUnbounded(t, newClient(t, address, dir, plugins.WithRetry(1, 0, 0)))
	assertIntegrity(t, err, "digest", other)
	assertNothingCached(t, dir)
}

func TestASizeTrailerThatContradictsTheBytesIsRefused(t *testing.T) {
	address := serveHostile(t, func(stream runtimev1.PluginRegistry_PullPluginServer) error {
		if err := stream.Send(&runtimev1.PullPluginResponse{Data: artifact}); err != nil {
			return err
		}
		stream.SetTrailer(metadata.Pairs("x-plugin-size", strconv.Itoa(len(artifact)+1)))
		return nil
	})
	dir := t.TempDir()
	_, err := pullUnbounded(t, newClient(t, address, dir, plugins.WithRetry(1, 0, 0)))
	assertIntegrity(t, err, "size", strconv.Itoa(len(artifact)+1))
	assertNothingCached(t, dir)
}

func TestMoreBytesThanTheAnnouncedSizeAreRefused(t *testing.T) {
	address := serveHostile(t, func(stream runtimev1.PluginRegistry_PullPluginServer) error {
		if err := stream.SendHeader(metadata.Pairs("x-plugin-size", "10")); err != nil {
			return err
		}
		return stream.Send(&runtimev1.PullPluginResponse{Data: artifact})
	})
	dir := t.TempDir()
	_, err := pullUnbounded(t, newClient(t, address, dir, plugins.WithRetry(1, 0, 0)))
	assertIntegrity(t, err, "size", "10")
	assertNothingCached(t, dir)
}

func TestACacheOtherUsersCanWriteIsRefused(t *testing.T) {
	// A cache in a folder anyone can write (the temporary folder, say):
	// another user plants a key's record, claiming provenance, and the blob
	// of a plugin of theirs; with the server unreachable, it would be the
	// last known good copy, and loaded.
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	planted := []byte("a plugin of someone else's")
	sum := sha256.Sum256(planted)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	subject := sha256.Sum256([]byte("atomix-plugin://1.0.0/node20/big@1.0.0"))
	for path, data := range map[string][]byte{
		filepath.Join(dir, "blobs", "sha256", hex.EncodeToString(sum[:])): planted,
		filepath.Join(dir, "keys", hex.EncodeToString(subject[:])+".json"): []byte(
			`{"digest":"` + digest + `","size":` + strconv.Itoa(len(planted)) + `,"verifiedBy":"provenance"}`),
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	signer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&signer.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	unreachable := "127.0.0.1:1"
	c, err := plugins.NewClient(unreachable, plugins.WithRuntime("1.0.0"), plugins.WithBuild("node20"),
		plugins.WithCache(dir, 0), plugins.WithRetry(1, 0, 0),
		plugins.WithTrustedKeys(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	if err == nil {
		defer c.Close()
		res, err := pullUnbounded(t, c)
		if err == nil {
			t.Fatalf("a cache other users can write was used: it served %s (verified by %s)", res.Path, res.VerifiedBy)
		}
		t.Fatalf("a cache other users can write was used: %v", err)
	}
	if !strings.Contains(err.Error(), "other users can write") {
		t.Fatalf("want a refusal saying other users can write the cache, got %v", err)
	}
}

func TestAFirstAnswerSlowerThanTheStallTimeoutIsWaitedFor(t *testing.T) {
	// As a server that builds the key before it answers the pull.
	address := serveHostile(t, func(stream runtimev1.PluginRegistry_PullPluginServer) error {
		time.Sleep(time.Second)
		if err := stream.SendHeader(metadata.Pairs("x-plugin-digest", artifactDigest())); err != nil {
			return err
		}
		return stream.Send(&runtimev1.PullPluginResponse{Data: artifact})
	})
	c := newClient(t, address, "", plugins.WithStallTimeout(100*time.Millisecond), plugins.WithRetry(1, 0, 0))
	res, err := pullUnbounded(t, c)
	if err != nil || res.Digest != artifactDigest() || res.VerifiedBy != plugins.VerifiedByServer {
		t.Fatalf("a pull whose server answered after building: %+v, %v", res, err)
	}
}

// silentCompiler never answers CompilePlugin until the test ends.
type silentCompiler struct {
	runtimev1.UnimplementedPluginCompilerServer
	release chan struct{}
}

func (s silentCompiler) CompilePlugin(context.Context, *runtimev1.CompilePluginRequest) (*runtimev1.CompilePluginResponse, error) {
	<-s.release
	return nil, errors.New("released")
}

func TestACompileNeverAnsweredIsGivenUp(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	release := make(chan struct{})
	runtimev1.RegisterPluginCompilerServer(server, silentCompiler{release: release})
	go server.Serve(listener)
	t.Cleanup(server.Stop)
	t.Cleanup(func() { close(release) })

	c := newClient(t, listener.Addr().String(), "", plugins.WithAnswerTimeout(200*time.Millisecond), plugins.WithRetry(2, 0, 0))
	done := make(chan error, 1)
	go func() {
		_, err := c.Compile(context.Background(), key("big"))
		done <- err
	}()
	select {
	case err := <-done:
		assertStatus(t, err, codes.DeadlineExceeded, "no answer in 200ms (WithAnswerTimeout)")
	case <-time.After(2 * time.Minute):
		t.Fatal("a compile the server never answers has not ended")
	}
}
