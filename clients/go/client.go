package plugins

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/atomix/atomix-plugins/clients/go/internal/runtimev1"
)

// Client pulls, verifies, caches and loads plugins from one registry. It is
// safe for concurrent use; concurrent pulls of one key share one transfer.
type Client struct {
	conn    *grpc.ClientConn
	target  string
	runtime string
	build   string
	symbol  string
	trusted trustedKeys
	cache   *cache
	retry   retryPolicy
	maxSize int64
	stall   time.Duration
	answer  time.Duration

	mu       sync.Mutex
	inflight map[string]*flight

	// hostOnce reads this host's executable once, for CheckCompatible.
	hostOnce sync.Once
	hostFile *hostFile
	hostErr  error
}

func (c *Client) host() (*hostFile, error) {
	c.hostOnce.Do(func() { c.hostFile, c.hostErr = readHost() })
	return c.hostFile, c.hostErr
}

type config struct {
	runtime  string
	build    string
	symbol   string
	keys     [][]byte
	cacheDir string
	cacheMax int64
	retry    retryPolicy
	maxSize  int64
	stall    time.Duration
	answer   time.Duration
	dial     []grpc.DialOption
	creds    credentials.TransportCredentials
}

// Option configures a Client.
type Option func(*config)

// WithRuntime sets the runtime release keys default to (e.g. "3.0.0").
func WithRuntime(version string) Option { return func(c *config) { c.runtime = version } }

// WithBuild sets the runtime build version keys default to; runtime.Version()
// (the Go release this host was built with) by default.
func WithBuild(build string) Option { return func(c *config) { c.build = build } }

// WithSymbol sets the symbol Load looks up; "Plugin" by default.
func WithSymbol(name string) Option { return func(c *config) { c.symbol = name } }

// WithTrustedKeys makes every pull check the artifact's signed provenance:
// it must be signed by one of these PEM public keys (ECDSA P-256 or
// Ed25519, the PREFIX.pub of `atomix-plugins keygen`; several for a key
// rotation) for exactly the key pulled and the bytes received, or the pull
// fails with *VerificationError and nothing is cached or loaded.
func WithTrustedKeys(pemKeys ...[]byte) Option {
	return func(c *config) { c.keys = append(c.keys, pemKeys...) }
}

// WithCache keeps verified artifacts in dir, by digest, evicting the least
// recently used ones beyond maxBytes (0: no limit). By default the cache is
// "atomix-plugins" in os.UserCacheDir(), without limit. Several processes
// of one user may share one; a folder other users can write (the temporary
// folder itself) or another user's is refused, since what it holds is
// loaded into this process.
func WithCache(dir string, maxBytes int64) Option {
	return func(c *config) { c.cacheDir, c.cacheMax = dir, maxBytes }
}

// WithRetry sets how failed attempts (UNAVAILABLE, ABORTED, and INTERNAL for
// a pull, a stream broken in transit) are retried: attempts in all, the
// first included, with delays drawn at random up to a bound growing from
// initial, doubled each time, to max. Default: 6 attempts, 200ms, 5s.
func WithRetry(attempts int, initial, max time.Duration) Option {
	return func(c *config) { c.retry = retryPolicy{attempts: attempts, initial: initial, max: max} }
}

// WithMaxBytes bounds an artifact (1 GiB by default), whatever size its
// server announces; a larger one fails with RESOURCE_EXHAUSTED before more
// than that is written to the cache.
func WithMaxBytes(n int64) Option { return func(c *config) { c.maxSize = n } }

// WithStallTimeout bounds how long a pull waits for progress once the
// server has answered (30s by default): an attempt that receives less than
// 64 KiB (or the rest of the artifact) in that time is abandoned as
// UNAVAILABLE and retried, resuming where the server allows; a provenance
// answer must come within it. So a server that drips bytes or withholds
// provenance cannot hold a pull for ever, even with a context that has no
// deadline.
func WithStallTimeout(d time.Duration) Option { return func(c *config) { c.stall = d } }

// WithAnswerTimeout bounds how long an attempt waits for the server's first
// answer (10 minutes by default: a server builds a key not built yet before
// it answers its pull); one that holds the call open without a word is
// abandoned as UNAVAILABLE and retried. A Compile not answered in that time
// ends with DEADLINE_EXCEEDED.
func WithAnswerTimeout(d time.Duration) Option { return func(c *config) { c.answer = d } }

// WithTransportCredentials secures the connection (TLS); it is plaintext
// by default.
func WithTransportCredentials(creds credentials.TransportCredentials) Option {
	return func(c *config) { c.creds = creds }
}

// WithDialOptions adds gRPC dial options (interceptors, keepalive, ...);
// credentials belong in WithTransportCredentials.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dial = append(c.dial, opts...) }
}

