package session

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/ips/hostbasedsetup"

	"github.com/branchbox/branchbox/provisioner/wsman"
)

// Steps of host-based activation (amt-protocol.md §3.3) beyond those it
// shares with Remote Configuration.
const (
	StepHostBasedSetup = "host-based-setup"
	StepCertChain      = "cert-chain"
	StepAdminSetup     = "admin-setup"
)

// HostTransport reaches a device's host-side (LMS, 16992) WS-Man endpoint:
// relayed by the agent on the device, or directly.
type HostTransport interface {
	// OsAdmin is a client the device accepts as the local $$OsAdmin
	// account, however the transport arranges that (the agent answers the
	// digest itself, so the password never leaves the host).
	OsAdmin() *wsman.Client
	// Admin is a client answering the device's digest challenge with cred.
	Admin(cred wsman.Credential) *wsman.Client
}

// HostBasedParams is everything one host-based activation needs.
type HostBasedParams struct {
	// Params: AdminPassword, MEBxPassword, TimeSync, Features, the tuning,
	// Step, Log and Now as for Remote Configuration. Addr and TLS are only
	// for checking the certificate the TLS feature installs, over the
	// network; OTP does not apply (the agent and the device are the same
	// host) and must be empty.
	Params
	Transport HostTransport
	// Chain is the provisioning chain, leaf first, root last, injected
	// into the firmware; Key is the leaf's key, which signs AdminSetup and
	// never leaves this process.
	Chain []*x509.Certificate
	Key   crypto.Signer
}

// ReturnError is a firmware method's non-zero ReturnValue.
type ReturnError struct {
	Method string
	Code   int
	// Name is the code's name in the method's value map, "" if unknown.
	Name string
	// Detail says what the call was about.
	Detail string
}

func (e *ReturnError) Error() string {
	s := fmt.Sprintf("%s returned %d", e.Method, e.Code)
	if e.Name != "" {
		s += " (" + e.Name + ")"
	}
	if e.Detail != "" {
		s += " " + e.Detail
	}
	return s
}

// Value maps of IPS_HostBasedSetupService (amt-protocol.md §3.3, from
// go-wsman-messages v2 pkg/wsman/ips/hostbasedsetup/decoder.go).
var (
	addNextCertCodes = map[int]string{1: "InvalidParam", 2: "InternalError", 3: "InvalidState", 4: "CertVerifyFailed", 5: "CertChainLengthExceeded"}
	adminSetupCodes  = map[int]string{1: "InternalError", 2: "InvalidState", 3: "InvalidParam", 5: "AuthFailed", 6: "FlashWriteLimitExceeded"}
)

// Control modes of IPS_HostBasedSetupService.
const (
	modeNone  = "0"
	modeAdmin = "2"
)

// mcNonceLen is the only McNonce length firmware accepts (RPS
// PasswordHelper.generateNonce, rpc-go GenerateNonce).
const mcNonceLen = 20

// HostBased activates a device in pre-provisioning into admin control
// mode from its host: read the realm and the setup service's nonce,
// inject the provisioning chain, send the AdminSetup signed with the
// leaf key; then, as admin with the new password, the steps Remote
// Configuration also takes: MEBx password, clock, verify, the profile's
// features. The error is a *StepError; a firmware refusal wraps a
// *ReturnError.
func HostBased(ctx context.Context, p HostBasedParams) (Result, error) {
	if err := p.check(); err != nil {
		return Result{}, &StepError{StepConnect, err}
	}
	p.defaults()
	r := &run{p: p.Params, msg: newMessages()}
	cred := wsman.Credential{User: "admin", Password: p.AdminPassword}
	r.admin = func() *wsman.Client { return p.Transport.Admin(cred) }

	r.c = p.Transport.OsAdmin()
	err := r.hostBasedSetup(ctx, p.Chain, p.Key)
	r.c.Close()
	if err != nil {
		return r.res, err
	}

	r.c = r.admin()
	err = r.afterSetup(ctx)
	r.c.Close()
	if err != nil {
		return r.res, err
	}
	r.res.Activated = true
	return r.res, r.applyFeatures(ctx)
}

