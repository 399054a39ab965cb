package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Members authenticate each other with certificates from a cluster CA the
// first member creates at bootstrap. A new member gets its certificate by
// presenting the join token; everything else on the cluster port needs a
// certificate from that CA.
const (
	pkiDir = "cluster"
	// clusterServerName is the name every member certificate carries and
	// every member dials: members are told apart by their raft ID (the
	// certificate's CN), not by DNS.
	clusterServerName = "branchbox-cluster"
	tokenPrefix       = "bbj1"
	memberCertLife    = 10 * 365 * 24 * time.Hour
)

// pki is one member's cluster credentials. caKey and joinSecret are held
// by full members only: they are what lets a member admit a new one.
type pki struct {
	dir        string
	caCert     *x509.Certificate
	caPEM      []byte
	caKey      crypto.Signer // nil on a witness
	cert       tls.Certificate
	joinSecret []byte // nil on a witness
}

func (p *pki) pool() *x509.CertPool {
	cp := x509.NewCertPool()
	cp.AddCert(p.caCert)
	return cp
}

// Token is what an operator hands a new member: the join secret and the
// SHA-256 of the CA certificate, so the newcomer can tell the real
// cluster from an impostor before it sends anything.
func (p *pki) Token() string {
	if p.joinSecret == nil {
		return ""
	}
	sum := sha256.Sum256(p.caCert.Raw)
	return tokenPrefix + "." + base64.RawURLEncoding.EncodeToString(p.joinSecret) + "." + hex.EncodeToString(sum[:])
}

// joinToken is a parsed token.
type joinToken struct {
	secret []byte
	caHash []byte
}

func parseToken(s string) (joinToken, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 3 || parts[0] != tokenPrefix {
		return joinToken{}, errors.New("join token: not a branchbox join token (want bbj1.<secret>.<ca-sha256>)")
	}
	secret, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || len(secret) < 16 {
		return joinToken{}, errors.New("join token: malformed secret")
	}
	hash, err := hex.DecodeString(parts[2])
	if err != nil || len(hash) != sha256.Size {
		return joinToken{}, errors.New("join token: malformed CA hash")
	}
	return joinToken{secret: secret, caHash: hash}, nil
}

func (p *pki) checkSecret(t joinToken) bool {
	return p.joinSecret != nil && subtle.ConstantTimeCompare(p.joinSecret, t.secret) == 1
}

func pkiPath(dataDir, name string) string { return filepath.Join(dataDir, pkiDir, name) }

