package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/branchbox/branchbox/provisioner/agent/mei"
	"github.com/branchbox/branchbox/provisioner/hello"
)

// DefaultStateDir holds registration.json.
const DefaultStateDir = "/var/lib/branchbox-agent"

const registrationFile = "registration.json"

// Agent runs the subcommands against one device.
type Agent struct {
	MEI      string // mei.Dial spec: /dev/mei0 or unix:PATH
	LMS      string // host:port or unix:PATH
	StateDir string
	// Timeout bounds one MEI command, one API call and one LMS request.
	Timeout time.Duration
	Log     *slog.Logger
	Now     func() time.Time
	// PollInterval is how often Wait asks the server (default 2 s).
	PollInterval time.Duration
}

func (a *Agent) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Agent) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (a *Agent) open() (*mei.Client, error) {
	return mei.Open(a.MEI, a.Timeout)
}

// Info reads the device's identity and state.
func (a *Agent) Info() (Info, error) {
	c, err := a.open()
	if err != nil {
		return Info{}, err
	}
	defer c.Close()
	return ReadInfo(c)
}

// Register sends the device's info to branchbox and keeps the answer —
// OTP included — in <state-dir>/registration.json, readable by the owner
// only.
func (a *Agent) Register(ctx context.Context, api *API) (Registration, error) {
	info, err := a.Info()
	if err != nil {
		return Registration{}, err
	}
	reg, err := api.Register(ctx, info)
	if err != nil {
		return Registration{}, err
	}
	if err := checkRegistration(reg, info.UUID); err != nil {
		return Registration{}, err
	}
	reg.UUID = info.UUID // the canonical spelling, which Start compares with
	if err := a.saveRegistration(reg); err != nil {
		return Registration{}, err
	}
	a.log().Info("registered", "uuid", reg.UUID, "site", reg.Site, "domain", reg.Domain, "expires", reg.Expires)
	return reg, nil
}

func checkRegistration(r Registration, uuid string) error {
	got, err := hello.NormalizeUUID(r.UUID)
	if err != nil {
		return fmt.Errorf("server answer: %w", err)
	}
	if got != uuid {
		return fmt.Errorf("server answer: registration is for device %s, this device is %s", got, uuid)
	}
	if r.Site == "" {
		return errors.New("server answer: site missing")
	}
	if err := mei.ValidOTP(r.OTP); err != nil {
		return fmt.Errorf("server answer: %w", err)
	}
	if r.Expires.IsZero() {
		return errors.New("server answer: expires missing")
	}
	return nil
}

func (a *Agent) registrationPath() string {
	dir := a.StateDir
	if dir == "" {
		dir = DefaultStateDir
	}
	return filepath.Join(dir, registrationFile)
}

// saveRegistration writes the file whole or not at all, created 0600 so
// the OTP is never readable by others, not even for a moment.
func (a *Agent) saveRegistration(r Registration) error {
	path := a.registrationPath()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".registration-*")
	if err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	// CreateTemp already makes 0600; Chmod guards against a umask-free
	// platform difference.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", tmp, err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// LoadRegistration reads registration.json; an expired one is refused.
func (a *Agent) LoadRegistration() (Registration, error) {
	path := a.registrationPath()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Registration{}, fmt.Errorf("%s: not registered yet (run `branchbox-agent register`, or pass --otp-file)", path)
	}
	if err != nil {
		return Registration{}, err
	}
	var r Registration
	if err := json.Unmarshal(b, &r); err != nil {
		return Registration{}, fmt.Errorf("%s: %w", path, err)
	}
	if err := mei.ValidOTP(r.OTP); err != nil {
		return Registration{}, fmt.Errorf("%s: %w", path, err)
	}
	if !r.Expires.IsZero() && !a.now().Before(r.Expires) {
		return Registration{}, fmt.Errorf("%s: the one-time password expired at %s; run `branchbox-agent register` again",
			path, r.Expires.Format(time.RFC3339))
	}
	return r, nil
}

// ReadOTPFile reads an OTP a console handed over itself.
func ReadOTPFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--otp-file: %w", err)
	}
	otp := strings.TrimSpace(string(b))
	if err := mei.ValidOTP(otp); err != nil {
		return "", fmt.Errorf("--otp-file %s: %w", path, err)
	}
	return otp, nil
}

// StartResult is the device after `start`.
type StartResult struct {
	UUID  string `json:"uuid"`
	State string `json:"state"`
}

// Start sets the OTP and opens the remote-configuration window, so the
// device sends hellos and branchbox activates it out of band. uuid, when
// set, must be this device (the registration's).
func (a *Agent) Start(otp, uuid string) (StartResult, error) {
	c, err := a.open()
	if err != nil {
		return StartResult{}, err
	}
	defer c.Close()
	u, err := c.GetUUID()
	if err != nil {
		return StartResult{}, err
	}
	if uuid != "" && uuid != u.String() {
		return StartResult{}, fmt.Errorf("the registration is for device %s, this device is %s", uuid, u)
	}
	state, err := c.GetProvisioningState()
	if err != nil {
		return StartResult{}, err
	}
	if state == mei.PostProvisioning {
		return StartResult{}, fmt.Errorf("device %s is already %s; nothing to start", u, state)
	}
	if err := c.SetProvisioningServerOTP(mei.SetProvisioningServerOTPRequest{OTP: otp}); err != nil {
		return StartResult{}, err
	}
	if err := c.StartConfiguration(); err != nil {
		return StartResult{}, err
	}
	if state, err = c.GetProvisioningState(); err != nil {
		return StartResult{}, err
	}
	a.log().Info("configuration started", "uuid", u.String(), "state", state.String())
	return StartResult{UUID: u.String(), State: state.String()}, nil
}

