// Package sdk is the contract between the example runtime and its drivers:
// a driver is a Go plugin whose main package exports a variable named Plugin
// of type Driver.
package sdk

// Version is this module's release. A driver that reports it shows which
// release of the sdk it was compiled against.
const Version = "v1.2.0"

// Driver is what the runtime calls.
type Driver interface {
	// Name identifies the driver in the runtime's logs.
	Name() string
	// Handle answers one request.
	Handle(request string) (string, error)
}

// Describe names a driver and the sdk release it runs on (new in v1.2.0).
func Describe(d Driver) string {
	return d.Name() + " on sdk " + Version
}
