// Command counter v1.1.0 uses sdk.Describe, which only sdk v1.2.0 has: it
// cannot be built for a runtime that pins sdk v1.1.0, and the compiler says
// so (FAILED_PRECONDITION with the Go compiler's error).
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

func (c *counter) Handle(request string) (string, error) {
	n, err := strconv.Atoi(request)
	if err != nil {
		return "", fmt.Errorf("counter: request %q is not an integer", request)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total += n
	return fmt.Sprintf("total=%d (%s)", c.total, sdk.Describe(c)), nil
}

// Plugin is the symbol the runtime looks up.
var Plugin sdk.Driver = &counter{}
