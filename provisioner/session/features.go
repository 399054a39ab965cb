package session

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/amt/publickey"

	"github.com/branchbox/branchbox/provisioner/wsman"
)

// Steps of the profile configuration that follows activation.
const (
	StepRedirection    = "redirection"
	StepKVM            = "kvm"
	StepListener       = "redirection-listener"
	StepUserConsent    = "user-consent"
	StepTLSKey         = "tls-key"
	StepTLSCertificate = "tls-certificate"
	StepTLSContext     = "tls-context"
	StepTLSSettings    = "tls-settings"
	StepTLSCommit      = "tls-commit"
	StepTLSVerify      = "tls-verify"
)

// Features is what a profile turns on or off once the device is
// activated.
type Features struct {
	SOL, IDER, KVM bool
	// UserConsent is none, kvm or all (IPS_OptInService.OptInRequired).
	UserConsent string
	// TLS, when set, makes the device serve TLS with a certificate for its
	// FQDN; nil leaves TLS as the device has it.
	TLS *TLSCertificate
}

// TLSCertificate is how the device's operational certificate is issued.
type TLSCertificate struct {
	FQDN string
	// Issue signs a certificate for FQDN over the device's public key and
	// returns its DER.
	Issue func(pub *rsa.PublicKey) ([]byte, error)
	// Roots verify the certificate the device serves afterwards.
	Roots *x509.CertPool
}

// OptInRequired values by profile name.
var optInRequired = map[string]uint32{"none": 0, "kvm": 1, "all": 0xFFFFFFFF}

// Class URIs the configuration writes with hand-built envelopes:
// go-wsman-messages v1.8.1 serialises these Puts without the class
// element and namespace, sends AMT_RedirectionService.RequestStateChange
// to a DMTF action URI, and has no Put for IPS_OptInService.
const (
	uriRedirection = amtSchema + "AMT_RedirectionService"
	uriOptIn       = ipsSchema + "IPS_OptInService"
	uriTLSSettings = amtSchema + "AMT_TLSSettingData"
)

// TLS setting instances: the network interface and the host (LMS) side.
const (
	tlsRemote = "Intel(r) AMT 802.3 TLS Settings"
	tlsLocal  = "Intel(r) AMT LMS TLS Settings"
)

// AddCertificate answers: PT_STATUS_DUPLICATE for a retry whose first
// answer was lost, PT_STATUS_INVALID_CERT for a certificate the device
// cannot use — most often one not yet valid by a device clock that lags.
const (
	returnDuplicate   = 2058
	returnInvalidCert = 2063
)

// putIdentity are the properties a Put of a service repeats from its Get:
// the keys, which must not change, and the name.
var putIdentity = []string{"CreationClassName", "ElementName", "Name", "SystemCreationClassName", "SystemName"}

