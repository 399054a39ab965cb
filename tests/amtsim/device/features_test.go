// Firmware takes certificates with negative serials; see cmd/amtsim/main.go.
//
//go:debug x509negativeserial=1
package device

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"slices"
	"testing"
	"time"
)

// activated is a device in admin control mode by remote configuration.
func activated(t *testing.T) *Device {
	t.Helper()
	d := newDevice(t, "16.1", true, nil, nil)
	if rv := d.SetMEBxPassword("Mebx-Pass1"); rv != PTSuccess {
		t.Fatalf("SetMEBxPassword: %d", rv)
	}
	if rv := d.CommitChanges(); rv != PTSuccess {
		t.Fatalf("CommitChanges: %d", rv)
	}
	return d
}

// TestFeaturesRefusedBeforeActivation: before setup starts there is no
// session to authorise the configuration classes; the remote-configuration
// session may use them (MeshCentral enables TLS before its commit).
func TestFeaturesRefusedBeforeActivation(t *testing.T) {
	if _, _, err := newDevice(t, "16.1", true, nil, nil).GenerateKeyPair(0, 2048); err != nil {
		t.Errorf("in setup mode: %v", err)
	}
	d := newDevice(t, "16.1", false, nil, nil)
	calls := map[string]func() error{
		"Get AMT_RedirectionService":     func() error { _, err := d.GetRedirection(); return err },
		"RequestStateChange redirection": func() error { _, err := d.RedirectionStateChange(32771); return err },
		"Put ListenerEnabled":            func() error { return d.SetRedirectionListener(true) },
		"RequestStateChange KVM":         func() error { _, err := d.KVMStateChange(KVMEnabled); return err },
		"Put OptInRequired":              func() error { return d.SetOptInRequired(OptInNone) },
		"Put KVM settings":               func() error { _, err := d.PutKVMSettings(KVMSettingsChange{}); return err },
		"GenerateKeyPair":                func() error { _, _, err := d.GenerateKeyPair(0, 2048); return err },
		"AddCertificate":                 func() error { _, _, err := d.AddCertificate(""); return err },
		"Create TLS credential context":  func() error { return d.CreateTLSCredentialContext("x") },
		"Put TLS setting":                func() error { _, err := d.PutTLSSetting(TLSRemoteInstance, TLSSettingChange{}); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			if err := call(); !errors.Is(err, ErrNotActivated) {
				t.Errorf("before setup: %v, want ErrNotActivated", err)
			}
		})
	}
}

func TestRedirectionAndKVMStates(t *testing.T) {
	tests := []struct {
		name       string
		redir, kvm int
		wantRedir  int
		wantKVM    int
		sol, ider  bool
		kvmOn      bool
	}{
		{"both on", 32771, KVMEnabled, RSCCompleted, RSCCompleted, true, true, true},
		{"IDER only, KVM off", 32769, KVMDisabled, RSCCompleted, RSCCompleted, false, true, false},
		{"SOL only", 32770, KVMEnabled, RSCCompleted, RSCCompleted, true, false, true},
		{"both off", 32768, KVMDisabled, RSCCompleted, RSCCompleted, false, false, false},
		{"below the range, KVM offline state", 32767, KVMEnabledButOffline, RSCInvalidParameter, RSCInvalidParameter, true, true, true},
		{"above the range, KVM 0", 32772, 0, RSCInvalidParameter, RSCInvalidParameter, true, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := activated(t)
			if rv, err := d.RedirectionStateChange(tc.redir); err != nil || rv != tc.wantRedir {
				t.Errorf("redirection %d: %d %v, want %d", tc.redir, rv, err, tc.wantRedir)
			}
			if rv, err := d.KVMStateChange(tc.kvm); err != nil || rv != tc.wantKVM {
				t.Errorf("KVM %d: %d %v, want %d", tc.kvm, rv, err, tc.wantKVM)
			}
			f := d.Status().Features
			if f.SOL != tc.sol || f.IDER != tc.ider || f.KVM != tc.kvmOn {
				t.Errorf("features %+v, want sol %v ider %v kvm %v", f, tc.sol, tc.ider, tc.kvmOn)
			}
		})
	}
}

