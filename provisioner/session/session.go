// Package session runs one bare-metal Remote Configuration activation
// against an AMT device that sent a hello (amt-protocol.md §3.2): mutual
// TLS to the device, read realm, version and setup state, check the
// one-time password, set the MEBx password and the admin ACL, sync the
// clock, commit, then reconnect with the new credentials to confirm —
// and then, as admin, apply the profile's features (features.go).
package session

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"time"

	"github.com/branchbox/branchbox/provisioner/wsman"
)

// Step names, as recorded in the audit log and on the device.
const (
	StepConnect      = "general-settings"
	StepVersion      = "software-identity"
	StepSetupService = "setup-service"
	StepOTP          = "otp"
	StepMEBx         = "mebx-password"
	StepAdminACL     = "admin-acl"
	StepTimeSync     = "time-sync"
	StepCommit       = "commit"
	StepVerify       = "verify"
)

// ProvisioningState values of AMT_SetupAndConfigurationService.
const (
	statePre  = "0"
	statePost = "2"
)

// ErrOTPMismatch: the device's ProvisioningServerOTP is not the one the
// console registered — someone else's agent opened the window.
var ErrOTPMismatch = errors.New("one-time password mismatch")

// StepError names the step a session failed in.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

// Params is everything one activation needs.
type Params struct {
	// Addr is the device's TLS WS-Man endpoint, host:16993.
	Addr string
	// TLS presents the provisioning chain (wsman.ProvisioningTLS).
	TLS *tls.Config
	// AdminPassword becomes the digest password of "admin".
	AdminPassword string
	// MEBxPassword is set before commit; empty means AdminPassword,
	// since firmware refuses to commit while the MEBx password is default.
	MEBxPassword string
	// OTP, when set, must equal the device's ProvisioningServerOTP.
	OTP      string
	TimeSync bool
	// Features are applied once the device is activated; nil leaves them
	// as the device has them.
	Features *Features

	// CommitWait is how long the device restarts its stack after
	// CommitChanges (MeshCentral waits 5 s).
	CommitWait time.Duration
	// VerifyFor bounds the reconnect-and-read-back after commit.
	VerifyFor time.Duration
	// Retries of a step that failed in transport, with doubling Backoff.
	Retries int
	Backoff time.Duration
	// RequestTimeout bounds one WS-Man exchange.
	RequestTimeout time.Duration

	// Step is told each completed step (for the audit log); may be nil.
	Step func(step, detail string)
	Log  *slog.Logger
	Now  func() time.Time
}

// Result is what the device told us.
type Result struct {
	AMTVersion string
	Realm      string
	// Recovered is set when the commit answer was lost and the state was
	// read back, or the device was found already activated by us.
	Recovered bool
	// Activated is set once the device reported post-provisioning with
	// the new password, even if applying the profile failed after that.
	Activated bool
	// AdminMode is set once host-based AdminSetup took effect: the device
	// is in admin control mode even if a later step failed.
	AdminMode bool
}

func (p *Params) defaults() {
	if p.CommitWait == 0 {
		p.CommitWait = 5 * time.Second
	}
	if p.VerifyFor == 0 {
		p.VerifyFor = 60 * time.Second
	}
	if p.Retries == 0 {
		p.Retries = 3
	}
	if p.Backoff == 0 {
		p.Backoff = 500 * time.Millisecond
	}
	if p.RequestTimeout == 0 {
		p.RequestTimeout = 20 * time.Second
	}
	if p.MEBxPassword == "" {
		p.MEBxPassword = p.AdminPassword
	}
	if p.Step == nil {
		p.Step = func(string, string) {}
	}
	if p.Log == nil {
		p.Log = slog.New(slog.DiscardHandler)
	}
	if p.Now == nil {
		p.Now = time.Now
	}
}

// defaultCredentials answer the digest challenge of a device in setup
// mode: Intel's tools use admin/admin, MeshCentral admin with no password.
var defaultCredentials = []wsman.Credential{{User: "admin", Password: "admin"}, {User: "admin", Password: ""}}

type run struct {
	p   Params
	msg *messages
	c   *wsman.Client
	// admin opens a client that logs in as admin with the new password,
	// over the session's transport.
	admin func() *wsman.Client
	res   Result
}

// Activate runs the whole sequence. The error is a *StepError.
func Activate(ctx context.Context, p Params) (Result, error) {
	if p.AdminPassword == "" {
		return Result{}, &StepError{StepConnect, errors.New("profile has no admin password")}
	}
	p.defaults()
	r := &run{p: p, msg: newMessages()}
	r.c = wsman.New(wsman.Options{URL: "https://" + p.Addr + "/wsman", TLS: p.TLS, Credentials: defaultCredentials, Timeout: p.RequestTimeout})
	defer r.c.Close()
	// Each admin client is a fresh TLS session: after the commit the
	// device restarts its stack and the old one is gone.
	r.admin = func() *wsman.Client {
		return wsman.New(wsman.Options{
			URL: "https://" + p.Addr + "/wsman", TLS: p.TLS, Timeout: p.RequestTimeout,
			Credentials: []wsman.Credential{{User: "admin", Password: p.AdminPassword}},
		})
	}

	err := r.configure(ctx)
	if errors.Is(err, wsman.ErrUnauthorized) {
		// A device that refuses the factory credentials may be one we
		// already activated in a session whose commit answer was lost.
		if verr := r.verify(ctx, 0); verr == nil {
			r.res.Recovered = true
			err = nil
		}
	}
	if err != nil {
		return r.res, err
	}
	r.res.Activated = true
	return r.res, r.applyFeatures(ctx)
}

