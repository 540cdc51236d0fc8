// Package sdk is the contract between the example runtime and its drivers:
// a driver is a Go plugin whose main package exports a variable named Plugin
// of type Driver.
package sdk

// Version is this module's release. A driver that reports it shows which
// release of the sdk it was compiled against.
const Version = "v1.0.0"

// Driver is what the runtime calls.
type Driver interface {
	// Name identifies the driver in the runtime's logs.
	Name() string
	// Handle answers one request.
	Handle(request string) (string, error)
}
