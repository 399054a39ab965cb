package device

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// TLS setting instances of AMT_TLSSettingData: the network interface and
// the host-side (LMS) one.
const (
	TLSRemoteInstance = "Intel(r) AMT 802.3 TLS Settings"
	TLSLocalInstance  = "Intel(r) AMT LMS TLS Settings"
)

// Return values of AMT_PublicKeyManagementService (PT_STATUS_*).
const (
	PTMaxLimitReached = 23
	PTDuplicate       = 2058
	PTInvalidCert     = 2063
)

// Store capacities. Real firmware documents none per SKU; these are small
// enough that a provisioner leaking keys on every retry runs into them.
const (
	maxKeyPairs     = 8
	maxCertificates = 8
)

type keyPair struct {
	handle string
	key    *rsa.PrivateKey
}

type storedCert struct {
	handle string
	cert   *x509.Certificate
	key    *rsa.PrivateKey // the device's key pair it certifies; nil if none
}

// TLSSetting is one AMT_TLSSettingData instance.
type TLSSetting struct {
	InstanceID                 string
	Enabled                    bool
	AcceptNonSecureConnections bool
	MutualAuthentication       bool
}

// tlsStore is the certificate store and TLS configuration. Puts of
// AMT_TLSSettingData are staged and take effect at CommitChanges, as on
// firmware where the network stack restarts to apply them.
type tlsStore struct {
	keys       []keyPair
	certs      []storedCert
	nextHandle int
	context    string // certificate handle of the TLS credential context
	active     [2]TLSSetting
	staged     [2]TLSSetting
	dirty      bool
	serving    *storedCert // certificate 16993 presents once TLS is on
}

func newTLSStore() tlsStore {
	s := tlsStore{active: [2]TLSSetting{
		{InstanceID: TLSRemoteInstance},
		{InstanceID: TLSLocalInstance, AcceptNonSecureConnections: true},
	}}
	s.staged = s.active
	return s
}

func (s *tlsStore) handle(kind string) string {
	h := fmt.Sprintf("Intel(r) AMT %s: Handle: %d", kind, s.nextHandle)
	s.nextHandle++
	return h
}

// GenerateKeyPair makes an RSA key pair in the device's store
// (AMT_PublicKeyManagementService.GenerateKeyPair, KeyAlgorithm 0 = RSA).
func (d *Device) GenerateKeyPair(algorithm, length int) (handle string, rv int, err error) {
	const op = "GenerateKeyPair"
	d.mu.Lock()
	if err := d.requireAdminLocked(op); err != nil {
		d.mu.Unlock()
		return "", 0, err
	}
	if algorithm != 0 || length != 2048 {
		rv := d.failure(op, PTInvalidParameter, fmt.Sprintf("KeyAlgorithm %d KeyLength %d: only RSA (0) 2048", algorithm, length))
		d.mu.Unlock()
		return "", rv, nil
	}
	if len(d.tls.keys) >= maxKeyPairs {
		rv := d.failure(op, PTMaxLimitReached, fmt.Sprintf("%d key pairs stored", len(d.tls.keys)))
		d.mu.Unlock()
		return "", rv, nil
	}
	d.mu.Unlock()
	// Key generation takes a while; other requests go on meanwhile.
	key, kerr := rsa.GenerateKey(rand.Reader, length)
	d.mu.Lock()
	defer d.mu.Unlock()
	if kerr != nil {
		return "", d.failure(op, PTInternalError, kerr.Error()), nil
	}
	handle = d.tls.handle("Key")
	d.tls.keys = append(d.tls.keys, keyPair{handle: handle, key: key})
	d.log.Info("key pair generated", "handle", handle)
	return handle, PTSuccess, nil
}

// KeyPairInfo is one AMT_PublicPrivateKeyPair.
type KeyPairInfo struct {
	Handle string
	// DERKey is base64 of the PKCS#1 RSAPublicKey.
	DERKey string
}

// KeyPairs lists AMT_PublicPrivateKeyPair.
func (d *Device) KeyPairs() ([]KeyPairInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.requireAdminLocked("Get AMT_PublicPrivateKeyPair"); err != nil {
		return nil, err
	}
	out := make([]KeyPairInfo, len(d.tls.keys))
	for i, k := range d.tls.keys {
		out[i] = KeyPairInfo{Handle: k.handle, DERKey: base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PublicKey(&k.key.PublicKey))}
	}
	return out, nil
}

