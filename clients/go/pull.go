package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/atomix/atomix-plugins/clients/go/internal/runtimev1"
)

// Metadata of PullPlugin beyond atomix.runtime.v1, as src/protocol/metadata.ts
// defines them. A server may announce none of them.
const (
	mdDigest      = "x-plugin-digest"        // response header or trailer: sha256:<hex> of the artifact
	mdSize        = "x-plugin-size"          // response header or trailer: its size in bytes
	mdOffset      = "x-plugin-offset"        // request: resume at this byte
	mdIfNoneMatch = "x-plugin-if-none-match" // request: the digest held; equal → no bytes
	mdNotModified = "x-plugin-not-modified"  // response trailer: "true" when none were sent
)

// Times a pull starts over because the artifact changed, before it gives up.
const maxRestarts = 3

// VerifiedBy says what vouched for the bytes of a pull, strongest first.
type VerifiedBy string

const (
	// VerifiedByProvenance: signed provenance under a trusted key (WithTrustedKeys).
	VerifiedByProvenance VerifiedBy = "provenance"
	// VerifiedByPin: the digest the caller pinned (WithDigest).
	VerifiedByPin VerifiedBy = "pin"
	// VerifiedByServer: the digest the server announced; catches damage in
	// transit or in its store, not a lying server.
	VerifiedByServer VerifiedBy = "server"
	// VerifiedByNone: a server that announces no digest, with nothing pinned
	// or trusted; the bytes were accepted as they came.
	VerifiedByNone VerifiedBy = "none"
)

// Result is a pulled artifact, verified and in the cache.
type Result struct {
	Key Key
	// Path is the artifact in the cache, named by its digest. Do not modify
	// it; it may be evicted once no longer the newest (a loaded plugin stays
	// loaded).
	Path   string
	Digest string
	Size   int64
	// VerifiedBy says what vouched for the bytes.
	VerifiedBy VerifiedBy
	// FromCache is true when no artifact bytes were transferred.
	FromCache bool
	// Stale is true when the server could not be reached and this is the
	// last known good copy of the key; StaleReason is why.
	Stale       bool
	StaleReason error
	// Shared is true when this call waited for another call's pull of the
	// same key in this process and shares its result.
	Shared bool
	// Transferred is the artifact bytes this call received, all attempts
	// together (0 for a shared or cached result).
	Transferred int64
	// Attempts is how many requests the pull made.
	Attempts int
}

type pullConfig struct{ digest string }

// PullOption configures one pull.
type PullOption func(*pullConfig)

// WithDigest pins the artifact's digest (sha256:<64 hex>): anything else is
// refused with *IntegrityError, and a cached copy of it needs no call.
func WithDigest(digest string) PullOption { return func(p *pullConfig) { p.digest = digest } }

// flight is one pull that concurrent callers of the same key share.
type flight struct {
	done chan struct{}
	res  *Result
	err  error
}

// Pull fetches key into the cache and returns it verified. It streams the
// bytes, hashing them as they arrive; resumes a broken stream from the
// bytes in hand when the server supports it (else starts over); retries by
// code with backoff; asks the server for the bytes only when the cached copy
// is not current; and, when the server cannot be reached, returns the last
// known good copy with Stale set. The deadline and cancellation come from ctx.
// Concurrent pulls of one key (and pin) in one process share one transfer.
func (c *Client) Pull(ctx context.Context, key Key, opts ...PullOption) (*Result, error) {
	var cfg pullConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	key, err := c.complete(key)
	if err != nil {
		return nil, err
	}
	if cfg.digest != "" && !digestPattern.MatchString(cfg.digest) {
		return nil, fmt.Errorf("plugins: WithDigest(%q): want sha256:<64 lowercase hex>", cfg.digest)
	}
	id := key.subject() + " " + cfg.digest
	c.mu.Lock()
	if f, ok := c.inflight[id]; ok {
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, statusError("pull", key, ctx.Err())
		}
		if f.err != nil {
			return nil, f.err
		}
		shared := *f.res
		shared.Shared, shared.Transferred = true, 0
		return &shared, nil
	}
	f := &flight{done: make(chan struct{})}
	c.inflight[id] = f
	c.mu.Unlock()

	f.res, f.err = c.pull(ctx, key, cfg.digest)
	c.mu.Lock()
	delete(c.inflight, id)
	c.mu.Unlock()
	close(f.done)
	return f.res, f.err
}