// readRealm reads the digest realm, which every password hash is over.
func (r *run) readRealm(ctx context.Context) error {
	gs, err := r.call(ctx, StepConnect, func() string { return r.msg.amt.GeneralSettings.Get() })
	if err != nil {
		return err
	}
	r.res.Realm = gs.Value("DigestRealm")
	if r.res.Realm == "" {
		return &StepError{StepConnect, errors.New("AMT_GeneralSettings has no DigestRealm")}
	}
	return nil
}

func (r *run) configure(ctx context.Context) error {
	if err := r.readRealm(ctx); err != nil {
		return err
	}
	r.p.Step(StepConnect, fmt.Sprintf("TLS session up as %q, realm %s", r.c.Credential().User, r.res.Realm))

	r.res.AMTVersion = r.version(ctx)
	r.p.Step(StepVersion, "AMT "+r.res.AMTVersion)

	sc, err := r.call(ctx, StepSetupService, func() string { return r.msg.amt.SetupAndConfigurationService.Get() })
	if err != nil {
		return err
	}
	state := sc.Value("ProvisioningState")
	r.p.Step(StepSetupService, "provisioning state "+state)
	if state == statePost {
		return &StepError{StepSetupService, errors.New("device is already provisioned and still accepts the default credentials")}
	}

	if r.p.OTP != "" {
		if err := r.checkOTP(ctx, sc.Value("ProvisioningServerOTP")); err != nil {
			return err
		}
		r.p.Step(StepOTP, "device one-time password matches")
	}

	if err := r.setMEBx(ctx); err != nil {
		return err
	}
	r.p.Step(StepMEBx, "MEBx password set")

	digest := DigestPassword("admin", r.res.Realm, r.p.AdminPassword)
	out, err := r.call(ctx, StepAdminACL, func() string { return r.msg.setAdminAclEntryEx("admin", digest) })
	if err != nil {
		return err
	}
	if rv := returnValue(out); rv != 0 {
		return &StepError{StepAdminACL, fmt.Errorf("SetAdminAclEntryEx returned %d", rv)}
	}
	r.p.Step(StepAdminACL, "admin password set")

	if r.p.TimeSync {
		detail, err := r.syncTime(ctx)
		if err != nil {
			return err
		}
		r.p.Step(StepTimeSync, detail)
	}
	return r.commit(ctx)
}

// version reads CIM_SoftwareIdentity "AMT", falling back to the Server
// header; an unknown version does not stop activation.
func (r *run) version(ctx context.Context) string {
	enum, err := r.call(ctx, StepVersion, func() string { return r.msg.cim.SoftwareIdentity.Enumerate() })
	if err == nil {
		ectx := enum.Value("EnumerationContext")
		pull, err := r.call(ctx, StepVersion, func() string { return r.msg.cim.SoftwareIdentity.Pull(ectx) })
		if err == nil {
			for _, item := range pull.FindAll("CIM_SoftwareIdentity") {
				if item.Value("InstanceID") == "AMT" {
					if v := item.Value("VersionString"); v != "" {
						return v
					}
				}
			}
		}
	}
	if m := serverVersion.FindStringSubmatch(r.c.Server()); m != nil {
		return m[1]
	}
	return ""
}

var serverVersion = regexp.MustCompile(`Active Management Technology ([0-9][0-9.]*)`)

func (r *run) checkOTP(ctx context.Context, onDevice string) error {
	got := onDevice
	if b, err := base64.StdEncoding.DecodeString(onDevice); err == nil {
		got = string(b)
	}
	if onDevice != "" && subtle.ConstantTimeCompare([]byte(got), []byte(r.p.OTP)) == 1 {
		return nil
	}
	// Close the window so the device stops offering itself to whoever
	// holds the OTP it was given.
	detail := "device OTP differs"
	if onDevice == "" {
		detail = "device has no OTP"
	}
	if out, err := r.call(ctx, StepOTP, func() string { return r.msg.extendProvisioningPeriod(0) }); err != nil {
		detail += fmt.Sprintf("; ExtendProvisioningPeriod(0) failed: %v", err)
	} else if rv := returnValue(out); rv != 0 {
		detail += fmt.Sprintf("; ExtendProvisioningPeriod(0) returned %d", rv)
	} else {
		detail += "; provisioning period closed"
	}
	return &StepError{StepOTP, fmt.Errorf("%w: %s", ErrOTPMismatch, detail)}
}

// returnNotPermitted is what SetMEBxPassword answers once the password is
// no longer the default — expected when a retry follows a lost answer.
const returnNotPermitted = 16