// AddCertificate stores a certificate (base64 DER) and, when its key is one
// of the device's key pairs, pairs them. A certificate outside its
// validity period by the device clock is refused, which is why servers
// sync the clock first.
func (d *Device) AddCertificate(blob string) (handle string, rv int, err error) {
	const op = "AddCertificate"
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.requireAdminLocked(op); err != nil {
		return "", 0, err
	}
	der, derr := base64.StdEncoding.DecodeString(blob)
	if derr != nil {
		return "", d.failure(op, PTInvalidCert, "CertificateBlob is not base64"), nil
	}
	cert, cerr := x509.ParseCertificate(der)
	if cerr != nil {
		return "", d.failure(op, PTInvalidCert, "CertificateBlob does not parse: "+cerr.Error()), nil
	}
	now := d.clock()
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return "", d.failure(op, PTInvalidCert, fmt.Sprintf("not valid at the device time %s", now.UTC().Format("2006-01-02T15:04:05Z"))), nil
	}
	for _, c := range d.tls.certs {
		if bytes.Equal(c.cert.Raw, der) {
			return "", d.failure(op, PTDuplicate, "certificate already stored as "+c.handle), nil
		}
	}
	if len(d.tls.certs) >= maxCertificates {
		return "", d.failure(op, PTMaxLimitReached, fmt.Sprintf("%d certificates stored", len(d.tls.certs))), nil
	}
	sc := storedCert{cert: cert}
	if pub, ok := cert.PublicKey.(*rsa.PublicKey); ok {
		for _, k := range d.tls.keys {
			if k.key.PublicKey.Equal(pub) {
				sc.key = k.key
			}
		}
	}
	sc.handle = d.tls.handle("Certificate")
	d.tls.certs = append(d.tls.certs, sc)
	d.log.Info("certificate added", "handle", sc.handle, "subject", cert.Subject.String(), "has_key", sc.key != nil)
	return sc.handle, PTSuccess, nil
}

// CertInfo is one AMT_PublicKeyCertificate.
type CertInfo struct {
	Handle, Subject, Issuer string
	DER                     []byte
}

// Certificates lists AMT_PublicKeyCertificate.
func (d *Device) Certificates() ([]CertInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.requireAdminLocked("Get AMT_PublicKeyCertificate"); err != nil {
		return nil, err
	}
	out := make([]CertInfo, len(d.tls.certs))
	for i, c := range d.tls.certs {
		out[i] = CertInfo{Handle: c.handle, Subject: c.cert.Subject.String(), Issuer: c.cert.Issuer.String(), DER: c.cert.Raw}
	}
	return out, nil
}

// CreateTLSCredentialContext makes the stored certificate the TLS
// service's credential. It must be a leaf with its private key on the
// device; there is one context.
func (d *Device) CreateTLSCredentialContext(certHandle string) error {
	const op = "Create AMT_TLSCredentialContext"
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.requireAdminLocked(op); err != nil {
		return err
	}
	if d.tls.context != "" {
		d.refuse(op, "a TLS credential context exists ("+d.tls.context+")")
		return fmt.Errorf("%s: %w", op, ErrAlreadyExists)
	}
	c := d.certLocked(certHandle)
	switch {
	case c == nil:
		return d.invalid(op, "no certificate %q", certHandle)
	case c.key == nil:
		return d.invalid(op, "certificate %q has no private key on the device", certHandle)
	case c.cert.IsCA:
		return d.invalid(op, "certificate %q is a CA, not a leaf", certHandle)
	}
	d.tls.context = certHandle
	d.log.Info("TLS credential context created", "certificate", certHandle)
	return nil
}

func (d *Device) certLocked(handle string) *storedCert {
	for i := range d.tls.certs {
		if d.tls.certs[i].handle == handle {
			return &d.tls.certs[i]
		}
	}
	return nil
}

// TLSCredentialContext returns the certificate handle of the context, ""
// when there is none.
func (d *Device) TLSCredentialContext() (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.requireAdminLocked("Get AMT_TLSCredentialContext"); err != nil {
		return "", err
	}
	return d.tls.context, nil
}