func (c *Client) pull(ctx context.Context, key Key, pin string) (*Result, error) {
	// A digest pinned and already cached needs no server, unless provenance
	// must be checked.
	if pin != "" {
		if path, size, ok := c.cache.verified(pin); ok {
			by := VerifiedByPin
			if err := c.accept(ctx, key, pin, &by); err != nil {
				return nil, err
			}
			return &Result{Key: key, Path: path, Digest: pin, Size: size, VerifiedBy: by, FromCache: true}, nil
		}
	}
	res := &Result{Key: key}
	err := c.transfer(ctx, key, pin, res)
	var failure *StatusError
	if err != nil && errors.As(err, &failure) && failure.Code == codes.Unavailable {
		if good := c.lastKnownGood(key, pin); good != nil {
			good.StaleReason, good.Attempts = err, res.Attempts
			return good, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// lastKnownGood is the cached copy last pulled for key, re-verified.
func (c *Client) lastKnownGood(key Key, pin string) *Result {
	r := c.cache.lookup(key)
	if r == nil || (pin != "" && r.Digest != pin) {
		return nil
	}
	// A client that trusts keys serves only a copy that was verified by
	// provenance when it was cached: it cannot ask the server now.
	if len(c.trusted) > 0 && r.VerifiedBy != VerifiedByProvenance {
		return nil
	}
	path, size, ok := c.cache.verified(r.Digest)
	if !ok {
		return nil
	}
	return &Result{Key: key, Path: path, Digest: r.Digest, Size: size, VerifiedBy: r.VerifiedBy, FromCache: true, Stale: true}
}

// accept is the last word before an artifact is cached or handed out: its
// signed provenance, when keys are trusted.
func (c *Client) accept(ctx context.Context, key Key, digest string, by *VerifiedBy) error {
	if len(c.trusted) == 0 {
		return nil
	}
	// The answer is a few KiB: a server that withholds it stalls the pull.
	bounded, cancel := context.WithTimeout(ctx, c.stall)
	defer cancel()
	if err := checkProvenance(bounded, c.conn, key, digest, c.trusted); err != nil {
		// Whatever the answer at the deadline (the server may end the call
		// itself when it sees the deadline pass): no provenance came in time.
		deadline, _ := bounded.Deadline()
		outer, bounds := ctx.Deadline()
		if now := time.Now(); ctx.Err() == nil && !now.Before(deadline) && (!bounds || now.Before(outer)) {
			return &StatusError{Op: "provenance", Key: key, Code: codes.DeadlineExceeded,
				Message: fmt.Sprintf("no provenance answer within %s (WithStallTimeout)", c.stall)}
		}
		return err
	}
	*by = VerifiedByProvenance
	return nil
}

// claims is what a server announced of an artifact: "" and -1 when nothing.
type claims struct {
	digest string
	size   int64
}

func readClaims(md metadata.MD) claims {
	out := claims{size: -1}
	if v := md.Get(mdDigest); len(v) == 1 && digestPattern.MatchString(v[0]) {
		out.digest = v[0]
	}
	if v := md.Get(mdSize); len(v) == 1 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
			out.size = n
		}
	}
	return out
}

// download is the state of one transfer across its attempts.
type download struct {
	file      *os.File
	hash      hash.Hash
	received  int64
	announced *claims
}

func (d *download) discard() error {
	d.announced, d.received = nil, 0
	d.hash.Reset()
	if err := d.file.Truncate(0); err != nil {
		return err
	}
	_, err := d.file.Seek(0, io.SeekStart)
	return err
}

// errChanged ends an attempt whose headers say the artifact changed.
var errChanged = errors.New("the artifact changed on the server")

// errShort ends an attempt whose stream ended cleanly before the announced size.
var errShort = errors.New("the stream ended before the announced size")

// errStalled ends an attempt that made too little progress (WithStallTimeout).
var errStalled = errors.New("the server stalled")

// An attempt must receive this many bytes (or the rest of the artifact)
// within each stall timeout: a server that drips a byte at a time, or holds
// the call open without a word, is abandoned and retried, never waited for.
const stallBytes = 64 << 10

// transfer is the pull from the server: attempts until the bytes are in
// hand and verified, then provenance, then the cache; it fills res.
func (c *Client) transfer(ctx context.Context, key Key, pin string, res *Result) error {
	cached := c.cache.lookup(key)
	file, err := c.cache.partial()
	if err != nil {
		return fmt.Errorf("plugins: cache: %w", err)
	}
	defer os.Remove(file.Name())
	defer file.Close()
	d := &download{file: file, hash: sha256.New()}
	failures, restarts := 0, 0
	startOver := func() error {
		restarts++
		if restarts > maxRestarts {
			return &StatusError{Op: "pull", Key: key, Code: codes.Aborted,
				Message: fmt.Sprintf("the artifact changed %d times during the pull; try again later", restarts)}
		}
		return d.discard()
	}
	for {
		res.Attempts++
		ifNoneMatch := ""
		if d.received == 0 && cached != nil {
			ifNoneMatch = cached.Digest
		}
		trailer, err := c.attempt(ctx, key, pin, d, ifNoneMatch, &res.Transferred)
		switch {
		case err == nil:
		case errors.Is(err, errChanged):
			if err := startOver(); err != nil {
				return err
			}
			continue
		case ctx.Err() != nil:
			return statusError("pull", key, ctx.Err())
		default:
			var refusal *IntegrityError
			var limit *StatusError
			if errors.As(err, &refusal) || (errors.As(err, &limit) && limit.Op == "pull") {
				return err
			}
			code := status.Code(err)
			if errors.Is(err, errShort) || errors.Is(err, errStalled) {
				code = codes.Unavailable
			}
			if code == codes.OutOfRange && d.received > 0 {
				// Our offset never exceeds what was announced, so the artifact
				// shrank or was replaced: start over.
				if err := startOver(); err != nil {
					return err
				}
				continue
			}
			if code != codes.Unavailable && code != codes.Aborted && code != codes.Internal {
				return statusError("pull", key, err)
			}
			failures++
			if failures >= c.retry.attempts {
				failure := statusError("pull", key, err).(*StatusError)
				failure.Code = code
				failure.Message = fmt.Sprintf("gave up after %d attempts with %d bytes in hand: %s", failures, d.received, failure.Message)
				return failure
			}
			if err := c.retry.wait(ctx, failures); err != nil {
				return statusError("pull", key, err)
			}
			// Only a server that announces x-plugin-digest honours x-plugin-offset.
			if d.received > 0 && (d.announced == nil || d.announced.digest == "") {
				if err := d.discard(); err != nil {
					return err
				}
			}
			continue
		}

		if v := trailer.Get(mdNotModified); len(v) == 1 && v[0] == "true" {
			if cached == nil || d.announced == nil || d.announced.digest != cached.Digest {
				return &StatusError{Op: "pull", Key: key, Code: codes.DataLoss, Message: `the server answered "not modified" unasked`}
			}
			if path, size, ok := c.cache.verified(cached.Digest); ok {
				by := VerifiedByServer
				if pin != "" {
					by = VerifiedByPin
				}
				if err := c.accept(ctx, key, cached.Digest, &by); err != nil {
					return err
				}
				res.Path, res.Digest, res.Size, res.VerifiedBy, res.FromCache = path, cached.Digest, size, by, true
				return nil
			}
			// The cached copy was damaged (and is now removed): fetch the bytes.
			cached = nil
			if err := d.discard(); err != nil {
				return err
			}
			continue
		}
		return c.finish(ctx, key, pin, d, readClaims(trailer), res)
	}
}

// attempt makes one request and streams its bytes into d. It returns the
// trailers of a stream that ended cleanly with every announced byte.
func (c *Client) attempt(ctx context.Context, key Key, pin string, d *download, ifNoneMatch string, transferred *int64) (metadata.MD, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The first answer may come only after the server has built the
	// artifact (a pull of a key not built yet), so it has its own bound.
	var stalled int32
	answered := false
	timer := time.AfterFunc(c.answer, func() {
		atomic.StoreInt32(&stalled, 1)
		cancel()
	})
	defer timer.Stop()
	failed := func(err error) error {
		if atomic.LoadInt32(&stalled) == 1 && !answered {
			return fmt.Errorf("%w: no answer in %s (WithAnswerTimeout)", errStalled, c.answer)
		}
		if atomic.LoadInt32(&stalled) == 1 {
			return fmt.Errorf("%w: less than %d bytes came in %s (WithStallTimeout), %d of the artifact in hand", errStalled, stallBytes, c.stall, d.received)
		}
		return err
	}
	var window int64
	md := metadata.MD{}
	if ifNoneMatch != "" {
		md.Set(mdIfNoneMatch, ifNoneMatch)
	}
	if d.received > 0 {
		md.Set(mdOffset, strconv.FormatInt(d.received, 10))
	}
	stream, err := runtimev1.NewPluginRegistryClient(c.conn).PullPlugin(metadata.NewOutgoingContext(ctx, md),
		&runtimev1.PullPluginRequest{Runtime: runtimeInfo(key), Plugin: pluginInfo(key)})
	if err != nil {
		return nil, failed(err)
	}
	header, err := stream.Header()
	if err != nil {
		return nil, failed(err)
	}
	answered = true
	timer.Reset(c.stall)
	// A call that fails before its first message has no headers: its status
	// comes with the first Recv.
	if len(header) > 0 {
		got := readClaims(header)
		if d.announced != nil && got != *d.announced {
			return nil, errChanged
		}
		if pin != "" && got.digest != "" && got.digest != pin {
			return nil, &IntegrityError{Key: key, Field: "digest", Claimed: "pin", Want: pin, Got: got.digest}
		}
		if got.size > c.maxSize {
			return nil, &StatusError{Op: "pull", Key: key, Code: codes.ResourceExhausted,
				Message: fmt.Sprintf("the server announced %d bytes, more than the %d accepted (WithMaxBytes)", got.size, c.maxSize)}
		}
		d.announced = &got
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, failed(err)
		}
		n := int64(len(msg.Data))
		if a := d.announced; a != nil && a.size >= 0 && d.received+n > a.size {
			return nil, &IntegrityError{Key: key, Field: "size", Claimed: "server",
				Want: strconv.FormatInt(a.size, 10), Got: "more than that"}
		}
		// Whatever size was announced: the bound is the caller's, not the server's.
		if d.received+n > c.maxSize {
			return nil, &StatusError{Op: "pull", Key: key, Code: codes.ResourceExhausted,
				Message: fmt.Sprintf("the server sent more than the %d bytes accepted (WithMaxBytes)", c.maxSize)}
		}
		d.hash.Write(msg.Data)
		if _, err := d.file.Write(msg.Data); err != nil {
			return nil, &StatusError{Op: "pull", Key: key, Code: codes.Internal, Message: "cache: " + err.Error()}
		}
		d.received += n
		*transferred += n
		if window += n; window >= stallBytes || (d.announced != nil && d.received == d.announced.size) {
			window = 0
			timer.Reset(c.stall)
		}
	}
	trailer := stream.Trailer()
	if v := trailer.Get(mdNotModified); len(v) == 1 && v[0] == "true" {
		return trailer, nil
	}
	if a := d.announced; a != nil && a.size >= 0 && d.received < a.size {
		// The stream ended cleanly but short: a proxy or the network cut it.
		return nil, fmt.Errorf("%w (%d of %d bytes)", errShort, d.received, a.size)
	}
	return trailer, nil
}

