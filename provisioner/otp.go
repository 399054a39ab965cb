package provisioner

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/provisioner/hello"
)

// DefaultOTPLifetime is how long a registered one-time password waits for
// its device's hello.
const DefaultOTPLifetime = 24 * time.Hour

// otpLength is within the 8–32 characters firmware accepts for
// CFG_SetProvisioningServerOTP; 16 of 32 symbols is 80 bits.
const otpLength = 16

// Registration is a management console's request for an agent-initiated
// activation.
type Registration struct {
	UUID       string
	AMTVersion string
	Site       string // optional
	Lifetime   time.Duration
}

// Registered is what the console hands to the device's agent. The OTP is
// shown this once; the store keeps it sealed.
type Registered struct {
	UUID    string    `json:"uuid"`
	OTP     string    `json:"otp"`
	Expires time.Time `json:"expires"`
}

// RegisterDevice records the device and creates its one-time password,
// replacing any unused one. The agent sets it in the firmware
// (CFG_SetProvisioningServerOTP); the session compares it with the
// device's ProvisioningServerOTP and aborts on mismatch.
func RegisterDevice(ctx context.Context, st Store, r Registration, now time.Time) (Registered, error) {
	uuid, err := hello.NormalizeUUID(r.UUID)
	if err != nil {
		return Registered{}, &inputError{err}
	}
	if r.Site != "" {
		if _, ok := st.Site(r.Site); !ok {
			return Registered{}, fmt.Errorf("site %q: %w", r.Site, cluster.ErrNotFound)
		}
	}
	if r.Lifetime <= 0 {
		r.Lifetime = DefaultOTPLifetime
	}
	otp := randomString(otpAlphabet, otpLength)
	sealed, err := st.Seal([]byte(otp))
	if err != nil {
		return Registered{}, fmt.Errorf("sealing one-time password: %w", err)
	}
	now = now.UTC()
	if err := st.Apply(ctx, cluster.DeviceUpdate{
		UUID: uuid, AMTVersion: r.AMTVersion, Site: r.Site, Time: now,
		Event: cluster.DeviceEvent{Step: "registered", Detail: "agent-initiated activation requested"},
	}); err != nil {
		return Registered{}, fmt.Errorf("device %s: %w", uuid, err)
	}
	o := cluster.OTP{UUID: uuid, Secret: sealed, Created: now, Expires: now.Add(r.Lifetime)}
	if err := st.Apply(ctx, cluster.CreateOTP{OTP: o, Time: now}); err != nil {
		return Registered{}, fmt.Errorf("one-time password for %s: %w", uuid, err)
	}
	if err := st.Apply(ctx, cluster.Audit{Entry: cluster.AuditEntry{
		Time: now, Actor: "api", Action: "device.register", Subject: uuid,
		Detail: fmt.Sprintf("one-time password created, expires %s", o.Expires.Format(time.RFC3339)),
	}}); err != nil {
		return Registered{}, err
	}
	return Registered{UUID: uuid, OTP: otp, Expires: o.Expires}, nil
}

// Alphabets without look-alikes (0/O, 1/I) for strings people copy by
// hand, and the PID/PPS alphabet the firmware defines.
const (
	otpAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	pskAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
)

// randomString draws n symbols uniformly by rejection sampling.
func randomString(alphabet string, n int) string {
	out := make([]byte, 0, n)
	limit := 256 - 256%len(alphabet)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			panic(fmt.Sprintf("crypto/rand failed: %v", err))
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out)
}

var errNoSite = &inputError{errors.New("site is required")}

// inputError is a caller's mistake, reported back as such (HTTP 400).
type inputError struct{ error }

func (e *inputError) Unwrap() error { return e.error }
