package provisioner

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/branchbox/branchbox/cluster"
)

// managementCA names the cluster's authority for the TLS certificates
// devices serve once activated. Consoles trust it (GET /api/v1/tls/ca) to
// verify a device by its FQDN.
const managementCA = "management"

const (
	caLifetime   = 20 * 365 * 24 * time.Hour
	leafLifetime = 2 * 365 * 24 * time.Hour
	// leafBackdate covers device clocks a little behind ours: firmware
	// refuses a certificate that is not yet valid by its own clock.
	leafBackdate = time.Hour
)

// creating keeps the sessions of one node, which all want the CA at once
// when the first TLS devices arrive, from each generating a key.
var creating sync.Mutex

// EnsureAuthority returns the management CA, making it on first use. The
// key is sealed before it enters the store; the create is first-wins, so
// nodes racing to make it all end up with the same one.
func EnsureAuthority(ctx context.Context, st Store, now time.Time) (cluster.Authority, error) {
	if a, ok := st.Authority(managementCA); ok {
		return a, nil
	}
	creating.Lock()
	defer creating.Unlock()
	if a, ok := st.Authority(managementCA); ok {
		return a, nil
	}
	certPEM, keyDER, err := newAuthority(now)
	if err != nil {
		return cluster.Authority{}, fmt.Errorf("management CA: %w", err)
	}
	sealed, err := st.Seal(keyDER)
	if err != nil {
		return cluster.Authority{}, fmt.Errorf("management CA: %w", err)
	}
	err = st.Apply(ctx, cluster.CreateAuthority{
		Authority: cluster.Authority{Name: managementCA, CertPEM: string(certPEM), Key: sealed, Created: now.UTC()},
		Time:      now.UTC(),
	})
	if err != nil && !errors.Is(err, cluster.ErrConflict) {
		return cluster.Authority{}, fmt.Errorf("management CA: %w", err)
	}
	a, ok := st.Authority(managementCA)
	if !ok {
		return cluster.Authority{}, errors.New("management CA: not in the store after it was created")
	}
	return a, nil
}

func newAuthority(now time.Time) (certPEM, keyDER []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		return nil, nil, err
	}
	id := make([]byte, 4)
	if _, err := rand.Read(id); err != nil {
		return nil, nil, err
	}
	tpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "branchbox management CA " + hex.EncodeToString(id), Organization: []string{"branchbox"}},
		NotBefore:             now.Add(-leafBackdate),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyDER, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n
}

// issuer signs device certificates with a loaded management CA.
type issuer struct {
	cert  *x509.Certificate
	key   crypto.Signer
	roots *x509.CertPool
}

// issuerCache keeps the unsealed CA of the last load, so sessions do not
// unseal and parse it each time.
type issuerCache struct {
	mu  sync.Mutex
	pem string
	iss *issuer
}

func (c *issuerCache) get(ctx context.Context, st Store, now time.Time) (*issuer, error) {
	a, err := EnsureAuthority(ctx, st, now)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.iss != nil && c.pem == a.CertPEM {
		return c.iss, nil
	}
	iss, err := loadIssuer(st, a)
	if err != nil {
		return nil, err
	}
	c.pem, c.iss = a.CertPEM, iss
	return iss, nil
}

func loadIssuer(st Store, a cluster.Authority) (*issuer, error) {
	block, _ := pem.Decode([]byte(a.CertPEM))
	if block == nil {
		return nil, errors.New("management CA: certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("management CA: %w", err)
	}
	keyDER, err := st.Unseal(a.Key)
	if err != nil {
		return nil, fmt.Errorf("management CA key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, errors.New("management CA key does not parse")
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("management CA key cannot sign")
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &issuer{cert: cert, key: key, roots: roots}, nil
}

// issue signs a TLS server certificate for fqdn over a device's key.
func (i *issuer) issue(fqdn string, pub *rsa.PublicKey, now time.Time) ([]byte, error) {
	tpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: fqdn},
		DNSNames:     []string{fqdn},
		NotBefore:    now.Add(-leafBackdate),
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, i.cert, pub, i.key)
	if err != nil {
		return nil, fmt.Errorf("certificate for %s: %w", fqdn, err)
	}
	return der, nil
}
