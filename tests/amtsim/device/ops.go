package device

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
	"unicode"

	"github.com/branchbox/branchbox/tests/amtsim/firmware"
)

type certEntry struct {
	cert   *x509.Certificate
	isRoot bool
}

// GeneralSettings is what AMT_GeneralSettings exposes.
type GeneralSettings struct {
	DigestRealm string
	DomainName  string
}

// GetGeneralSettings returns the realm (possibly wrong, by fault) and suffix.
func (d *Device) GetGeneralSettings() GeneralSettings {
	realm := d.ReportedRealm()
	return GeneralSettings{DigestRealm: realm, DomainName: d.TrustedSuffix()}
}

// SetupService is what AMT_SetupAndConfigurationService exposes.
type SetupService struct {
	ProvisioningState ProvisioningState
	ProvisioningMode  int
	OTPBase64         string // empty when no OTP is set
	ZeroTouchEnabled  bool
}

// GetSetupService reads AMT_SetupAndConfigurationService.
func (d *Device) GetSetupService() SetupService {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := SetupService{ProvisioningState: d.state, ProvisioningMode: 1, ZeroTouchEnabled: true}
	if d.otp != "" {
		s.OTPBase64 = base64.StdEncoding.EncodeToString([]byte(d.otp))
	}
	return s
}

// HostBasedSetup is what IPS_HostBasedSetupService exposes.
type HostBasedSetup struct {
	CurrentControlMode  ControlMode
	AllowedControlModes []ControlMode
	ConfigurationNonce  string // base64 of 20 bytes
	CertChainStatus     int
}

// GetHostBasedSetup reads IPS_HostBasedSetupService.
func (d *Device) GetHostBasedSetup() HostBasedSetup {
	d.mu.Lock()
	defer d.mu.Unlock()
	return HostBasedSetup{
		CurrentControlMode:  d.mode,
		AllowedControlModes: append([]ControlMode(nil), d.cfg.AllowedModes...),
		ConfigurationNonce:  base64.StdEncoding.EncodeToString(d.nonce[:]),
		CertChainStatus:     d.chainStatus,
	}
}

// ExtendProvisioningPeriod resets the window to hours from now; 0 closes it.
func (d *Device) ExtendProvisioningPeriod(hours int) int {
	const op = "ExtendProvisioningPeriod"
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state != InProvisioning {
		return d.failure(op, PTNotPermitted, "device is "+d.state.String())
	}
	if hours < 0 || hours > 24 {
		return d.failure(op, PTInvalidParameter, fmt.Sprintf("duration %d h outside 0..24", hours))
	}
	d.windowEnd = d.now().Add(time.Duration(hours) * time.Hour)
	d.log.Info("provisioning window set", "hours", hours)
	return PTSuccess
}

// validPassword is AMT's strong-password rule: 8-32 characters with a digit,
// a lower-case and an upper-case letter and a non-alphanumeric character.
func validPassword(pw string) bool {
	if len(pw) < 8 || len(pw) > 32 {
		return false
	}
	var digit, lower, upper, other bool
	for _, r := range pw {
		switch {
		case unicode.IsDigit(r):
			digit = true
		case unicode.IsLower(r):
			lower = true
		case unicode.IsUpper(r):
			upper = true
		case r == ':' || r == ',' || r == '"' || r > unicode.MaxASCII:
			return false
		default:
			other = true
		}
	}
	return digit && lower && upper && other
}

// SetMEBxPassword changes the MEBx password: during setup (staged until
// commit), or while still the factory default; never in CCM.
func (d *Device) SetMEBxPassword(pw string) int {
	const op = "SetMEBxPassword"
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mode == ModeClient {
		return d.failure(op, PTNotPermitted, "not permitted in client control mode")
	}
	if !validPassword(pw) {
		return d.failure(op, PTInvalidPassword, "password does not meet the strong-password rule")
	}
	switch {
	case d.state == InProvisioning:
		d.staged.mebx = pw
	case !d.mebxChanged:
		d.mebx, d.mebxChanged = pw, true
	default:
		return d.failure(op, PTNotPermitted, "MEBx password already changed outside setup")
	}
	d.log.Info("MEBx password set", "staged", d.state == InProvisioning)
	return PTSuccess
}