// NewClient prepares a client of the registry at target (host:port, or any
// gRPC target). It does not wait for the server: a server that cannot be
// reached fails the calls, and a pull then serves the last known good
// cached copy (Result.Stale).
func NewClient(target string, opts ...Option) (*Client, error) {
	cfg := config{
		build:   goruntime.Version(),
		symbol:  "Plugin",
		retry:   retryPolicy{attempts: 6, initial: 200 * time.Millisecond, max: 5 * time.Second},
		maxSize: 1 << 30,
		stall:   30 * time.Second,
		answer:  10 * time.Minute,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	if cfg.stall <= 0 || cfg.answer <= 0 {
		return nil, errors.New("plugins: WithStallTimeout, WithAnswerTimeout: a timeout must be positive")
	}
	if cfg.retry.attempts < 1 {
		return nil, errors.New("plugins: WithRetry: attempts must be at least 1")
	}
	trusted, err := parseTrustedKeys(cfg.keys)
	if err != nil {
		return nil, err
	}
	if cfg.cacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("plugins: no cache directory (use WithCache): %w", err)
		}
		cfg.cacheDir = filepath.Join(base, "atomix-plugins")
	}
	store, err := openCache(cfg.cacheDir, cfg.cacheMax)
	if err != nil {
		return nil, err
	}
	security := grpc.WithInsecure()
	if cfg.creds != nil {
		security = grpc.WithTransportCredentials(cfg.creds)
	}
	dial := append([]grpc.DialOption{security}, cfg.dial...)
	conn, err := grpc.Dial(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("plugins: %s: %w", target, err)
	}
	return &Client{
		conn: conn, target: target, runtime: cfg.runtime, build: cfg.build, symbol: cfg.symbol,
		trusted: trusted, cache: store, retry: cfg.retry, maxSize: cfg.maxSize, stall: cfg.stall, answer: cfg.answer,
		inflight: map[string]*flight{},
	}, nil
}

// Close closes the connection. Plugins already loaded stay loaded.
func (c *Client) Close() error { return c.conn.Close() }

// complete fills a key's runtime and build from the client's defaults.
func (c *Client) complete(key Key) (Key, error) {
	if key.Runtime == "" {
		key.Runtime = c.runtime
	}
	if key.Build == "" {
		key.Build = c.build
	}
	if key.Runtime == "" || key.Name == "" || key.Version == "" {
		return key, fmt.Errorf("plugins: key %s: runtime, name and version are required (WithRuntime sets the runtime)", key)
	}
	return key, nil
}

func runtimeInfo(key Key) *runtimev1.RuntimeInfo {
	return &runtimev1.RuntimeInfo{Version: key.Runtime, BuildVersion: key.Build}
}

func pluginInfo(key Key) *runtimev1.PluginInfo {
	return &runtimev1.PluginInfo{Name: key.Name, Version: key.Version}
}

// Compiled is the answer of CompilePlugin.
type Compiled struct {
	// Plugin is the server's answer as it is: the API promises a string.
	Plugin string
	// Reference is Plugin parsed, when it is an atomix-plugin:// reference
	// (this project's servers answer one); nil otherwise.
	Reference *Reference
}

// Compile asks the server to build key (or find it built) and returns its
// answer. UNAVAILABLE and ABORTED are retried; the compiler's refusal comes
// back as a *StatusError (FAILED_PRECONDITION with the build's message).
func (c *Client) Compile(ctx context.Context, key Key) (*Compiled, error) {
	key, err := c.complete(key)
	if err != nil {
		return nil, err
	}
	compile := &runtimev1.CompilePluginRequest{Runtime: runtimeInfo(key), Plugin: pluginInfo(key)}
	for attempt := 1; ; attempt++ {
		// A build takes a while, but not for ever (WithAnswerTimeout).
		bounded, cancel := context.WithTimeout(ctx, c.answer)
		answer, err := runtimev1.NewPluginCompilerClient(c.conn).CompilePlugin(bounded, compile)
		deadline, _ := bounded.Deadline()
		cancel()
		if outer, bounds := ctx.Deadline(); err != nil && ctx.Err() == nil && !time.Now().Before(deadline) && (!bounds || time.Now().Before(outer)) {
			return nil, &StatusError{Op: "compile", Key: key, Code: codes.DeadlineExceeded,
				Message: fmt.Sprintf("no answer in %s (WithAnswerTimeout)", c.answer)}
		}
		if err == nil {
			out := &Compiled{Plugin: answer.Plugin}
			if ref, err := ParseReference(answer.Plugin); err == nil {
				out.Reference = &ref
			}
			return out, nil
		}
		code := status.Code(err)
		if (code != codes.Unavailable && code != codes.Aborted) || attempt >= c.retry.attempts {
			return nil, statusError("compile", key, err)
		}
		if err := c.retry.wait(ctx, attempt); err != nil {
			return nil, statusError("compile", key, err)
		}
	}
}

// statusError turns a gRPC or context error into a *StatusError.
func statusError(op string, key Key, err error) error {
	var already *StatusError
	if errors.As(err, &already) {
		return err
	}
	s := status.FromContextError(err)
	if st, ok := status.FromError(err); ok {
		s = st
	}
	return &StatusError{Op: op, Key: key, Code: s.Code(), Message: s.Message()}
}

type retryPolicy struct {
	attempts     int
	initial, max time.Duration
}

// wait sleeps before the attempt after `attempt` (1-based): a random delay up
// to a bound that doubles each time ("full jitter"), so runtimes that lost
// the server together do not come back in lockstep; ctx ends it early, and
// a delay past ctx's deadline is not waited for.
func (p retryPolicy) wait(ctx context.Context, attempt int) error {
	bound := p.initial << (attempt - 1)
	if bound > p.max || bound <= 0 {
		bound = p.max
	}
	var delay time.Duration
	if bound > 0 {
		delay = time.Duration(rand.Int63n(int64(bound)))
	}
	if deadline, ok := ctx.Deadline(); ok && time.Now().Add(delay).After(deadline) {
		// No attempt could start before the deadline: say so now.
		return context.DeadlineExceeded
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