func (r *run) setMEBx(ctx context.Context) error {
	attempts := 0
	out, err := r.call(ctx, StepMEBx, func() string { attempts++; return r.msg.setMEBxPassword(r.p.MEBxPassword) })
	if err != nil {
		return err
	}
	rv := returnValue(out)
	if rv == 0 || (rv == returnNotPermitted && attempts > 1) {
		return nil
	}
	return &StepError{StepMEBx, fmt.Errorf("SetMEBxPassword returned %d", rv)}
}

// syncTime sets the clock when it drifts over 10 s (as MeshCentral).
func (r *run) syncTime(ctx context.Context) (string, error) {
	out, err := r.call(ctx, StepTimeSync, func() string { return r.msg.amt.TimeSynchronizationService.GetLowAccuracyTimeSynch() })
	if err != nil {
		return "", err
	}
	ta0, err := strconv.ParseInt(out.Value("Ta0"), 10, 64)
	if err != nil {
		return "", &StepError{StepTimeSync, fmt.Errorf("GetLowAccuracyTimeSynch: Ta0 %q", out.Value("Ta0"))}
	}
	tm1 := r.p.Now().Unix()
	drift := tm1 - ta0
	if drift >= -10 && drift <= 10 {
		return fmt.Sprintf("clock within %ds, left alone", abs(drift)), nil
	}
	tm2 := r.p.Now().Unix()
	out, err = r.call(ctx, StepTimeSync, func() string {
		return r.msg.amt.TimeSynchronizationService.SetHighAccuracyTimeSynch(ta0, tm1, tm2)
	})
	if err != nil {
		return "", err
	}
	if rv := returnValue(out); rv != 0 {
		return "", &StepError{StepTimeSync, fmt.Errorf("SetHighAccuracyTimeSynch returned %d", rv)}
	}
	return fmt.Sprintf("clock was off by %ds, set", drift), nil
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// commit is sent once: a lost answer is settled by reading state back
// with the new credentials, never by committing again.
func (r *run) commit(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, r.p.RequestTimeout)
	out, err := r.c.Post(rctx, r.msg.amt.SetupAndConfigurationService.CommitChanges())
	cancel()
	r.c.Close()
	switch {
	case err != nil && wsman.IsTransient(err):
		r.p.Step(StepCommit, "answer lost ("+err.Error()+"), reading state back")
		r.res.Recovered = true
	case err != nil:
		return &StepError{StepCommit, err}
	default:
		if rv := returnValue(out); rv != 0 {
			return &StepError{StepCommit, fmt.Errorf("CommitChanges returned %d", rv)}
		}
		r.p.Step(StepCommit, "committed")
	}
	return r.verify(ctx, r.p.CommitWait)
}

// verify logs in again with the new admin password until the device
// reports post-provisioning or VerifyFor runs out.
func (r *run) verify(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait + r.p.VerifyFor)
	if err := sleep(ctx, wait); err != nil {
		return &StepError{StepVerify, err}
	}
	backoff := r.p.Backoff
	for {
		state, err := r.readState(ctx)
		switch {
		case err == nil && state == statePost:
			r.p.Step(StepVerify, "device reports post-provisioning with the new admin password")
			return nil
		case err == nil:
			return &StepError{StepVerify, fmt.Errorf("device reports provisioning state %s after commit", state)}
		case !wsman.IsTransient(err):
			return &StepError{StepVerify, err}
		case time.Now().Add(backoff).After(deadline):
			return &StepError{StepVerify, fmt.Errorf("device did not come back: %w", err)}
		}
		if err := sleep(ctx, backoff); err != nil {
			return &StepError{StepVerify, err}
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (r *run) readState(ctx context.Context) (string, error) {
	c := r.admin()
	defer c.Close()
	rctx, cancel := context.WithTimeout(ctx, r.p.RequestTimeout)
	defer cancel()
	out, err := c.Post(rctx, r.msg.amt.SetupAndConfigurationService.Get())
	if err != nil {
		return "", err
	}
	return out.Value("ProvisioningState"), nil
}

// call sends one message, retrying transport failures with backoff. The
// builder runs per attempt so each try carries a fresh message id.
func (r *run) call(ctx context.Context, step string, build func() string) (*wsman.Node, error) {
	backoff := r.p.Backoff
	for attempt := 0; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, r.p.RequestTimeout)
		out, err := r.c.Post(rctx, build())
		cancel()
		if err == nil {
			return out, nil
		}
		if !wsman.IsTransient(err) || attempt >= r.p.Retries {
			return nil, &StepError{step, err}
		}
		r.p.Log.Debug("retrying", "step", step, "attempt", attempt+1, "err", err)
		r.c.Close()
		if err := sleep(ctx, backoff); err != nil {
			return nil, &StepError{step, err}
		}
		backoff *= 2
	}
}

func returnValue(doc *wsman.Node) int {
	v, err := strconv.Atoi(doc.Value("ReturnValue"))
	if err != nil {
		return -1
	}
	return v
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