// SetAdminAclEntryEx sets the admin user and its digest secret, given as
// base64 of the 16 raw MD5 bytes of "user:realm:password" (§3.5).
func (d *Device) SetAdminAclEntryEx(user, digestPassword string) int {
	const op = "SetAdminAclEntryEx"
	d.mu.Lock()
	defer d.mu.Unlock()
	if user == "" || len(user) > 16 {
		return d.failure(op, PTInvalidParameter, fmt.Sprintf("user name of %d characters", len(user)))
	}
	if user != AdminUser {
		// Renaming the admin account is legal in AMT but nothing in the
		// provisioning flows does it; refuse rather than half-support it.
		return d.failure(op, PTInvalidParameter, fmt.Sprintf("user %q: the simulator keeps the admin account name %q", user, AdminUser))
	}
	ha1, err := digestHA1(digestPassword)
	if err != nil {
		return d.failure(op, PTInvalidParameter, err.Error())
	}
	switch d.state {
	case InProvisioning:
		d.staged.adminHA1 = ha1
	case PostProvisioning:
		d.adminHA1 = ha1
	default:
		return d.failure(op, PTNotPermitted, "device is "+d.state.String())
	}
	d.log.Info("admin ACL entry set", "staged", d.state == InProvisioning)
	return PTSuccess
}

// GetLowAccuracyTimeSynch returns the device clock (Ta0, seconds).
func (d *Device) GetLowAccuracyTimeSynch() (int64, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lastTa0 = d.clock().Unix()
	return d.lastTa0, PTSuccess
}

// SetHighAccuracyTimeSynch sets the clock; Ta0 must echo the last Get.
func (d *Device) SetHighAccuracyTimeSynch(ta0, tm1, tm2 int64) int {
	const op = "SetHighAccuracyTimeSynch"
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lastTa0 == 0 || ta0 != d.lastTa0 {
		return d.failure(op, PTInvalidParameter, "Ta0 does not match the last GetLowAccuracyTimeSynch")
	}
	if tm2 < tm1 {
		return d.failure(op, PTInvalidParameter, "Tm2 before Tm1")
	}
	d.clockOffset = time.Unix(tm2, 0).Sub(d.now())
	d.log.Info("clock set", "offset", d.clockOffset.Round(time.Second).String())
	return PTSuccess
}

// ClockOffset is the device clock minus the host clock.
func (d *Device) ClockOffset() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.clockOffset
}

// CommitChanges ends remote configuration: the device becomes
// post-provisioning in admin control mode.
func (d *Device) CommitChanges() int {
	const op = "CommitChanges"
	d.mu.Lock()
	if d.state == PostProvisioning {
		// After activation a commit applies pending network settings.
		if !d.commitTLSLocked() {
			d.mu.Unlock()
			return PTSuccess
		}
		publish := d.changed("tls-commit")
		d.mu.Unlock()
		publish()
		return PTSuccess
	}
	if d.state != InProvisioning {
		code := d.failure(op, PTInternalError, "device is "+d.state.String())
		d.mu.Unlock()
		return code
	}
	mebx := d.mebx
	if d.staged.mebx != "" {
		mebx = d.staged.mebx
	}
	if mebx == DefaultMEBxPassword {
		code := d.failure(op, PTDataMissing, "MEBx password is still the factory default")
		d.mu.Unlock()
		return code
	}
	d.mebx, d.mebxChanged = mebx, true
	d.adminHA1 = d.staged.adminHA1
	if d.adminHA1 == nil {
		// Without an explicit admin ACL entry the admin password is the MEBx one.
		d.adminHA1 = HA1(AdminUser, d.realm, mebx)
	}
	d.staged = staged{}
	// TLS configured over the remote-configuration session (MeshCentral
	// does it before this commit) takes effect with the activation.
	d.commitTLSLocked()
	d.state, d.mode = PostProvisioning, ModeAdmin
	d.lastError = ""
	publish := d.changed("commit")
	d.mu.Unlock()
	publish()
	return PTSuccess
}

// Unprovision returns a provisioned device to factory state (mode 1 full,
// 2 partial), reopening the hello window when the device does remote setup.
func (d *Device) Unprovision(mode int) int {
	const op = "Unprovision"
	d.mu.Lock()
	if mode != 1 && mode != 2 {
		code := d.failure(op, PTInvalidParameter, fmt.Sprintf("provisioning mode %d", mode))
		d.mu.Unlock()
		return code
	}
	if d.state != PostProvisioning {
		code := d.failure(op, PTNotPermitted, "device is "+d.state.String())
		d.mu.Unlock()
		return code
	}
	publish := d.unprovisionLocked(mode)
	d.mu.Unlock()
	publish()
	return PTSuccess
}

// unprovisionLocked erases the configuration (mode 1 full, 2 partial); the
// returned function publishes the change once d.mu is released.
func (d *Device) unprovisionLocked(mode int) func() {
	if mode == 1 {
		d.adminHA1 = nil
		d.table.RemoveCustom()
		if !d.cfg.Profile.KeepsSuffixOnUnprovision {
			d.pkiSuffix = ""
		}
	}
	d.mode = ModeNone
	d.chain, d.chainStatus = nil, ChainNotStarted
	// Certificates, keys and TLS and redirection settings are erased.
	d.feat, d.tls = factoryFeatures(), newTLSStore()
	if c, err := selfSignedCert(d.cfg.UUID); err == nil {
		d.tlsCert = c
	}
	d.state = PreProvisioning
	if d.cfg.SetupMode {
		d.state = InProvisioning
		d.windowEnd = d.now().Add(d.cfg.LaterWindow)
	}
	return d.changed(fmt.Sprintf("unprovision(%d)", mode))
}

