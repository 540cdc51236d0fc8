// Package plugins is the Go client of the atomix-plugins registry, for Go
// runtimes that load drivers with Go's plugin package. A runtime makes three
// calls:
//
//	c, err := plugins.NewClient("registry:5679",
//		plugins.WithRuntime("3.0.0"),
//		plugins.WithTrustedKeys(signingPub),
//		plugins.WithCache("/var/cache/drivers", 1<<30))
//	defer c.Close()
//	driver, res, err := plugins.Load[sdk.Driver](ctx, c, plugins.Key{Name: "example.com/drivers/counter", Version: "v1.0.0"})
//
// Load pulls the driver (Client.Pull), checks it can be loaded into this very
// build (CheckCompatible) and only then calls plugin.Open and looks up its
// symbol; Client.Compile asks the registry to build a driver ahead of time.
//
// Go's plugin package forgives nothing: a failed plugin.Open is permanent for
// that path in the process, and a plugin can never be unloaded. So every
// check runs before the first Open: the bytes' sha256 (against the digest the
// server announces, a pinned digest, or the signed provenance of trusted
// keys), then the build info of the plugin against the host's. Each refusal
// is a typed error usable with errors.As: *IntegrityError, *VerificationError,
// *IncompatibleError, *SymbolError, and *StatusError for the server's answers.
//
// The package speaks atomix.runtime.v1 to any server. The digest and size
// metadata, resume from an offset, conditional pulls and atomix-plugin://
// references are this project's extensions: used when the server shows them,
// never required (Result.VerifiedBy says what vouched for the bytes).
package plugins