// Stop closes the remote-configuration window.
func (a *Agent) Stop() (StartResult, error) {
	c, err := a.open()
	if err != nil {
		return StartResult{}, err
	}
	defer c.Close()
	u, err := c.GetUUID()
	if err != nil {
		return StartResult{}, err
	}
	if err := c.StopConfiguration(); err != nil {
		return StartResult{}, err
	}
	state, err := c.GetProvisioningState()
	if err != nil {
		return StartResult{}, err
	}
	a.log().Info("configuration stopped", "uuid", u.String(), "state", state.String())
	return StartResult{UUID: u.String(), State: state.String()}, nil
}

// Terminal device states on the server (cluster.DeviceActivated/Failed).
const (
	stateActivated = "activated"
	stateFailed    = "failed"
)

// Baseline is the server's record before `start`; a terminal state only
// counts once the record changed, so an old "failed" does not end a new
// wait at once. A device the server does not know yet has a zero baseline.
func (a *Agent) Baseline(ctx context.Context, api *API, uuid string) (DeviceStatus, error) {
	d, err := api.Device(ctx, uuid)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == 404 {
		return DeviceStatus{}, nil
	}
	return d, err
}

// Wait polls the server until the device is activated or failed, or
// until d elapses.
func (a *Agent) Wait(ctx context.Context, api *API, uuid string, base DeviceStatus, d time.Duration) (DeviceStatus, error) {
	every := a.PollInterval
	if every <= 0 {
		every = 2 * time.Second
	}
	deadline := time.Now().Add(d)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	t := time.NewTicker(every)
	defer t.Stop()
	last := base
	timedOut := func() error {
		return fmt.Errorf("device %s not activated within %s (server state %q)", uuid, d, last.State)
	}
	for {
		st, err := api.Device(ctx, uuid)
		var ae *APIError
		switch {
		case err == nil:
			last = st
			changed := !st.Updated.Equal(base.Updated) || st.State != base.State
			if changed && (st.State == stateActivated || st.State == stateFailed) {
				return st, nil
			}
		case errors.As(err, &ae) && ae.Status == 404:
			// Not seen yet: the hello has not arrived.
		case !time.Now().Before(deadline):
			// The call was cut short by the wait's own deadline.
			return last, timedOut()
		default:
			return last, err
		}
		select {
		case <-ctx.Done():
			return last, timedOut()
		case <-t.C:
		}
	}
}

// Activate runs host-based ACM activation (amt-protocol.md §3.3): branchbox
// drives AddNextCertInChain and the signed AdminSetup over a relay the
// agent opens to LMS as $$OsAdmin. The signing key stays in branchbox,
// the $$OsAdmin password on this host.
func (a *Agent) Activate(ctx context.Context, api *API) (Result, error) {
	lms, err := NewLMS(a.LMS, a.Timeout)
	if err != nil {
		return Result{}, err
	}
	if err := lms.Check(ctx); err != nil {
		return Result{}, err
	}
	info, acct, err := a.prepareACM()
	if err != nil {
		return Result{}, err
	}
	ex, err := api.openRelay(ctx, info)
	if err != nil {
		return Result{}, err
	}
	a.log().Info("relay open", "uuid", info.UUID, "lms", a.LMS)
	res, err := newRelay(ex, lms, acct, a.log()).run(ctx)
	if err != nil {
		return Result{}, err
	}
	if u, err := hello.NormalizeUUID(res.UUID); err != nil || u != info.UUID {
		return res, fmt.Errorf("the server's result is for device %q, this device is %s", res.UUID, info.UUID)
	}
	return res, nil
}

// prepareACM reads the device, closes an open window (WS-Man ACM
// activation fails in-provisioning; MeshCentral sends StopConfiguration
// first), and fetches the $$OsAdmin account.
func (a *Agent) prepareACM() (Info, mei.LocalSystemAccount, error) {
	c, err := a.open()
	if err != nil {
		return Info{}, mei.LocalSystemAccount{}, err
	}
	defer c.Close()
	info, err := ReadInfo(c)
	if err != nil {
		return Info{}, mei.LocalSystemAccount{}, err
	}
	if info.State == mei.InProvisioning.String() {
		a.log().Info("closing the open configuration window before host-based activation", "uuid", info.UUID)
		if err := c.StopConfiguration(); err != nil {
			return Info{}, mei.LocalSystemAccount{}, err
		}
		if info, err = ReadInfo(c); err != nil {
			return Info{}, mei.LocalSystemAccount{}, err
		}
	}
	if info.State != mei.PreProvisioning.String() {
		return Info{}, mei.LocalSystemAccount{}, fmt.Errorf("device %s is %s (control mode %s); host-based activation needs pre-provisioning",
			info.UUID, info.State, info.ControlMode)
	}
	acct, err := c.GetLocalSystemAccount()
	if err != nil {
		return Info{}, mei.LocalSystemAccount{}, err
	}
	return info, acct, nil
}