// chainOpen reports whether certificates may be injected: before activation,
// or in CCM on the way to ACM.
func (d *Device) chainOpenLocked() bool {
	return d.state == PreProvisioning || (d.state == PostProvisioning && d.mode == ModeClient)
}

// AddNextCertInChain injects one certificate, leaf first, root last.
func (d *Device) AddNextCertInChain(certB64 string, isLeaf, isRoot bool) int {
	const op = "AddNextCertInChain"
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.chainOpenLocked() {
		return d.failure(op, CertInvalidState, "device is "+d.state.String()+"/"+d.mode.String())
	}
	der, err := base64.StdEncoding.DecodeString(certB64)
	if err != nil {
		return d.failure(op, CertInvalidParam, "NextCertificate is not base64 DER")
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return d.failure(op, CertInvalidParam, "NextCertificate does not parse: "+err.Error())
	}
	if isLeaf {
		d.chain, d.chainStatus = nil, ChainNotStarted
	} else if len(d.chain) == 0 || d.chainStatus == ChainComplete {
		return d.failure(op, CertInvalidParam, "first certificate must be flagged IsLeafCertificate")
	}
	if len(d.chain)+1 > d.cfg.Profile.MaxChainLength {
		d.chain, d.chainStatus = nil, ChainNotStarted
		return d.failure(op, CertChainLengthExceeded, fmt.Sprintf("more than %d certificates", d.cfg.Profile.MaxChainLength))
	}
	if n := len(d.chain); n > 0 {
		prev := d.chain[n-1].cert
		if !bytes.Equal(prev.RawIssuer, cert.RawSubject) || firmware.VerifySignature(prev, cert) != nil {
			d.chain, d.chainStatus = nil, ChainNotStarted
			return d.failure(op, CertVerifyFailed, fmt.Sprintf("%q is not the issuer of %q", cert.Subject.CommonName, prev.Subject.CommonName))
		}
	}
	d.chain = append(d.chain, certEntry{cert: cert, isRoot: isRoot})
	d.chainStatus = ChainInProgress
	if !isRoot {
		return CertSuccess
	}
	certs := make([]*x509.Certificate, len(d.chain))
	for i, e := range d.chain {
		certs[i] = e.cert
	}
	if err := firmware.CheckChainStructure(d.cfg.Profile, d.table, d.clock(), certs); err != nil {
		d.chain, d.chainStatus = nil, ChainNotStarted
		rule, _ := firmware.FailedRule(err)
		d.log.Warn("injected chain refused", "rule", string(rule))
		d.auditLocked("cert-chain-refused", rule, err.Error())
		return d.failure(op, CertVerifyFailed, err.Error())
	}
	d.chainStatus = ChainComplete
	d.log.Info("certificate chain injected", "certs", len(certs), "leaf", certs[0].Subject.CommonName)
	return CertSuccess
}

// checkSignedRequestLocked verifies McNonce and the RSA-SHA256 signature
// over ConfigurationNonce‖McNonce with the injected leaf key, and the leaf
// domain. It always renews the firmware nonce: one nonce per attempt.
func (d *Device) checkSignedRequestLocked(op, mcNonceB64 string, sigAlg int, sigB64 string) (int, bool) {
	fwNonce := d.nonce
	_, _ = rand.Read(d.nonce[:])
	mc, err := base64.StdEncoding.DecodeString(mcNonceB64)
	if err != nil || len(mc) != 20 {
		return d.failure(op, HBSInvalidParam, "McNonce is not base64 of 20 bytes"), false
	}
	if sigAlg != 2 {
		return d.failure(op, HBSInvalidParam, fmt.Sprintf("SigningAlgorithm %d, only 2 (RSA-SHA256) is supported", sigAlg)), false
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return d.failure(op, HBSInvalidParam, "DigitalSignature is not base64"), false
	}
	if d.chainStatus != ChainComplete {
		return d.failure(op, HBSInvalidState, "certificate chain not complete"), false
	}
	leaf := d.chain[0].cert
	pub, ok := leaf.PublicKey.(*rsa.PublicKey)
	if !ok {
		return d.failure(op, HBSAuthFailed, "leaf key is not RSA"), false
	}
	sum := sha256.Sum256(append(fwNonce[:], mc...))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		return d.failure(op, HBSAuthFailed, "signature over ConfigurationNonce||McNonce does not verify with the leaf key"), false
	}
	if err := firmware.CheckDomain(d.cfg.Profile, d.trustedSuffixLocked(), leaf); err != nil {
		return d.failure(op, HBSAuthFailed, err.Error()), false
	}
	return HBSSuccess, true
}