// loadPKI reads a member's credentials; ok is false when it has none yet.
func loadPKI(dataDir string) (*pki, bool, error) {
	p := &pki{dir: dataDir}
	caPEM, err := os.ReadFile(pkiPath(dataDir, "ca.pem"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("cluster CA: %w", err)
	}
	if p.caCert, err = parseCertPEM(caPEM); err != nil {
		return nil, false, fmt.Errorf("cluster CA: %w", err)
	}
	p.caPEM = caPEM
	if p.cert, err = tls.LoadX509KeyPair(pkiPath(dataDir, "node.pem"), pkiPath(dataDir, "node.key")); err != nil {
		return nil, false, fmt.Errorf("member certificate: %w", err)
	}
	if keyPEM, err := os.ReadFile(pkiPath(dataDir, "ca.key")); err == nil {
		if p.caKey, err = parseKeyPEM(keyPEM); err != nil {
			return nil, false, fmt.Errorf("cluster CA key: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("cluster CA key: %w", err)
	}
	if s, err := os.ReadFile(pkiPath(dataDir, "join.secret")); err == nil {
		p.joinSecret = s
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("join secret: %w", err)
	}
	return p, true, nil
}

// newClusterPKI makes the CA, the join secret and the first member's
// certificate, and writes them to dataDir.
func newClusterPKI(dataDir, id, role string) (*pki, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "branchbox cluster CA", Organization: []string{"branchbox"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(20 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	p := &pki{dir: dataDir, caKey: caKey, joinSecret: make([]byte, 24)}
	p.caCert, _ = x509.ParseCertificate(der)
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if _, err := rand.Read(p.joinSecret); err != nil {
		return nil, err
	}
	key, csr, err := newMemberKey(id, role)
	if err != nil {
		return nil, err
	}
	certPEM, err := p.issue(csr)
	if err != nil {
		return nil, err
	}
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	caKeyPEM, err := marshalKeyPEM(caKey)
	if err != nil {
		return nil, err
	}
	if err := writePKI(dataDir, joinGrant{CA: string(p.caPEM), Cert: string(certPEM), CAKey: string(caKeyPEM), JoinSecret: p.joinSecret}, keyPEM); err != nil {
		return nil, err
	}
	if p.cert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return nil, err
	}
	return p, nil
}

// newMemberKey makes a member's key and a CSR naming its id and role.
func newMemberKey(id, role string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: id, OrganizationalUnit: []string{role}},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate request: %w", err)
	}
	return key, csr, nil
}

// issue signs a member certificate for a CSR. The CSR names the member
// (CN) and its role (OU); the certificate always carries the cluster
// name, for both TLS server and client use.
func (p *pki) issue(csrDER []byte) ([]byte, error) {
	if p.caKey == nil {
		return nil, errors.New("this member holds no cluster CA key (a witness cannot admit members)")
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: csr.Subject.CommonName, OrganizationalUnit: csr.Subject.OrganizationalUnit, Organization: []string{"branchbox"}},
		DNSNames:     []string{clusterServerName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(memberCertLife),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, csr.PublicKey, p.caKey)
	if err != nil {
		return nil, fmt.Errorf("member certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// joinGrant is what an admitting member hands a newcomer. CAKey and
// JoinSecret (and the seal key, sent beside it) go to full members only:
// a witness holds the log but can neither admit members nor read secrets.
type joinGrant struct {
	CA         string `json:"ca"`
	Cert       string `json:"cert"`
	CAKey      string `json:"ca_key,omitempty"`
	JoinSecret []byte `json:"join_secret,omitempty"`
	SealKey    []byte `json:"seal_key,omitempty"`
}

// writePKI stores a grant and the member's own key, each file 0600 and
// written atomically. ca.pem goes last: loadPKI takes it to mean the set
// is complete, so a crash part-way leaves a node that joins again rather
// than one that starts with a half set (or a seal key of its own).
func writePKI(dataDir string, g joinGrant, keyPEM []byte) error {
	if err := os.MkdirAll(filepath.Join(dataDir, pkiDir), 0o700); err != nil {
		return fmt.Errorf("cluster credentials: %w", err)
	}
	if len(g.SealKey) > 0 {
		if err := writeFileAtomic(filepath.Join(dataDir, sealKeyFile), g.SealKey, 0o600); err != nil {
			return fmt.Errorf("seal key: %w", err)
		}
	}
	files := []struct {
		name string
		data []byte
	}{
		{"node.key", keyPEM},
		{"ca.key", []byte(g.CAKey)},
		{"join.secret", g.JoinSecret},
		{"node.pem", []byte(g.Cert)},
		{"ca.pem", []byte(g.CA)},
	}
	for _, f := range files {
		if len(f.data) == 0 {
			continue
		}
		if err := writeFileAtomic(pkiPath(dataDir, f.name), f.data, 0o600); err != nil {
			return fmt.Errorf("cluster credentials: %w", err)
		}
	}
	return nil
}

// peerIdentity is the member a verified connection comes from.
type peerIdentity struct{ id, role string }

func identityOf(cs tls.ConnectionState) (peerIdentity, bool) {
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return peerIdentity{}, false
	}
	c := cs.PeerCertificates[0]
	role := ""
	if len(c.Subject.OrganizationalUnit) > 0 {
		role = c.Subject.OrganizationalUnit[0]
	}
	return peerIdentity{id: c.Subject.CommonName, role: role}, true
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

func parseKeyPEM(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM key")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("key cannot sign")
	}
	return s, nil
}

func marshalKeyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
