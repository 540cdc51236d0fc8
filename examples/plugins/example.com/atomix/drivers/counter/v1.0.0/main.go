// Command counter is an example driver: a Go plugin for the example runtime
// (examples/go-runtime). Its go.mod asks for sdk v1.0.0; the runtime it is
// compiled for pins v1.1.0, so the compiler must align the two or the
// runtime's plugin.Open refuses the result.
package main

import (
	"fmt"
	"strconv"
	"sync"

	"example.com/atomix/sdk"
)

type counter struct {
	mu    sync.Mutex
	total int
}

func (c *counter) Name() string { return "counter" }

// Handle adds the request (an integer) to the running total and answers
// with the total and the sdk release this driver was compiled against.
func (c *counter) Handle(request string) (string, error) {
	n, err := strconv.Atoi(request)
	if err != nil {
		return "", fmt.Errorf("counter: request %q is not an integer", request)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total += n
	return fmt.Sprintf("total=%d sdk=%s", c.total, sdk.Version), nil
}

// Plugin is the symbol the runtime looks up (its descriptor's "symbol").
var Plugin sdk.Driver = &counter{}