func TestOptInRequired(t *testing.T) {
	tests := []struct {
		name  string
		ccm   bool
		value uint32
		ok    bool
		want  string
	}{
		{"none in ACM", false, OptInNone, true, "none"},
		{"KVM in ACM", false, OptInKVM, true, "kvm"},
		{"all in ACM", false, OptInAll, true, "all"},
		{"undefined value", false, 2, false, "kvm"},
		{"none in CCM", true, OptInNone, false, "kvm"},
		{"all in CCM", true, OptInAll, true, "all"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := activated(t)
			if tc.ccm {
				d = newDevice(t, "16.1", false, nil, nil)
				if rv := d.Setup(2, "00112233445566778899aabbccddeeff"); rv != HBSSuccess {
					t.Fatalf("Setup: %d", rv)
				}
			}
			err := d.SetOptInRequired(tc.value)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidValue)) {
				t.Errorf("SetOptInRequired(%d): %v, want ok=%v", tc.value, err, tc.ok)
			}
			if got := d.Status().Features.UserConsent; got != tc.want {
				t.Errorf("user consent %q, want %q", got, tc.want)
			}
		})
	}
}

func TestKVMSettings(t *testing.T) {
	on, pw, bad, timeout := true, "Vnc-Pw1!", "short", 70000
	tests := []struct {
		name   string
		change KVMSettingsChange
		ok     bool
	}{
		{"port 5900 without an RFB password", KVMSettingsChange{Is5900PortEnabled: &on}, false},
		{"port 5900 with one", KVMSettingsChange{Is5900PortEnabled: &on, RFBPassword: &pw}, true},
		{"weak RFB password", KVMSettingsChange{RFBPassword: &bad}, false},
		{"session timeout out of range", KVMSettingsChange{SessionTimeout: &timeout}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := activated(t).PutKVMSettings(tc.change)
			if (err == nil) != tc.ok {
				t.Errorf("PutKVMSettings: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// signer is a CA for the operational certificates of the TLS tests.
type signer struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
}

func newSigner(t *testing.T) signer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return signer{cert, key}
}

func (s signer) issue(t *testing.T, pub *rsa.PublicKey, from, to time.Time) string {
	t.Helper()
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "amt.example.com"},
		DNSNames: []string{"amt.example.com"}, NotBefore: from, NotAfter: to, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, s.cert, pub, s.key)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

func TestTLSConfiguration(t *testing.T) {
	d := activated(t)
	ca := newSigner(t)
	now := time.Now()
	if _, rv, _ := d.GenerateKeyPair(0, 1024); rv != PTInvalidParameter {
		t.Errorf("1024-bit key: %d, want %d", rv, PTInvalidParameter)
	}
	handle, rv, err := d.GenerateKeyPair(0, 2048)
	if err != nil || rv != PTSuccess {
		t.Fatalf("GenerateKeyPair: %d %v", rv, err)
	}
	keys, _ := d.KeyPairs()
	raw, _ := base64.StdEncoding.DecodeString(keys[0].DERKey)
	pub, err := x509.ParsePKCS1PublicKey(raw)
	if err != nil || keys[0].Handle != handle {
		t.Fatalf("key pair %+v: %v", keys, err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)

	good := ca.issue(t, pub, now.Add(-time.Minute), now.Add(time.Hour))
	certs := []struct {
		name string
		blob string
		want int
	}{
		{"not base64", "%%%", PTInvalidCert},
		{"expired by the device clock", ca.issue(t, pub, now.Add(-2*time.Hour), now.Add(-time.Hour)), PTInvalidCert},
		{"not yet valid", ca.issue(t, pub, now.Add(time.Hour), now.Add(2*time.Hour)), PTInvalidCert},
		{"for the device key", good, PTSuccess},
		{"the same again", good, PTDuplicate},
		{"for a key the device does not hold", ca.issue(t, &other.PublicKey, now.Add(-time.Minute), now.Add(time.Hour)), PTSuccess},
		{"with a negative serial, as MeshCentral's node-forge makes half the time", negativeSerial(t, ca.issue(t, &other.PublicKey, now.Add(-time.Minute), now.Add(2*time.Hour))), PTSuccess},
	}
	handles := map[string]string{}
	for _, c := range certs {
		h, rv, err := d.AddCertificate(c.blob)
		if err != nil || rv != c.want {
			t.Errorf("AddCertificate %s: %d %v, want %d", c.name, rv, err, c.want)
		}
		handles[c.name] = h
	}

	if err := d.CreateTLSCredentialContext(handles["for a key the device does not hold"]); !errors.Is(err, ErrInvalidValue) {
		t.Errorf("context for a certificate without its key: %v", err)
	}
	yes := true
	if _, err := d.PutTLSSetting(TLSRemoteInstance, TLSSettingChange{Enabled: &yes}); !errors.Is(err, ErrInvalidValue) {
		t.Errorf("TLS on without a credential context: %v", err)
	}
	if err := d.CreateTLSCredentialContext(handles["for the device key"]); err != nil {
		t.Fatal(err)
	}
	if err := d.CreateTLSCredentialContext(handles["for the device key"]); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("second context: %v", err)
	}
	if _, err := d.PutTLSSetting(TLSLocalInstance, TLSSettingChange{Enabled: &yes}); !errors.Is(err, ErrInvalidValue) {
		t.Errorf("local TLS before network TLS: %v", err)
	}
	if _, err := d.PutTLSSetting("Intel(r) AMT nothing", TLSSettingChange{Enabled: &yes}); !errors.Is(err, ErrNoInstance) {
		t.Errorf("unknown instance: %v", err)
	}
	no := false
	for _, id := range []string{TLSRemoteInstance, TLSLocalInstance} {
		if _, err := d.PutTLSSetting(id, TLSSettingChange{Enabled: &yes, AcceptNonSecureConnections: &no}); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	if d.Status().Features.TLS.Enabled || !d.PlainRemoteAllowed() {
		t.Error("TLS settings took effect before CommitChanges")
	}
	if rv := d.CommitChanges(); rv != PTSuccess {
		t.Fatalf("CommitChanges: %d", rv)
	}
	served, _ := base64.StdEncoding.DecodeString(good)
	if c := d.TLSCertificate(); string(c.Certificate[0]) != string(served) {
		t.Error("16993 does not serve the added certificate after the commit")
	}
	if st := d.Status().Features.TLS; !st.Enabled || !st.LocalEnabled || st.CertSubject != "CN=amt.example.com" || d.PlainRemoteAllowed() {
		t.Errorf("after commit: %+v, plain HTTP allowed %v", st, d.PlainRemoteAllowed())
	}
	if rv := d.Unprovision(1); rv != PTSuccess {
		t.Fatal(rv)
	}
	if d.Status().Features.TLS.Enabled || string(d.TLSCertificate().Certificate[0]) == string(served) {
		t.Error("unprovision kept the TLS configuration")
	}
}

// negativeSerial rewrites a certificate's serial so its DER INTEGER is
// negative, keeping every length (the signature no longer matches, which
// AddCertificate does not check).
func negativeSerial(t *testing.T, b64 string) string {
	t.Helper()
	der, _ := base64.StdEncoding.DecodeString(b64)
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	enc := c.SerialNumber.Bytes()
	if enc[0]&0x80 != 0 {
		enc = append([]byte{0}, enc...)
	}
	i := bytes.Index(der, append([]byte{0x02, byte(len(enc))}, enc...))
	if i < 0 {
		t.Fatal("serial not found in the DER")
	}
	out := slices.Clone(der)
	if out[i+2] == 0 {
		out[i+2] = 0xff
	} else {
		out[i+2] |= 0x80
	}
	return base64.StdEncoding.EncodeToString(out)
}