func (p *HostBasedParams) check() error {
	switch {
	case p.AdminPassword == "":
		return errors.New("profile has no admin password")
	case p.OTP != "":
		return errors.New("a one-time password has no place in host-based activation")
	case p.Transport == nil:
		return errors.New("no transport to the device")
	case len(p.Chain) == 0:
		return errors.New("no provisioning certificate chain")
	case p.Key == nil:
		return errors.New("no provisioning certificate key")
	case p.Features != nil && p.Features.TLS != nil && (p.Addr == "" || p.TLS == nil):
		return errors.New("the profile wants TLS, whose certificate is checked over the network, and the device's address is unknown")
	}
	if _, ok := p.Key.Public().(*rsa.PublicKey); !ok {
		return fmt.Errorf("provisioning key is %T; firmware verifies AdminSetup with an RSA leaf key only", p.Key.Public())
	}
	return nil
}

// hostBasedSetup runs as $$OsAdmin, up to and including AdminSetup.
func (r *run) hostBasedSetup(ctx context.Context, chain []*x509.Certificate, key crypto.Signer) error {
	if err := r.readRealm(ctx); err != nil {
		return err
	}
	r.p.Step(StepConnect, "host interface up, realm "+r.res.Realm)

	r.res.AMTVersion = r.version(ctx)
	r.p.Step(StepVersion, "AMT "+r.res.AMTVersion)

	hbs, err := r.call(ctx, StepHostBasedSetup, func() string { return r.msg.ips.HostBasedSetupService.Get() })
	if err != nil {
		return err
	}
	var allowed []string
	for _, n := range hbs.FindAll("AllowedControlModes") {
		allowed = append(allowed, strings.TrimSpace(n.Text))
	}
	mode := hbs.Value("CurrentControlMode")
	detail := fmt.Sprintf("control mode %s, allowed %v, chain status %s", mode, allowed, hbs.Value("CertChainStatus"))
	switch {
	case mode != modeNone:
		return &StepError{StepHostBasedSetup, fmt.Errorf("device is already activated (%s)", detail)}
	case !slices.Contains(allowed, modeAdmin):
		return &StepError{StepHostBasedSetup, fmt.Errorf("device does not allow admin control mode (%s)", detail)}
	}
	r.p.Step(StepHostBasedSetup, detail)

	if err := r.injectChain(ctx, chain); err != nil {
		return err
	}
	r.p.Step(StepCertChain, fmt.Sprintf("%d certificates injected, leaf %q first, root %q last",
		len(chain), chain[0].Subject.CommonName, chain[len(chain)-1].Subject.CommonName))
	return r.adminSetup(ctx, hbs.Value("ConfigurationNonce"), key)
}

// injectChain sends the chain one certificate per call, leaf first. A
// certificate whose answer was lost cannot simply be sent again (the
// firmware may have appended it already), so a transport failure starts
// over from the leaf, which resets the firmware's chain.
func (r *run) injectChain(ctx context.Context, chain []*x509.Certificate) error {
	backoff := r.p.Backoff
	for attempt := 0; ; attempt++ {
		err := r.addCerts(ctx, chain)
		if err == nil {
			return nil
		}
		if !wsman.IsTransient(err) || attempt >= r.p.Retries {
			var se *StepError
			if errors.As(err, &se) {
				return err
			}
			return &StepError{StepCertChain, err}
		}
		r.p.Log.Debug("retrying certificate chain from the leaf", "attempt", attempt+1, "err", err)
		r.c.Close()
		if err := sleep(ctx, backoff); err != nil {
			return &StepError{StepCertChain, err}
		}
		backoff *= 2
	}
}

func (r *run) addCerts(ctx context.Context, chain []*x509.Certificate) error {
	for i, c := range chain {
		leaf, root := i == 0, i == len(chain)-1
		out, err := r.post(ctx, r.msg.ips.HostBasedSetupService.AddNextCertInChain(base64.StdEncoding.EncodeToString(c.Raw), leaf, root))
		if err != nil {
			return err
		}
		if rv := returnValue(out); rv != 0 {
			return &StepError{StepCertChain, &ReturnError{
				Method: "AddNextCertInChain", Code: rv, Name: addNextCertCodes[rv],
				Detail: fmt.Sprintf("for certificate %d of %d, %q", i+1, len(chain), c.Subject.CommonName),
			}}
		}
	}
	return nil
}

