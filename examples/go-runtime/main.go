// Command runtime is an example runtime proxy: it pulls a driver from the
// plugin registry over gRPC (atomix.runtime.v1.PluginRegistry/PullPlugin),
// checks the bytes against the x-plugin-digest header, loads the driver with
// Go's plugin package, looks up its symbol and calls it. With -trust-key it
// first verifies the driver's signed provenance (provenance.go) and loads
// nothing the registry's signing key does not vouch for.
//
// A Go plugin only loads into the very build it was compiled for (same Go
// release, same flags, same version of every package both contain), which is
// why the registry compiles drivers per runtime build. This program is built
// with `go build -trimpath`, as the compiler builds plugins.
//
//	runtime -server 127.0.0.1:5679 -version 3.0.0 \
//	  -plugin example.com/atomix/drivers/counter@v1.0.0 -dir /tmp/plugins -call 1 -call 2
//
// It prints one JSON object on stdout and exits 0, or prints the error on
// stderr and exits 1, or 9 when -trust-key refuses the driver (no signed
// provenance, an untrusted signer, or a statement for other bytes): then
// nothing of the pull is written to -dir.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"plugin"
	"runtime"
	"strings"
	"time"

	"example.com/atomix/sdk"
	"google.golang.org/grpc"

	"example.com/atomix/runtime/internal/runtimev1"
)

// symbol is the name every driver exports; the runtime's descriptor
// (examples/runtimes/3.0.0/runtime.json) tells the compiler the same.
const symbol = "Plugin"

// exitUntrusted is the CLI's exit code for the same refusal (pull --trust-key).
const exitUntrusted = 9

type listFlag []string

func (c *listFlag) String() string     { return strings.Join(*c, ",") }
func (c *listFlag) Set(v string) error { *c = append(*c, v); return nil }

type report struct {
	Runtime      string   `json:"runtime"`
	BuildVersion string   `json:"buildVersion"`
	SDK          string   `json:"sdk"`
	Digest       string   `json:"digest"`
	Size         int64    `json:"size"`
	Path         string   `json:"path"`
	Driver       string   `json:"driver"`
	Results      []string `json:"results"`
}

func main() {
	server := flag.String("server", "127.0.0.1:5679", "plugin registry address")
	version := flag.String("version", "3.0.0", "this runtime's release")
	build := flag.String("build", runtime.Version(), "this runtime's build version")
	spec := flag.String("plugin", "", "driver to load, module@version")
	dir := flag.String("dir", os.TempDir(), "where to write the pulled driver")
	timeout := flag.Duration("timeout", 60*time.Second, "limit for the whole pull")
	var calls, trustKeys listFlag
	flag.Var(&calls, "call", "a request to hand the driver (repeatable)")
	flag.Var(&trustKeys, "trust-key", "PEM public key whose signed provenance the driver must carry (repeatable: any of them)")
	flag.Parse()

	out, err := run(*server, *version, *build, *spec, *dir, *timeout, calls, trustKeys)
	if err != nil {
		fmt.Fprintln(os.Stderr, "runtime:", err)
		var untrusted *untrustedError
		if errors.As(err, &untrusted) {
			os.Exit(exitUntrusted)
		}
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}

func run(server, version, build, spec, dir string, timeout time.Duration, calls, trustKeys []string) (*report, error) {
	at := strings.LastIndex(spec, "@")
	if at <= 0 {
		return nil, fmt.Errorf("-plugin %q: want module@version", spec)
	}
	name, pluginVersion := spec[:at], spec[at+1:]
	trusted, err := loadTrustedKeys(trustKeys)
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := grpc.DialContext(ctx, server, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", server, err)
	}
	defer conn.Close()

	path := filepath.Join(dir, strings.ReplaceAll(name, "/", "_")+"@"+pluginVersion+".so")
	req := &runtimev1.PullPluginRequest{
		Runtime: &runtimev1.RuntimeInfo{Version: version, BuildVersion: build},
		Plugin:  &runtimev1.PluginInfo{Name: name, Version: pluginVersion},
	}
	var check func(digest string) error
	if len(trusted) > 0 {
		check = func(digest string) error { return checkProvenance(ctx, conn, req, digest, trusted) }
	}
	digest, size, err := pull(ctx, runtimev1.NewPluginRegistryClient(conn), req, path, check)
	if err != nil {
		return nil, err
	}

	p, err := plugin.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	sym, err := p.Lookup(symbol)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", symbol, err)
	}
	driver, ok := sym.(*sdk.Driver)
	if !ok {
		return nil, fmt.Errorf("symbol %s is a %T, not a *sdk.Driver", symbol, sym)
	}
	out := &report{
		Runtime: version, BuildVersion: build, SDK: sdk.Version,
		Digest: digest, Size: size, Path: path, Driver: (*driver).Name(),
		Results: []string{},
	}
	for _, call := range calls {
		result, err := (*driver).Handle(call)
		if err != nil {
			return nil, fmt.Errorf("driver %s: %w", out.Driver, err)
		}
		out.Results = append(out.Results, result)
	}
	return out, nil
}

// pull streams the artifact to path and checks it against the digest the
// registry announced in its response headers, and with check (when not nil),
// before anything loads it: until both pass the bytes are only in
// path.partial, which is removed whatever happens.
func pull(ctx context.Context, client runtimev1.PluginRegistryClient, req *runtimev1.PullPluginRequest, path string, check func(digest string) error) (string, int64, error) {
	stream, err := client.PullPlugin(ctx, req)
	if err != nil {
		return "", 0, fmt.Errorf("pull: %w", err)
	}
	header, err := stream.Header()
	if err != nil {
		return "", 0, fmt.Errorf("pull: %w", err)
	}
	announced := header.Get("x-plugin-digest")
	if len(announced) == 0 {
		// A call that fails before its first message has no headers: the
		// status (NOT_FOUND, FAILED_PRECONDITION with the compiler's
		// message, ...) comes with the first Recv.
		if _, err := stream.Recv(); err != nil && !errors.Is(err, io.EOF) {
			return "", 0, fmt.Errorf("pull: %w", err)
		}
	}
	if len(announced) != 1 || !strings.HasPrefix(announced[0], "sha256:") {
		return "", 0, fmt.Errorf("pull: response has no x-plugin-digest header (got %q)", announced)
	}
	tmp := path + ".partial"
	file, err := os.Create(tmp)
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(tmp)
	defer file.Close()
	hash := sha256.New()
	var size int64
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", 0, fmt.Errorf("pull: %w", err)
		}
		hash.Write(chunk.Data)
		if _, err := file.Write(chunk.Data); err != nil {
			return "", 0, err
		}
		size += int64(len(chunk.Data))
	}
	got := "sha256:" + hex.EncodeToString(hash.Sum(nil))
	if got != announced[0] {
		return "", 0, fmt.Errorf("pull: received bytes hash to %s, the registry announced %s", got, announced[0])
	}
	if err := file.Close(); err != nil {
		return "", 0, err
	}
	if check != nil {
		if err := check(got); err != nil {
			return "", 0, err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", 0, err
	}
	return got, size, nil
}
