// Command runtime is an example runtime proxy on the Go client package
// (clients/go): it pulls a driver from the plugin registry, verified and
// cached, checks that it can load into this very build, loads it with Go's
// plugin package, and calls it. With -trust-key it loads nothing the
// registry's signing key does not vouch for.
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
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"example.com/atomix/sdk"
	plugins "github.com/atomix/atomix-plugins/clients/go"
)

// exitUntrusted is the CLI's exit code for the same refusal (pull --trust-key).
const exitUntrusted = 9

type listFlag []string

func (c *listFlag) String() string     { return strings.Join(*c, ",") }
func (c *listFlag) Set(v string) error { *c = append(*c, v); return nil }

type report struct {
	Runtime      string `json:"runtime"`
	BuildVersion string `json:"buildVersion"`
	SDK          string `json:"sdk"`
	Digest       string `json:"digest"`
	Size         int64  `json:"size"`
	Path         string `json:"path"`
	VerifiedBy   string `json:"verifiedBy"`
	// Transferred is the artifact bytes received, all -parallel loads together.
	Transferred int64    `json:"transferred"`
	Driver      string   `json:"driver"`
	Results     []string `json:"results"`
}

func main() {
	server := flag.String("server", "127.0.0.1:5679", "plugin registry address")
	version := flag.String("version", "3.0.0", "this runtime's release")
	build := flag.String("build", runtime.Version(), "this runtime's build version")
	spec := flag.String("plugin", "", "driver to load, module@version")
	dir := flag.String("dir", "", "the cache of pulled drivers, a folder only this user can write (default: atomix-plugins in the user cache folder)")
	timeout := flag.Duration("timeout", 60*time.Second, "limit for the whole pull")
	parallel := flag.Int("parallel", 1, "load the driver from this many goroutines at once, as a proxy's workers do at start")
	var calls, trustKeys listFlag
	flag.Var(&calls, "call", "a request to hand the driver (repeatable)")
	flag.Var(&trustKeys, "trust-key", "PEM public key whose signed provenance the driver must carry (repeatable: any of them)")
	flag.Parse()

	out, err := run(*server, *version, *build, *spec, *dir, *timeout, *parallel, calls, trustKeys)
	if err != nil {
		fmt.Fprintln(os.Stderr, "runtime:", err)
		var untrusted *plugins.VerificationError
		if errors.As(err, &untrusted) {
			os.Exit(exitUntrusted)
		}
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}

func run(server, version, build, spec, dir string, timeout time.Duration, parallel int, calls, trustKeys []string) (*report, error) {
	key, err := plugins.ParseKey(spec)
	if err != nil {
		return nil, fmt.Errorf("-plugin: %w", err)
	}
	opts := []plugins.Option{plugins.WithRuntime(version), plugins.WithBuild(build)}
	if dir != "" {
		opts = append(opts, plugins.WithCache(dir, 0))
	}
	for _, path := range trustKeys {
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("-trust-key: %w", err)
		}
		opts = append(opts, plugins.WithTrustedKeys(pem))
	}
	client, err := plugins.NewClient(server, opts...)
	if err != nil {
		return nil, err
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Every goroutine gets the same driver; the client makes one transfer.
	drivers := make([]sdk.Driver, parallel)
	results := make([]*plugins.Result, parallel)
	errs := make([]error, parallel)
	var wg sync.WaitGroup
	for i := 0; i < parallel; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			drivers[i], results[i], errs[i] = plugins.Load[sdk.Driver](ctx, client, key)
		}(i)
	}
	wg.Wait()
	var transferred int64
	for i := range errs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if drivers[i] != drivers[0] {
			return nil, fmt.Errorf("two loads of %s gave two drivers", spec)
		}
		transferred += results[i].Transferred
	}
	driver, res := drivers[0], results[0]
	out := &report{
		Runtime: version, BuildVersion: build, SDK: sdk.Version,
		Digest: res.Digest, Size: res.Size, Path: res.Path, VerifiedBy: string(res.VerifiedBy),
		Transferred: transferred, Driver: driver.Name(), Results: []string{},
	}
	for _, call := range calls {
		result, err := driver.Handle(call)
		if err != nil {
			return nil, fmt.Errorf("driver %s: %w", out.Driver, err)
		}
		out.Results = append(out.Results, result)
	}
	return out, nil
}
