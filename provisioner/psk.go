package provisioner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/branchbox/branchbox/cluster"
)

// PSK lengths (amt-protocol.md §5.1).
const (
	pidLength = 8
	ppsLength = 32
)

// PSKPair is a generated PID/PPS in the clear, for writing setup.bin.
type PSKPair struct {
	PID string
	PPS string
}

// GeneratePSKs creates n PID/PPS pairs for a site and stores them, PPS
// sealed. Devices booted with them send version-2 hellos, which are
// recognised by PID and recorded as failed: Go's TLS has no PSK suites.
func GeneratePSKs(ctx context.Context, st Store, site string, n int, now time.Time) ([]PSKPair, error) {
	if site == "" {
		return nil, errNoSite
	}
	if _, ok := st.Site(site); !ok {
		return nil, fmt.Errorf("site %q: %w", site, cluster.ErrNotFound)
	}
	if n < 1 || n > 1000 {
		return nil, &inputError{fmt.Errorf("count %d: must be 1 to 1000", n)}
	}
	out := make([]PSKPair, 0, n)
	for len(out) < n {
		pair := PSKPair{PID: randomString(pskAlphabet, pidLength), PPS: randomString(pskAlphabet, ppsLength)}
		sealed, err := st.Seal([]byte(pair.PPS))
		if err != nil {
			return nil, fmt.Errorf("sealing PPS: %w", err)
		}
		err = st.Apply(ctx, cluster.PutPSK{Pair: cluster.PSKPair{PID: pair.PID, PPS: sealed, Site: site, Created: now.UTC()}, Time: now.UTC()})
		if errors.Is(err, cluster.ErrConflict) {
			continue // PID collision: draw again
		}
		if err != nil {
			return nil, fmt.Errorf("storing PID %s: %w", pair.PID, err)
		}
		out = append(out, pair)
	}
	return out, nil
}
