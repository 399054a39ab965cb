package provisioner

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/provisioner/certrules"
	"github.com/branchbox/branchbox/provisioner/wsman"
)

// siteFor returns the site whose subnet holds ip. Relayed sites list the
// relayed subnet, so this covers them too.
func siteFor(sites []cluster.Site, ip netip.Addr) (cluster.Site, bool) {
	best, bestBits := cluster.Site{}, -1
	for _, s := range sites {
		p, err := netip.ParsePrefix(s.Subnet)
		if err != nil || !p.Contains(ip) {
			continue
		}
		if p.Bits() > bestBits {
			best, bestBits = s, p.Bits()
		}
	}
	return best, bestBits >= 0
}

// siteCert is a site's provisioning chain, parsed and unsealed once.
type siteCert struct {
	fingerprint [32]byte // of chain PEM + sealed key: reload when either changes
	tls         *tls.Config
	chain       []*x509.Certificate
	key         crypto.Signer
	failures    []certrules.Result
	cn          string
}

// certCache keeps parsed chains per site.
type certCache struct {
	mu    sync.Mutex
	sites map[string]*siteCert
}

func (c *certCache) get(st Store, s cluster.Site) (*siteCert, error) {
	if s.CertChainPEM == "" || len(s.CertKey) == 0 {
		return nil, fmt.Errorf("site %q has no provisioning certificate", s.Name)
	}
	fp := sha256.Sum256(bytes.Join([][]byte{[]byte(s.CertChainPEM), s.CertKey}, []byte{0}))
	c.mu.Lock()
	defer c.mu.Unlock()
	if sc, ok := c.sites[s.Name]; ok && sc.fingerprint == fp {
		return sc, nil
	}
	chain, err := certrules.ParseChain([]byte(s.CertChainPEM))
	if err != nil {
		return nil, fmt.Errorf("site %q certificate: %w", s.Name, err)
	}
	keyPEM, err := st.Unseal(s.CertKey)
	if err != nil {
		return nil, fmt.Errorf("site %q certificate key: %w", s.Name, err)
	}
	key, err := certrules.ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("site %q certificate key: %w", s.Name, err)
	}
	der := make([][]byte, len(chain))
	for i, cert := range chain {
		der[i] = cert.Raw
	}
	sc := &siteCert{
		fingerprint: fp,
		tls:         wsman.ProvisioningTLS(der, key),
		chain:       chain,
		key:         key,
		failures:    certrules.Failures(certrules.Check(certrules.Input{Chain: chain, Key: key, Domain: s.Domain})),
		cn:          chain[0].Subject.CommonName,
	}
	if c.sites == nil {
		c.sites = map[string]*siteCert{}
	}
	c.sites[s.Name] = sc
	return sc, nil
}

// rulesError summarises failed certificate rules for a device record.
func rulesError(rs []certrules.Result) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.Rule + ": " + r.Reason
	}
	return strings.Join(parts, "; ")
}
