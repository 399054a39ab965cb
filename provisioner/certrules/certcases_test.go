package certrules

import (
	"fmt"
	"testing"
	"time"

	"github.com/branchbox/branchbox/tests/certcases"
)

// TestCertCases judges every chain of the table shared with amtsim's
// firmware model for every generation: a rule FAILs exactly where a device
// of that generation refuses the TLS session (tests/amtsim/wsman runs the
// same table against the simulator).
func TestCertCases(t *testing.T) {
	for _, c := range certcases.All {
		m, err := c.Material()
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		for _, major := range append([]int{0}, certcases.Majors...) {
			t.Run(fmt.Sprintf("%s/AMT %d", c.Name, major), func(t *testing.T) {
				results := Check(Input{Chain: m.Chain, Key: m.Key, Domain: m.Domain, Now: time.Now(), AMTMajor: major,
					Trusted: []string{m.TrustedSHA256()}})
				want := c.Refused(major)
				failed := map[string]bool{}
				for _, r := range Failures(results) {
					failed[r.Rule] = true
				}
				switch {
				case want == "" && len(failed) > 0:
					t.Errorf("devices accept this chain, but the check fails it:\n%s", dump(results))
				case want != "" && !failed[want]:
					t.Errorf("devices refuse it for %s, which the check does not fail:\n%s", want, dump(results))
				}
			})
		}
	}
}
