//go:build !linux

package mei

import (
	"fmt"
	"runtime"
	"time"
)

func openDevice(path string, _ time.Duration) (Transport, error) {
	return nil, fmt.Errorf("mei device %s: not supported on %s (use --mei unix:PATH)", path, runtime.GOOS)
}