func parseHexHA1(s string) ([]byte, bool) {
	b, err := hex.DecodeString(s)
	return b, err == nil && len(b) == 16
}

func (d *Device) allowsLocked(m ControlMode) bool {
	for _, x := range d.cfg.AllowedModes {
		if x == m {
			return true
		}
	}
	return false
}

func (d *Device) requireHBSLocked(op string) (int, bool) {
	if !d.cfg.Profile.HostBasedSetup {
		return d.failure(op, HBSInvalidState, "AMT "+d.cfg.Profile.Name+" has no host-based setup"), false
	}
	return 0, true
}

// AdminSetup activates ACM from pre-provisioning with a signed request.
func (d *Device) AdminSetup(encType int, netAdminPassword, mcNonce string, sigAlg int, signature string) int {
	const op = "AdminSetup"
	d.mu.Lock()
	if code, ok := d.requireHBSLocked(op); !ok {
		d.mu.Unlock()
		return code
	}
	if d.state != PreProvisioning {
		code := d.failure(op, HBSInvalidState, "device is "+d.state.String())
		d.mu.Unlock()
		return code
	}
	if !d.allowsLocked(ModeAdmin) {
		code := d.failure(op, HBSInvalidState, "ACM not in AllowedControlModes")
		d.mu.Unlock()
		return code
	}
	ha1, ok := parseHexHA1(netAdminPassword)
	if encType != 2 || !ok {
		code := d.failure(op, HBSInvalidParam, "NetworkAdminPassword must be 32 hex digits with NetAdminPassEncryptionType 2")
		d.mu.Unlock()
		return code
	}
	if code, ok := d.checkSignedRequestLocked(op, mcNonce, sigAlg, signature); !ok {
		d.mu.Unlock()
		return code
	}
	d.adminHA1 = ha1
	d.state, d.mode = PostProvisioning, ModeAdmin
	d.lastError = ""
	publish := d.changed("admin-setup")
	d.mu.Unlock()
	publish()
	return HBSSuccess
}

// Setup activates client control mode.
func (d *Device) Setup(encType int, netAdminPassword string) int {
	const op = "Setup"
	d.mu.Lock()
	if code, ok := d.requireHBSLocked(op); !ok {
		d.mu.Unlock()
		return code
	}
	if !d.allowsLocked(ModeClient) {
		code := d.failure(op, HBSMethodDisabled, "CCM not in AllowedControlModes")
		d.mu.Unlock()
		return code
	}
	if d.state != PreProvisioning {
		code := d.failure(op, HBSInvalidState, "device is "+d.state.String())
		d.mu.Unlock()
		return code
	}
	ha1, ok := parseHexHA1(netAdminPassword)
	if encType != 2 || !ok {
		code := d.failure(op, HBSInvalidParam, "NetworkAdminPassword must be 32 hex digits with NetAdminPassEncryptionType 2")
		d.mu.Unlock()
		return code
	}
	d.adminHA1 = ha1
	d.state, d.mode = PostProvisioning, ModeClient
	d.lastError = ""
	publish := d.changed("setup")
	d.mu.Unlock()
	publish()
	return HBSSuccess
}

// UpgradeClientToAdmin moves CCM to ACM with a signed request.
func (d *Device) UpgradeClientToAdmin(mcNonce string, sigAlg int, signature string) int {
	const op = "UpgradeClientToAdmin"
	d.mu.Lock()
	if code, ok := d.requireHBSLocked(op); !ok {
		d.mu.Unlock()
		return code
	}
	if d.state != PostProvisioning || d.mode != ModeClient {
		code := d.failure(op, HBSInvalidState, "device is "+d.state.String()+"/"+d.mode.String())
		d.mu.Unlock()
		return code
	}
	if code, ok := d.checkSignedRequestLocked(op, mcNonce, sigAlg, signature); !ok {
		d.mu.Unlock()
		return code
	}
	d.mode = ModeAdmin
	d.lastError = ""
	publish := d.changed("upgrade-to-admin")
	d.mu.Unlock()
	publish()
	return HBSSuccess
}

// digestHA1 decodes SetAdminAclEntryEx's DigestPassword. RPS and rpc-go
// send base64 of the 16 raw MD5 bytes (amt-protocol.md §3.5); MeshCentral
// sends the 32 hex digits (amtprovisioningserver.js, hex_md5), and both
// activate real firmware, so the firmware takes either. The forms cannot be
// confused: 32 hex digits are valid base64 of 24 bytes, not 16.
func digestHA1(s string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == 16 {
		return b, nil
	}
	if b, err := hex.DecodeString(s); err == nil && len(b) == 16 {
		return b, nil
	}
	return nil, errors.New("DigestPassword is neither base64 nor hex of a 16-byte MD5")
}
