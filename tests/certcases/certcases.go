// Package certcases is the one table of provisioning-certificate cases that
// both implementations of the AMT certificate rules (amt-protocol.md §4) are
// tested against: the provisioner's pre-flight check (provisioner/certrules,
// behind `branchbox cert check` and the site API) and amtsim's firmware
// (tests/amtsim/firmware). The two stay separate code so that a misreading
// of the spec cannot pass on both sides; this table is what makes them agree.
//
// Every case breaks at most one rule and says, per firmware generation,
// which rule a device refuses it for. A device refusing the chain and the
// pre-flight check FAILing it must coincide: FAIL ⇔ refused.
package certcases

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"sync"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/certgen"
)

// Rule names: the vocabulary both implementations report.
const (
	KeySize       = "key-size"
	SignatureHash = "signature-hash"
	SetupPurpose  = "setup-purpose"
	ServerAuth    = "server-auth"
	DomainSuffix  = "domain-suffix"
	RootHash      = "root-hash"
	ChainLength   = "chain-length"
	ChainOrder    = "chain-order"
	ChainComplete = "chain-complete"
	Validity      = "validity"
	KeyMatch      = "key-match"
)

// Majors are the firmware generations amtsim models. The pre-flight check's
// "any device" (major 0) judges as the newest of them.
var Majors = []int{2, 3, 11, 16}

// Newest is the generation "any device" is judged as.
const Newest = 16

// Material is one case's chain, as an admin would hand it over and a
// provisioning server would present it.
type Material struct {
	Chain []*x509.Certificate // in the order presented
	Key   crypto.Signer       // the private key given with the chain
	// Domain is the site's domain: DHCP option 15, the device's DNS suffix.
	Domain string
	// Trusted is the root certificate whose hash the device's table holds.
	Trusted *x509.Certificate
}

