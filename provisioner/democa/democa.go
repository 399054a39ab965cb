// Package democa makes a throw-away provisioning PKI — root, intermediate
// and an "Intel(R) Client Setup Certificate" leaf for a site domain — for
// `make demo` and tests. The root's SHA-256 is what a simulated device must
// carry as a custom hash.
package democa

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

var oidClientSetup = asn1.ObjectIdentifier{2, 16, 840, 1, 113741, 1, 2, 3}

const setupOU = "Intel(R) Client Setup Certificate"

// Options shape the generated chain; zero values give a chain every rule
// passes.
type Options struct {
	Domain string // required: the site's DHCP option 15 domain
	// CommonName of the leaf; default "setup.<Domain>".
	CommonName string
	// Key sizes in bits; default 2048 each.
	RootBits, IntermediateBits, LeafBits int
	// Validity window; default one hour ago to one year from now.
	NotBefore, NotAfter time.Time
}

// Chain is the generated PKI.
type Chain struct {
	Root, Intermediate, Leaf          *x509.Certificate
	RootKey, IntermediateKey, LeafKey *rsa.PrivateKey
}

// Generate builds root → intermediate → leaf.
func Generate(o Options) (*Chain, error) {
	if o.Domain == "" {
		return nil, errors.New("democa: domain is required")
	}
	if o.CommonName == "" {
		o.CommonName = "setup." + o.Domain
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = o.NotBefore.Add(366 * 24 * time.Hour)
	}
	var c Chain
	var err error
	if c.RootKey, err = newKey(o.RootBits); err != nil {
		return nil, err
	}
	if c.IntermediateKey, err = newKey(o.IntermediateBits); err != nil {
		return nil, err
	}
	if c.LeafKey, err = newKey(o.LeafBits); err != nil {
		return nil, err
	}

	rootTmpl := caTemplate("branchbox demo root CA", o, 1)
	if c.Root, err = sign(rootTmpl, rootTmpl, &c.RootKey.PublicKey, c.RootKey); err != nil {
		return nil, fmt.Errorf("democa: root: %w", err)
	}
	interTmpl := caTemplate("branchbox demo provisioning CA", o, 0)
	if c.Intermediate, err = sign(interTmpl, c.Root, &c.IntermediateKey.PublicKey, c.RootKey); err != nil {
		return nil, fmt.Errorf("democa: intermediate: %w", err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject: pkix.Name{
			CommonName:         o.CommonName,
			Organization:       []string{"branchbox demo"},
			OrganizationalUnit: []string{setupOU},
		},
		NotBefore:          o.NotBefore,
		NotAfter:           o.NotAfter,
		KeyUsage:           x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{oidClientSetup},
		DNSNames:           []string{o.CommonName},
	}
	if c.Leaf, err = sign(leafTmpl, c.Intermediate, &c.LeafKey.PublicKey, c.IntermediateKey); err != nil {
		return nil, fmt.Errorf("democa: leaf: %w", err)
	}
	return &c, nil
}

func newKey(bits int) (*rsa.PrivateKey, error) {
	if bits == 0 {
		bits = 2048
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("democa: %d-bit key: %w", bits, err)
	}
	return k, nil
}

func caTemplate(cn string, o Options, maxPath int) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"branchbox demo"}},
		NotBefore:             o.NotBefore,
		NotAfter:              o.NotAfter.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPath,
		MaxPathLenZero:        maxPath == 0,
	}
}

func sign(tmpl, parent *x509.Certificate, pub *rsa.PublicKey, key *rsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n
}

// ChainPEM is leaf, intermediate, root — the order devices need.
func (c *Chain) ChainPEM() []byte {
	var out []byte
	for _, cert := range []*x509.Certificate{c.Leaf, c.Intermediate, c.Root} {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	}
	return out
}

// KeyPEM is the leaf's private key, PKCS#8.
func (c *Chain) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.LeafKey)
	if err != nil {
		panic(fmt.Sprintf("marshal RSA key: %v", err)) // cannot fail for RSA keys
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// RootSHA256 is the custom hash a device needs, lower-case hex.
func (c *Chain) RootSHA256() string {
	s := sha256.Sum256(c.Root.Raw)
	return hex.EncodeToString(s[:])
}

// Files are the paths WriteFiles produced.
type Files struct {
	Chain, Key, Root, RootHash string
}

// WriteFiles writes chain.pem, key.pem (0600), root.pem and
// root.sha256 into dir.
func (c *Chain) WriteFiles(dir string) (Files, error) {
	f := Files{
		Chain:    filepath.Join(dir, "chain.pem"),
		Key:      filepath.Join(dir, "key.pem"),
		Root:     filepath.Join(dir, "root.pem"),
		RootHash: filepath.Join(dir, "root.sha256"),
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return f, fmt.Errorf("democa: %w", err)
	}
	writes := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.Chain, c.ChainPEM(), 0o644},
		{f.Key, c.KeyPEM(), 0o600},
		{f.Root, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Root.Raw}), 0o644},
		{f.RootHash, []byte(c.RootSHA256() + "\n"), 0o644},
	}
	for _, w := range writes {
		if err := os.WriteFile(w.path, w.data, w.mode); err != nil {
			return f, fmt.Errorf("democa: %w", err)
		}
	}
	return f, nil
}