// applyFeatures configures an activated device with the admin password.
func (r *run) applyFeatures(ctx context.Context) error {
	f := r.p.Features
	if f == nil {
		return nil
	}
	consent, ok := optInRequired[f.UserConsent]
	if !ok {
		return &StepError{StepUserConsent, fmt.Errorf("user consent %q is not none, kvm or all", f.UserConsent)}
	}
	r.c = r.admin()
	defer r.c.Close()

	state := 32768
	if f.IDER {
		state |= 1
	}
	if f.SOL {
		state |= 2
	}
	if err := r.invokeOK(ctx, StepRedirection, func() string {
		return r.msg.invoke(uriRedirection, "RequestStateChange", fmt.Sprintf("<h:RequestedState>%d</h:RequestedState>", state))
	}); err != nil {
		return err
	}
	r.p.Step(StepRedirection, fmt.Sprintf("SOL %s, IDER %s (RequestStateChange %d)", onOff(f.SOL), onOff(f.IDER), state))

	kvm := 3
	if f.KVM {
		kvm = 2
	}
	if err := r.invokeOK(ctx, StepKVM, func() string { return r.msg.cim.KVMRedirectionSAP.RequestStateChange(kvm) }); err != nil {
		return err
	}
	r.p.Step(StepKVM, fmt.Sprintf("KVM %s (RequestStateChange %d)", onOff(f.KVM), kvm))

	listener := f.SOL || f.IDER || f.KVM
	if err := r.putService(ctx, StepListener, "AMT_RedirectionService", func() string { return r.msg.amt.RedirectionService.Get() },
		uriRedirection, [2]string{"ListenerEnabled", strconv.FormatBool(listener)}); err != nil {
		return err
	}
	r.p.Step(StepListener, "redirection listener "+onOff(listener))

	if err := r.putService(ctx, StepUserConsent, "IPS_OptInService", func() string { return r.msg.ips.OptInService.Get() },
		uriOptIn, [2]string{"OptInRequired", strconv.FormatUint(uint64(consent), 10)}); err != nil {
		return err
	}
	r.p.Step(StepUserConsent, fmt.Sprintf("user consent %s (OptInRequired %d)", f.UserConsent, consent))

	if f.TLS != nil {
		return r.configureTLS(ctx, f.TLS)
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// invokeOK calls a method and wants ReturnValue 0.
func (r *run) invokeOK(ctx context.Context, step string, build func() string) error {
	out, err := r.call(ctx, step, build)
	if err != nil {
		return err
	}
	if rv := returnValue(out); rv != 0 {
		return &StepError{step, fmt.Errorf("returned %d", rv)}
	}
	return nil
}

// putService reads a single-instance service and writes it back with one
// property changed: a Put carries the whole representation, keys included.
func (r *run) putService(ctx context.Context, step, class string, get func() string, uri string, change [2]string) error {
	doc, err := r.call(ctx, step, get)
	if err != nil {
		return err
	}
	in := doc.Find(class)
	if in == nil {
		return &StepError{step, fmt.Errorf("Get %s returned no instance", class)}
	}
	props := make([][2]string, 0, len(putIdentity)+1)
	for _, k := range putIdentity {
		if v := in.Value(k); v != "" {
			props = append(props, [2]string{k, v})
		}
	}
	props = append(props, change)
	out, err := r.call(ctx, step, func() string { return r.msg.put(uri, "", props) })
	if err != nil {
		return err
	}
	if got := out.Find(class).Value(change[0]); got != change[1] {
		return &StepError{step, fmt.Errorf("device reports %s %q after the Put, want %q", change[0], got, change[1])}
	}
	return nil
}

// configureTLS is §3.2 step 9 on an activated device: a key pair made on
// the device, a certificate for it from the management CA, the TLS
// credential context, TLS on the network and local interfaces, commit.
func (r *run) configureTLS(ctx context.Context, t *TLSCertificate) error {
	out, err := r.call(ctx, StepTLSKey, func() string {
		return r.msg.amt.PublicKeyManagementService.GenerateKeyPair(publickey.GenerateKeyPair_INPUT{KeyAlgorithm: publickey.RSA, KeyLength: publickey.KeyLength2048})
	})
	if err != nil {
		return err
	}
	if rv := returnValue(out); rv != 0 {
		return &StepError{StepTLSKey, fmt.Errorf("GenerateKeyPair returned %d", rv)}
	}
	keyHandle := out.Find("KeyPair").Value("Selector")
	pub, err := r.publicKey(ctx, keyHandle)
	if err != nil {
		return err
	}
	r.p.Step(StepTLSKey, "RSA 2048 key pair generated on the device ("+keyHandle+")")

	der, err := t.Issue(pub)
	if err != nil {
		return &StepError{StepTLSCertificate, fmt.Errorf("issuing: %w", err)}
	}
	certHandle, err := r.addCertificate(ctx, der)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(der)
	r.p.Step(StepTLSCertificate, fmt.Sprintf("certificate for %s from the management CA added (%s, sha256 %x)", t.FQDN, certHandle, sum))

	_, err = r.call(ctx, StepTLSContext, func() string { return r.msg.amt.TLSCredentialContext.Create(certHandle) })
	var fe *wsman.FaultError
	switch {
	case errors.As(err, &fe) && strings.Contains(fe.Subcode, "AlreadyExists"):
		// A retry of a Create whose answer was lost: fine if it is ours.
		if ours, cerr := r.contextIs(ctx, certHandle); cerr != nil || !ours {
			return &StepError{StepTLSContext, fmt.Errorf("the device already has a TLS credential context for another certificate")}
		}
	case err != nil:
		return err
	}
	r.p.Step(StepTLSContext, "TLS credential context created")

	if err := r.putTLSSettings(ctx); err != nil {
		return err
	}
	r.p.Step(StepTLSSettings, "TLS on for the network interface (no mutual authentication, no plain HTTP) and the local interface")

	rctx, cancel := context.WithTimeout(ctx, r.p.RequestTimeout)
	out, err = r.c.Post(rctx, r.msg.amt.SetupAndConfigurationService.CommitChanges())
	cancel()
	r.c.Close()
	switch {
	case err != nil && wsman.IsTransient(err):
		r.p.Step(StepTLSCommit, "answer lost ("+err.Error()+"), checking the served certificate")
	case err != nil:
		return &StepError{StepTLSCommit, err}
	case returnValue(out) != 0:
		return &StepError{StepTLSCommit, fmt.Errorf("CommitChanges returned %d", returnValue(out))}
	default:
		r.p.Step(StepTLSCommit, "committed")
	}
	return r.verifyTLS(ctx, t, der)
}

// publicKey reads the DER public key of a key pair the device generated.
func (r *run) publicKey(ctx context.Context, handle string) (*rsa.PublicKey, error) {
	items, err := r.enumerate(ctx, StepTLSKey, "AMT_PublicPrivateKeyPair",
		func() string { return r.msg.amt.PublicPrivateKeyPair.Enumerate() },
		func(ec string) string { return r.msg.amt.PublicPrivateKeyPair.Pull(ec) })
	if err != nil {
		return nil, err
	}
	for _, it := range items {
		if it.Value("InstanceID") != handle {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(it.Value("DERKey"))
		if err != nil {
			return nil, &StepError{StepTLSKey, fmt.Errorf("DERKey of %s is not base64", handle)}
		}
		pub, err := x509.ParsePKCS1PublicKey(raw)
		if err != nil {
			return nil, &StepError{StepTLSKey, fmt.Errorf("DERKey of %s: %w", handle, err)}
		}
		return pub, nil
	}
	return nil, &StepError{StepTLSKey, fmt.Errorf("the device lists no key pair %q", handle)}
}

// addCertificate stores the certificate and returns its handle; a
// duplicate (our own earlier attempt whose answer was lost) is looked up.
func (r *run) addCertificate(ctx context.Context, der []byte) (string, error) {
	blob := base64.StdEncoding.EncodeToString(der)
	attempts := 0
	out, err := r.call(ctx, StepTLSCertificate, func() string {
		attempts++
		return r.msg.amt.PublicKeyManagementService.AddCertificate(blob)
	})
	if err != nil {
		return "", err
	}
	switch rv := returnValue(out); {
	case rv == 0:
		return out.Find("CreatedCertificate").Value("Selector"), nil
	case rv == returnDuplicate && attempts > 1:
		items, err := r.enumerate(ctx, StepTLSCertificate, "AMT_PublicKeyCertificate",
			func() string { return r.msg.amt.PublicKeyCertificate.Enumerate() },
			func(ec string) string { return r.msg.amt.PublicKeyCertificate.Pull(ec) })
		if err != nil {
			return "", err
		}
		for _, it := range items {
			if it.Value("X509Certificate") == blob {
				return it.Value("InstanceID"), nil
			}
		}
		return "", &StepError{StepTLSCertificate, errors.New("AddCertificate reported a duplicate the device does not list")}
	case rv == returnInvalidCert:
		return "", &StepError{StepTLSCertificate, fmt.Errorf("AddCertificate returned %d: the device finds the certificate invalid; check its clock (profile time_sync)", rv)}
	default:
		return "", &StepError{StepTLSCertificate, fmt.Errorf("AddCertificate returned %d", rv)}
	}
}

// contextIs reports whether the device's TLS credential context names the
// certificate.
func (r *run) contextIs(ctx context.Context, certHandle string) (bool, error) {
	items, err := r.enumerate(ctx, StepTLSContext, "AMT_TLSCredentialContext",
		func() string { return r.msg.amt.TLSCredentialContext.Enumerate() },
		func(ec string) string { return r.msg.amt.TLSCredentialContext.Pull(ec) })
	if err != nil {
		return false, err
	}
	for _, it := range items {
		if it.Find("ElementInContext").Value("Selector") == certHandle {
			return true, nil
		}
	}
	return false, nil
}

// putTLSSettings turns TLS on: the network interface first (the local one
// may only use TLS when the network one does), keeping what the device
// says it supports.
func (r *run) putTLSSettings(ctx context.Context) error {
	items, err := r.enumerate(ctx, StepTLSSettings, "AMT_TLSSettingData",
		func() string { return r.msg.amt.TLSSettingData.Enumerate() },
		func(ec string) string { return r.msg.amt.TLSSettingData.Pull(ec) })
	if err != nil {
		return err
	}
	byID := map[string]*wsman.Node{}
	for _, it := range items {
		byID[it.Value("InstanceID")] = it
	}
	for _, id := range []string{tlsRemote, tlsLocal} {
		cur, ok := byID[id]
		if !ok {
			return &StepError{StepTLSSettings, fmt.Errorf("the device lists no AMT_TLSSettingData %q", id)}
		}
		props := [][2]string{{"ElementName", cur.Value("ElementName")}, {"InstanceID", id}, {"MutualAuthentication", "false"}, {"Enabled", "true"}}
		if cur.Value("NonSecureConnectionsSupported") != "false" {
			// Plain HTTP stays off on the network and as it was locally.
			accept := "false"
			if id == tlsLocal {
				accept = cur.Value("AcceptNonSecureConnections")
			}
			props = append(props, [2]string{"AcceptNonSecureConnections", accept})
		}
		out, err := r.call(ctx, StepTLSSettings, func() string { return r.msg.put(uriTLSSettings, id, props) })
		if err != nil {
			return err
		}
		if got := out.Find("AMT_TLSSettingData").Value("Enabled"); got != "true" {
			return &StepError{StepTLSSettings, fmt.Errorf("%s: Enabled is %q after the Put", id, got)}
		}
	}
	return nil
}

// enumerate reads every instance of a class (Enumerate, then Pull until
// EndOfSequence).
func (r *run) enumerate(ctx context.Context, step, class string, enum func() string, pull func(string) string) ([]*wsman.Node, error) {
	out, err := r.call(ctx, step, enum)
	if err != nil {
		return nil, err
	}
	var items []*wsman.Node
	ec := out.Value("EnumerationContext")
	for range 100 {
		doc, err := r.call(ctx, step, func() string { return pull(ec) })
		if err != nil {
			return nil, err
		}
		items = append(items, doc.FindAll(class)...)
		if doc.Find("EndOfSequence") != nil {
			return items, nil
		}
		ec = doc.Value("EnumerationContext")
	}
	return nil, &StepError{step, fmt.Errorf("enumeration of %s does not end", class)}
}

// verifyTLS reconnects until the device serves the issued certificate and
// it verifies for the FQDN against the management CA. The device restarts
// its network stack to apply TLS, so the old certificate or no answer at
// all is retried until VerifyFor runs out.
func (r *run) verifyTLS(ctx context.Context, t *TLSCertificate, der []byte) error {
	deadline := time.Now().Add(r.p.VerifyFor)
	backoff := r.p.Backoff
	for {
		leaf, err := r.servedCertificate(ctx)
		switch {
		case err == nil && bytes.Equal(leaf.Raw, der):
			if _, verr := leaf.Verify(x509.VerifyOptions{DNSName: t.FQDN, Roots: t.Roots}); verr != nil {
				return &StepError{StepTLSVerify, fmt.Errorf("served certificate does not verify: %w", verr)}
			}
			r.p.Step(StepTLSVerify, "device serves the certificate for "+t.FQDN+", verified against the management CA")
			return nil
		case err == nil:
			err = fmt.Errorf("device still serves %q", leaf.Subject.CommonName)
		case !wsman.IsTransient(err):
			return &StepError{StepTLSVerify, err}
		}
		if time.Now().Add(backoff).After(deadline) {
			return &StepError{StepTLSVerify, err}
		}
		if serr := sleep(ctx, backoff); serr != nil {
			return &StepError{StepTLSVerify, serr}
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// servedCertificate makes one authenticated request over a fresh TLS
// session and returns the certificate the device presented.
func (r *run) servedCertificate(ctx context.Context) (*x509.Certificate, error) {
	var mu sync.Mutex
	var leaf *x509.Certificate
	cfg := r.p.TLS.Clone()
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) > 0 {
			mu.Lock()
			leaf = cs.PeerCertificates[0]
			mu.Unlock()
		}
		return nil
	}
	c := wsman.New(wsman.Options{
		URL: "https://" + r.p.Addr + "/wsman", TLS: cfg, Timeout: r.p.RequestTimeout,
		Credentials: []wsman.Credential{{User: "admin", Password: r.p.AdminPassword}},
	})
	defer c.Close()
	rctx, cancel := context.WithTimeout(ctx, r.p.RequestTimeout)
	defer cancel()
	if _, err := c.Post(rctx, r.msg.amt.SetupAndConfigurationService.Get()); err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	if leaf == nil {
		return nil, errors.New("no certificate presented")
	}
	return leaf, nil
}
