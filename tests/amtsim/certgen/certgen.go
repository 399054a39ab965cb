// Package certgen builds provisioning certificate chains for the simulator's
// tests and fixtures: each test states exactly which property of the chain it
// breaks.
package certgen

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"sync"
	"time"
)

// IntelSetupOID is the "client setup" EKU of Intel provisioning certificates.
var IntelSetupOID = asn1.ObjectIdentifier{2, 16, 840, 1, 113741, 1, 2, 3}

// Spec describes one certificate.
type Spec struct {
	CN         string
	OU         []string
	EKU        []x509.ExtKeyUsage
	UnknownEKU []asn1.ObjectIdentifier
	Bits       int                     // RSA size; 0 means 2048
	ECDSA      bool                    // P-256 key instead of RSA
	Ed25519    bool                    // Ed25519 key instead of RSA
	SigAlg     x509.SignatureAlgorithm // 0: Go's default for the issuer key
	CA         bool
	Issuer     int       // index in the chain of the issuer; -1 (or last cert) means self-signed
	Key        int       // pick a different pooled key with the same size (0 = by position)
	NotBefore  time.Time // zero: an hour ago
	NotAfter   time.Time // zero: a year from now
	// KeyUsage replaces the default (digitalSignature|keyEncipherment for a
	// leaf, certSign|CRLSign|digitalSignature for a CA) when not zero.
	KeyUsage x509.KeyUsage
}

// Leaf is a valid provisioning leaf for cn.
func Leaf(cn string) Spec {
	return Spec{CN: cn, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, UnknownEKU: []asn1.ObjectIdentifier{IntelSetupOID}}
}

// CA is an intermediate or root.
func CA(cn string) Spec { return Spec{CN: cn, CA: true} }

// Chain is a built chain, leaf first.
type Chain struct {
	Certs []*x509.Certificate
	Keys  []crypto.Signer
}

var (
	poolMu sync.Mutex
	pool   = map[int][]crypto.Signer{}
)

// Pool keys for the non-RSA types.
const (
	P256       = 0
	Ed25519Key = -1
)

// PooledKey returns the i-th cached key of the given RSA size (or P256,
// Ed25519Key). Key generation dominates test time; reusing keys across
// chains is harmless.
func PooledKey(bits, i int) (crypto.Signer, error) {
	poolMu.Lock()
	defer poolMu.Unlock()
	for len(pool[bits]) <= i {
		var k crypto.Signer
		var err error
		switch bits {
		case P256:
			k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		case Ed25519Key:
			_, k, err = ed25519.GenerateKey(rand.Reader)
		default:
			k, err = rsa.GenerateKey(rand.Reader, bits)
		}
		if err != nil {
			return nil, fmt.Errorf("generate %d-bit key: %w", bits, err)
		}
		pool[bits] = append(pool[bits], k)
	}
	return pool[bits][i], nil
}

// Build creates the chain described leaf first; by default each certificate is
// issued by the next one and the last is self-signed.
func Build(specs ...Spec) (*Chain, error) { return build(nil, specs) }

// Extend issues the described certificates below base's first certificate
// (a CA) and returns them followed by base, so chains can share one root.
func Extend(base *Chain, specs ...Spec) (*Chain, error) { return build(base, specs) }

func build(base *Chain, specs []Spec) (*Chain, error) {
	n := len(specs)
	c := &Chain{Certs: make([]*x509.Certificate, n), Keys: make([]crypto.Signer, n)}
	for i := range specs {
		bits := specs[i].Bits
		switch {
		case specs[i].Ed25519:
			bits = Ed25519Key
		case bits == 0 && !specs[i].ECDSA:
			bits = 2048
		}
		// Keys never repeat within a chain, base certificates included.
		offset := 0
		if base != nil {
			offset = len(base.Certs)
		}
		k, err := PooledKey(bits, offset+i+specs[i].Key*(n+offset))
		if err != nil {
			return nil, err
		}
		c.Keys[i] = k
	}
	issuerOf := func(i int) int {
		if specs[i].Issuer != 0 {
			return specs[i].Issuer
		}
		if i == n-1 {
			return -1
		}
		return i + 1
	}
	// Issue from the root down so that every issuer exists first.
	for i := n - 1; i >= 0; i-- {
		s := specs[i]
		notBefore, notAfter := s.NotBefore, s.NotAfter
		if notBefore.IsZero() {
			notBefore = time.Now().Add(-time.Hour)
		}
		if notAfter.IsZero() {
			notAfter = time.Now().Add(365 * 24 * time.Hour)
		}
		serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tpl := &x509.Certificate{
			SerialNumber:          serial,
			Subject:               pkix.Name{CommonName: s.CN, OrganizationalUnit: s.OU, Organization: []string{"amtsim test"}},
			NotBefore:             notBefore,
			NotAfter:              notAfter,
			ExtKeyUsage:           s.EKU,
			UnknownExtKeyUsage:    s.UnknownEKU,
			SignatureAlgorithm:    s.SigAlg,
			BasicConstraintsValid: true,
			IsCA:                  s.CA,
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		}
		if s.CA {
			tpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
		}
		if s.KeyUsage != 0 {
			tpl.KeyUsage = s.KeyUsage
		}
		parent, signer := tpl, c.Keys[i]
		if i == n-1 && base != nil && s.Issuer == 0 {
			parent, signer = base.Certs[0], base.Keys[0]
		} else if j := issuerOf(i); j >= 0 {
			parent, signer = c.Certs[j], c.Keys[j]
			if parent == nil {
				return nil, fmt.Errorf("certificate %d: issuer %d must come later in the chain", i, j)
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, tpl, parent, c.Keys[i].Public(), signer)
		if err != nil {
			return nil, fmt.Errorf("certificate %d (%s): %w", i, s.CN, err)
		}
		if c.Certs[i], err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
	}
	if base != nil {
		c.Certs = append(c.Certs, base.Certs...)
		c.Keys = append(c.Keys, base.Keys...)
	}
	return c, nil
}

// Root is the last certificate.
func (c *Chain) Root() *x509.Certificate { return c.Certs[len(c.Certs)-1] }

// DER returns the raw certificates, leaf first.
func (c *Chain) DER() [][]byte {
	out := make([][]byte, len(c.Certs))
	for i, x := range c.Certs {
		out[i] = x.Raw
	}
	return out
}

// TLSCertificate is the chain as a TLS client certificate (leaf key).
func (c *Chain) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: c.DER(), PrivateKey: c.Keys[0], Leaf: c.Certs[0]}
}

// ChainPEM encodes the certificates, leaf first.
func (c *Chain) ChainPEM() []byte {
	var out []byte
	for _, x := range c.Certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: x.Raw})...)
	}
	return out
}

// LeafKeyPEM encodes the leaf private key as PKCS#8.
func (c *Chain) LeafKeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.Keys[0])
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