// ChainPEM encodes the chain in presentation order.
func (m *Material) ChainPEM() []byte {
	var out []byte
	for _, c := range m.Chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// KeyPEM encodes the key as PKCS#8.
func (m *Material) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(m.Key)
	if err != nil {
		panic(fmt.Sprintf("certcases: marshal key: %v", err))
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// DER is the chain as a TLS Certificate message carries it.
func (m *Material) DER() [][]byte {
	out := make([][]byte, len(m.Chain))
	for i, c := range m.Chain {
		out[i] = c.Raw
	}
	return out
}

// TrustedSHA256 is the device's table entry, "sha256:HEX".
func (m *Material) TrustedSHA256() string {
	sum := sha256.Sum256(m.Trusted.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Case is one chain and the verdict of each firmware generation on it.
type Case struct {
	Name string
	// refused maps a firmware major to the rule it refuses the chain for;
	// majors absent accept it. all applies to every major.
	all     string
	refused map[int]string
	build   func() (*Material, error)

	once sync.Once
	m    *Material
	err  error
}

// Refused is the rule a device of firmware major (0: any device, judged as
// Newest) refuses the chain for, "" when it accepts it.
func (c *Case) Refused(major int) string {
	if major == 0 {
		major = Newest
	}
	if r, ok := c.refused[major]; ok {
		return r
	}
	return c.all
}

// Material builds the chain once; keys come from certgen's pool.
func (c *Case) Material() (*Material, error) {
	c.once.Do(func() { c.m, c.err = c.build() })
	return c.m, c.err
}

const (
	domain   = "branch1.example.com"
	leafCN   = "setup.branch1.example.com"
	lastYear = 365 * 24 * time.Hour
)

var (
	setupOID = asn1.ObjectIdentifier{2, 16, 840, 1, 113741, 1, 2, 3}
	setupOU  = "Intel(R) Client Setup Certificate"
	expired  = time.Date(2021, 6, 30, 0, 0, 0, 0, time.UTC)
)

func leaf(mod func(*certgen.Spec)) certgen.Spec {
	s := certgen.Leaf(leafCN)
	if mod != nil {
		mod(&s)
	}
	return s
}

func ca(cn string, mod func(*certgen.Spec)) certgen.Spec {
	s := certgen.CA(cn)
	if mod != nil {
		mod(&s)
	}
	return s
}

// chain builds leaf → issuing CA → root with the given changes, presented
// as built and trusted by its own root.
func chain(d string, l, issuing, root certgen.Spec) func() (*Material, error) {
	return func() (*Material, error) {
		c, err := certgen.Build(l, issuing, root)
		if err != nil {
			return nil, err
		}
		return &Material{Chain: c.Certs, Key: c.Keys[0], Domain: d, Trusted: c.Root()}, nil
	}
}

// std is the three-certificate chain every generation accepts, with one change.
func std(mod func(*certgen.Spec)) func() (*Material, error) {
	return chain(domain, leaf(mod), ca("Issuing CA", nil), ca("Root CA", nil))
}

func withCN(cn string) func(*certgen.Spec) { return func(s *certgen.Spec) { s.CN = cn } }

func bits(n int) func(*certgen.Spec) { return func(s *certgen.Spec) { s.Bits = n } }

// derive rearranges or replaces parts of a built material.
func derive(base func() (*Material, error), edit func(*Material) error) func() (*Material, error) {
	return func() (*Material, error) {
		m, err := base()
		if err != nil {
			return nil, err
		}
		out := *m
		out.Chain = append([]*x509.Certificate(nil), m.Chain...)
		return &out, edit(&out)
	}
}

// legacyRefuses: the AMT 2.6 and 3.0 profiles refuse with rule, later accept.
func legacyRefuses(rule string) map[int]string { return map[int]string{2: rule, 3: rule} }

// datesChecked: AMT 6.0+ checks dates against its clock, 2.6/3.0 cannot.
var datesChecked = map[int]string{2: "", 3: ""}

// All is the table.
var All = []*Case{
	{Name: "valid chain", build: std(nil)},
	{Name: "setup OU instead of the Intel EKU", build: std(func(s *certgen.Spec) { s.UnknownEKU = nil; s.OU = []string{setupOU} })},
	{Name: "registrable .com match (CN in a sibling domain)", build: std(withCN("prov.corp.example.com"))},
	{Name: "leaf key usage without digitalSignature", build: std(func(s *certgen.Spec) { s.KeyUsage = x509.KeyUsageKeyEncipherment })},

	{Name: "leaf RSA 4096", all: KeySize, build: std(bits(4096))},
	{Name: "leaf RSA 3072", all: KeySize, build: std(bits(3072))},
	{Name: "issuing CA RSA 4096", all: KeySize, build: chain(domain, leaf(nil), ca("Issuing CA", bits(4096)), ca("Root CA", nil))},
	{Name: "root RSA 4096", all: KeySize, build: chain(domain, leaf(nil), ca("Issuing CA", nil), ca("Root CA", bits(4096)))},
	{Name: "leaf RSA 1024", refused: map[int]string{16: KeySize}, build: std(bits(1024))},
	{Name: "issuing CA RSA 1024", refused: map[int]string{16: KeySize}, build: chain(domain, leaf(nil), ca("Issuing CA", bits(1024)), ca("Root CA", nil))},
	{Name: "leaf ECDSA P-256", all: KeySize, build: std(func(s *certgen.Spec) { s.ECDSA = true })},
	{Name: "issuing CA Ed25519", all: KeySize, build: chain(domain, leaf(nil), ca("Issuing CA", func(s *certgen.Spec) { s.Ed25519 = true }), ca("Root CA", nil))},

	{Name: "leaf signed with SHA-1", refused: map[int]string{16: SignatureHash}, build: std(func(s *certgen.Spec) { s.SigAlg = x509.SHA1WithRSA })},

	{Name: "neither Intel EKU nor setup OU", all: SetupPurpose, build: std(func(s *certgen.Spec) { s.UnknownEKU = nil })},
	{Name: "setup OU in the wrong case", all: SetupPurpose, build: std(func(s *certgen.Spec) { s.UnknownEKU = nil; s.OU = []string{"intel(r) client setup certificate"} })},
	{Name: "no serverAuth EKU", all: ServerAuth, build: std(func(s *certgen.Spec) { s.EKU = nil })},

	{Name: "CN in another domain", all: DomainSuffix, build: std(withCN("setup.other-company.com"))},
	{Name: "wildcard CN", all: DomainSuffix, build: std(withCN("*." + domain))},
	{Name: "registrable .org match", refused: legacyRefuses(DomainSuffix),
		build: chain("branch1.example.org", leaf(withCN("prov.corp.example.org")), ca("Issuing CA", nil), ca("Root CA", nil))},
	{Name: "registrable co.uk match", refused: legacyRefuses(DomainSuffix),
		build: chain("branch1.example.co.uk", leaf(withCN("prov.corp.example.co.uk")), ca("Issuing CA", nil), ca("Root CA", nil))},

	{Name: "root not in the device's hash table", all: RootHash, build: derive(std(nil), func(m *Material) error {
		other, err := certgen.Build(ca("Some Other Root", func(s *certgen.Spec) { s.Key = 1 }))
		m.Trusted = other.Root()
		return err
	})},

	{Name: "five certificates", all: ChainLength, build: func() (*Material, error) {
		c, err := certgen.Build(leaf(nil), ca("Issuing CA 3", nil), ca("Issuing CA 2", nil), ca("Issuing CA 1", nil), ca("Root CA", nil))
		if err != nil {
			return nil, err
		}
		return &Material{Chain: c.Certs, Key: c.Keys[0], Domain: domain, Trusted: c.Root()}, nil
	}},
	{Name: "root left out", all: ChainComplete, build: derive(std(nil), func(m *Material) error {
		m.Chain = m.Chain[:2]
		return nil
	})},
	{Name: "root first", all: ChainOrder, build: derive(std(nil), func(m *Material) error {
		m.Chain[0], m.Chain[2] = m.Chain[2], m.Chain[0]
		return nil
	})},
	{Name: "leaf, root, issuing CA", all: ChainOrder, build: derive(std(nil), func(m *Material) error {
		m.Chain[1], m.Chain[2] = m.Chain[2], m.Chain[1]
		return nil
	})},

	{Name: "leaf expired in 2021", all: Validity, refused: datesChecked, build: std(func(s *certgen.Spec) {
		s.NotBefore, s.NotAfter = expired.Add(-lastYear), expired
	})},
	{Name: "leaf not yet valid", all: Validity, refused: datesChecked, build: std(func(s *certgen.Spec) {
		s.NotBefore, s.NotAfter = time.Now().Add(24*time.Hour), time.Now().Add(lastYear)
	})},
	{Name: "issuing CA expired in 2021", all: Validity, refused: datesChecked, build: chain(domain, leaf(nil),
		ca("Issuing CA", func(s *certgen.Spec) { s.NotBefore, s.NotAfter = expired.Add(-lastYear), expired }), ca("Root CA", nil))},

	{Name: "private key of another certificate", all: KeyMatch, build: derive(std(nil), func(m *Material) error {
		k, err := certgen.PooledKey(2048, 7)
		m.Key = k
		return err
	})},
}
