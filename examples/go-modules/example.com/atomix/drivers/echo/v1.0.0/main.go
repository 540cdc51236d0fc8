// Command echo is an example driver published only through the module
// proxy in examples/goproxy (not in the source catalog), so that the
// compiler's GOPROXY source is exercised.
package main

import "example.com/atomix/sdk"

type echo struct{}

func (echo) Name() string { return "echo" }

func (echo) Handle(request string) (string, error) { return request, nil }

// Plugin is the symbol the runtime looks up.
var Plugin sdk.Driver = echo{}