// TLSSettings lists AMT_TLSSettingData as last Put (pending until commit).
func (d *Device) TLSSettings() ([]TLSSetting, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.requireAdminLocked("Get AMT_TLSSettingData"); err != nil {
		return nil, err
	}
	return d.tls.staged[:], nil
}

// TLSSettingChange carries the properties a Put sets; nil leaves one alone.
type TLSSettingChange struct {
	Enabled                    *bool
	AcceptNonSecureConnections *bool
	MutualAuthentication       *bool
}

// PutTLSSetting stages a change of one AMT_TLSSettingData instance.
func (d *Device) PutTLSSetting(instanceID string, c TLSSettingChange) (TLSSetting, error) {
	const op = "Put AMT_TLSSettingData"
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.requireAdminLocked(op); err != nil {
		return TLSSetting{}, err
	}
	i := -1
	for j, s := range d.tls.staged {
		if s.InstanceID == instanceID {
			i = j
		}
	}
	if i < 0 {
		d.refuse(op, fmt.Sprintf("no instance %q", instanceID))
		return TLSSetting{}, fmt.Errorf("%s %q: %w", op, instanceID, ErrNoInstance)
	}
	s := d.tls.staged[i]
	if c.Enabled != nil {
		s.Enabled = *c.Enabled
	}
	if c.AcceptNonSecureConnections != nil {
		s.AcceptNonSecureConnections = *c.AcceptNonSecureConnections
	}
	if c.MutualAuthentication != nil {
		s.MutualAuthentication = *c.MutualAuthentication
	}
	switch {
	case s.MutualAuthentication:
		return TLSSetting{}, d.invalid(op, "MutualAuthentication needs trusted root certificates, which the simulator does not model")
	case s.Enabled && d.tls.context == "":
		return TLSSetting{}, d.invalid(op, "TLS cannot be enabled without a TLS credential context")
	case i == 1 && s.Enabled && !d.tls.staged[0].Enabled:
		return TLSSetting{}, d.invalid(op, "the local (LMS) interface can use TLS only when the network interface does")
	case i == 0 && !s.Enabled && d.tls.staged[1].Enabled:
		return TLSSetting{}, d.invalid(op, "the network interface cannot drop TLS while the local interface uses it")
	}
	d.tls.staged[i] = s
	d.tls.dirty = true
	d.log.Info("TLS setting staged", "instance", instanceID, "enabled", s.Enabled)
	return s, nil
}

// commitTLSLocked applies staged TLS settings; it reports whether
// anything changed.
func (d *Device) commitTLSLocked() bool {
	if !d.tls.dirty {
		return false
	}
	d.tls.active, d.tls.dirty = d.tls.staged, false
	d.tls.serving = nil
	if d.tls.active[0].Enabled {
		d.tls.serving = d.certLocked(d.tls.context)
		d.tlsCert = tls.Certificate{Certificate: [][]byte{d.tls.serving.cert.Raw}, PrivateKey: d.tls.serving.key}
	}
	return true
}

// PlainRemoteAllowed reports whether the plain-HTTP network port (16992)
// serves: once TLS is on, only when non-secure connections are accepted.
func (d *Device) PlainRemoteAllowed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.tls.active[0]
	return !r.Enabled || r.AcceptNonSecureConnections
}

// TLSStatus is the operational TLS state, for the status endpoint.
type TLSStatus struct {
	Enabled                    bool     `json:"enabled"`
	AcceptNonSecureConnections bool     `json:"accept_non_secure,omitempty"`
	LocalEnabled               bool     `json:"local_enabled"`
	CertSubject                string   `json:"cert_subject,omitempty"`
	CertDNSNames               []string `json:"cert_dns_names,omitempty"`
	CertSHA256                 string   `json:"cert_sha256,omitempty"`
}

func (d *Device) tlsStatusLocked() TLSStatus {
	s := TLSStatus{
		Enabled: d.tls.active[0].Enabled, AcceptNonSecureConnections: d.tls.active[0].AcceptNonSecureConnections,
		LocalEnabled: d.tls.active[1].Enabled,
	}
	if c := d.tls.serving; c != nil {
		sum := sha256.Sum256(c.cert.Raw)
		s.CertSubject, s.CertDNSNames, s.CertSHA256 = c.cert.Subject.String(), c.cert.DNSNames, hex.EncodeToString(sum[:])
	}
	return s
}
