package plugins

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// StatusError is the server's answer to a call that failed (NOT_FOUND for an
// unknown plugin, FAILED_PRECONDITION with the compiler's message for one
// that does not build, UNAVAILABLE once retries are exhausted, ...). It
// carries the gRPC status, so status.Code(err) works on it too.
type StatusError struct {
	// Op is the call: "pull", "compile" or "provenance".
	Op string
	// Key is what the call was about.
	Key Key
	// Code and Message are the gRPC status the call ended with.
	Code    codes.Code
	Message string
}

// Error names the call, the key and the status.
func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %s: %s", e.Op, e.Key, e.Code, e.Message)
}

// GRPCStatus lets status.FromError and status.Code see the server's status.
func (e *StatusError) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// IntegrityError says the bytes received contradict what was announced or
// pinned for them: their sha256 or their size differs from the server's
// claim (the server's copy or the transfer is damaged), or the digest the
// caller pinned is not the one the server holds or sent. Nothing was cached
// or loaded. Pull again later, or ask whoever publishes the plugin.
type IntegrityError struct {
	Key Key
	// Field is "digest" or "size".
	Field string
	// Claimed is who made the claim the bytes contradict: "server" or "pin".
	Claimed string
	// Want is the claim, Got what the bytes are (or, for a pin the server's
	// announced digest contradicts before any byte, what the server holds).
	Want, Got string
}

// Error names the key, the claim and what the bytes are.
func (e *IntegrityError) Error() string {
	who := "the server announced"
	if e.Claimed == "pin" {
		who = "the pinned"
	}
	return fmt.Sprintf("%s: %s %s %s, but got %s; nothing was cached or loaded", e.Key, who, e.Field, e.Want, e.Got)
}

// VerificationError is a refusal of the artifact by its signed provenance
// (WithTrustedKeys): the server has none, it is signed by a key not trusted,
// the signature does not verify, or the statement is for another build key
// or other bytes. Nothing was cached or loaded. An operator decides: trust
// the signer's key, or find out who replaced the artifact.
type VerificationError struct {
	Key    Key
	Digest string
	Reason string
}

// Error names the key, the digest and the check that failed.
func (e *VerificationError) Error() string {
	return fmt.Sprintf("refusing %s (%s): %s", e.Key.String(), e.Digest, e.Reason)
}

// IncompatibleError says a plugin cannot be loaded into this host: its build
// info differs from the host's in Field (the Go version, the build mode, a
// build setting such as -trimpath or -tags, or the module named in Field).
// plugin.Open was not called, so the path is not poisoned for the process.
// Rebuild the plugin for this exact build of the host (the registry does so
// when the host's runtime descriptor and go.mod match it), or rebuild the
// host the way its plugins are built.
type IncompatibleError struct {
	// Path is the plugin file that was checked.
	Path string
	// Field names the first difference: "go version", "-buildmode",
	// "-trimpath", "-tags", "CGO_ENABLED", "GOAMD64", ..., or
	// "module <path>".
	Field string
	// Want is the host's value, Got the plugin's; "" when absent.
	Want, Got string
}

// Error names the file, the field and both values.
func (e *IncompatibleError) Error() string {
	return fmt.Sprintf("plugin %s cannot load into this host: %s is %q, the host's is %q; plugin.Open was not called",
		e.Path, e.Field, e.Got, e.Want)
}

// SymbolError says the plugin's symbol is missing or not of the type asked
// for. The plugin was opened (and stays loaded: Go cannot unload it).
type SymbolError struct {
	Path   string
	Symbol string
	// Want is the type asked for, Got the symbol's ("" when missing).
	Want, Got string
}

// Error names the file, the symbol and both types.
func (e *SymbolError) Error() string {
	if e.Got == "" {
		return fmt.Sprintf("plugin %s has no symbol %s", e.Path, e.Symbol)
	}
	return fmt.Sprintf("plugin %s: symbol %s is a %s, not a %s (nor a *%s)", e.Path, e.Symbol, e.Got, e.Want, e.Want)
}