// finish verifies the bytes in hand against every claim on them, checks
// provenance, and moves them into the cache.
func (c *Client) finish(ctx context.Context, key Key, pin string, d *download, trailed claims, res *Result) error {
	if trailed.size >= 0 && trailed.size != d.received {
		return &IntegrityError{Key: key, Field: "size", Claimed: "server",
			Want: strconv.FormatInt(trailed.size, 10), Got: strconv.FormatInt(d.received, 10)}
	}
	digest := "sha256:" + hex.EncodeToString(d.hash.Sum(nil))
	by := VerifiedByNone
	for _, claim := range []string{d.announcedDigest(), trailed.digest} {
		if claim == "" {
			continue
		}
		if claim != digest {
			return &IntegrityError{Key: key, Field: "digest", Claimed: "server", Want: claim, Got: digest}
		}
		by = VerifiedByServer
	}
	if pin != "" {
		if digest != pin {
			return &IntegrityError{Key: key, Field: "digest", Claimed: "pin", Want: pin, Got: digest}
		}
		by = VerifiedByPin
	}
	if err := d.file.Sync(); err != nil {
		return fmt.Errorf("plugins: cache: %w", err)
	}
	if err := c.accept(ctx, key, digest, &by); err != nil {
		return err
	}
	path, err := c.cache.add(key, d.file.Name(), record{Digest: digest, Size: d.received, VerifiedBy: by})
	if err != nil {
		return fmt.Errorf("plugins: cache: %w", err)
	}
	res.Path, res.Digest, res.Size, res.VerifiedBy = path, digest, d.received, by
	return nil
}

func (d *download) announcedDigest() string {
	if d.announced == nil {
		return ""
	}
	return d.announced.digest
}