// adminSetup is sent once: a retry would carry a signature over a nonce
// the firmware has already renewed. A lost answer is settled by reading
// the control mode back, as RPS and rpc-go do.
func (r *run) adminSetup(ctx context.Context, nonceB64 string, key crypto.Signer) error {
	nonce, err := base64.StdEncoding.DecodeString(nonceB64)
	if err != nil || len(nonce) == 0 {
		return &StepError{StepAdminSetup, fmt.Errorf("IPS_HostBasedSetupService ConfigurationNonce %q is not base64", nonceB64)}
	}
	mc := make([]byte, mcNonceLen)
	if _, err := rand.Read(mc); err != nil {
		return &StepError{StepAdminSetup, err}
	}
	// RSASSA-PKCS1-v1_5 with SHA-256 over ConfigurationNonce ‖ McNonce,
	// firmware nonce first (Intel, "AdminSetup"; rpc-go createSignedString).
	sum := sha256.Sum256(append(nonce, mc...))
	sig, err := key.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		return &StepError{StepAdminSetup, fmt.Errorf("signing with the provisioning key: %w", err)}
	}
	msg := r.msg.ips.HostBasedSetupService.AdminSetup(hostbasedsetup.AdminPassEncryptionTypeHTTPDigestMD5A1, r.res.Realm, r.p.AdminPassword,
		base64.StdEncoding.EncodeToString(mc), hostbasedsetup.SigningAlgorithmRSASHA2256, base64.StdEncoding.EncodeToString(sig))
	out, err := r.post(ctx, msg)
	switch {
	case err != nil && answerLost(err):
		r.p.Step(StepAdminSetup, "answer lost ("+err.Error()+"), reading the control mode back")
		hbs, rerr := r.call(ctx, StepAdminSetup, func() string { return r.msg.ips.HostBasedSetupService.Get() })
		if rerr != nil {
			return rerr
		}
		if mode := hbs.Value("CurrentControlMode"); mode != modeAdmin {
			return &StepError{StepAdminSetup, fmt.Errorf("answer lost (%v) and the device reports control mode %s", err, mode)}
		}
		r.res.Recovered, r.res.AdminMode = true, true
		r.p.Step(StepAdminSetup, "device reports admin control mode")
		return nil
	case err != nil:
		return &StepError{StepAdminSetup, err}
	}
	if rv := returnValue(out); rv != 0 {
		return &StepError{StepAdminSetup, &ReturnError{Method: "AdminSetup", Code: rv, Name: adminSetupCodes[rv]}}
	}
	r.res.AdminMode = true
	r.p.Step(StepAdminSetup, "admin control mode set (AdminSetup signed with the leaf key, SHA-256)")
	return nil
}

// answerLost: the request may have been carried out, but no answer came —
// the connection broke, or the relay in between gave up on the device.
func answerLost(err error) bool {
	var fe *wsman.FaultError
	if errors.As(err, &fe) && (fe.Status == 502 || fe.Status == 503 || fe.Status == 504) {
		return true
	}
	return wsman.IsTransient(err)
}

// afterSetup runs as admin with the new password: the steps Remote
// Configuration takes before and after its commit.
func (r *run) afterSetup(ctx context.Context) error {
	if err := r.setMEBx(ctx); err != nil {
		return err
	}
	r.p.Step(StepMEBx, "MEBx password set")
	if r.p.TimeSync {
		detail, err := r.syncTime(ctx)
		if err != nil {
			return err
		}
		r.p.Step(StepTimeSync, detail)
	}
	return r.verify(ctx, 0)
}

// post sends one message without retrying.
func (r *run) post(ctx context.Context, envelope string) (*wsman.Node, error) {
	rctx, cancel := context.WithTimeout(ctx, r.p.RequestTimeout)
	defer cancel()
	return r.c.Post(rctx, envelope)
}
