package session

import (
	"context"
	"crypto/tls"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/branchbox/branchbox/provisioner/democa"
	"github.com/branchbox/branchbox/provisioner/internal/fakeamt"
	"github.com/branchbox/branchbox/provisioner/wsman"
)

var demoTLS *tls.Config

func provisioningTLS(t *testing.T) *tls.Config {
	t.Helper()
	if demoTLS == nil {
		ca, err := democa.Generate(democa.Options{Domain: "branch1.example.com"})
		if err != nil {
			t.Fatal(err)
		}
		demoTLS = wsman.ProvisioningTLS([][]byte{ca.Leaf.Raw, ca.Intermediate.Raw, ca.Root.Raw}, ca.LeafKey)
	}
	return demoTLS
}

func params(t *testing.T, addr string) Params {
	return Params{
		Addr:          addr,
		TLS:           provisioningTLS(t),
		AdminPassword: "N3w-Adm!n<&>",
		CommitWait:    time.Millisecond,
		VerifyFor:     2 * time.Second,
		Backoff:       10 * time.Millisecond,
		Now:           func() time.Time { return time.Unix(1700000000, 0) },
	}
}

func host(t *testing.T, rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func TestBareMetalActivation(t *testing.T) {
	d := fakeamt.New()
	srv := d.Start(t)
	var steps []string
	p := params(t, host(t, srv.URL))
	p.TimeSync = true
	p.Step = func(step, detail string) { steps = append(steps, step) }
	res, err := Activate(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if res.AMTVersion != "16.1.25" || res.Realm != d.Realm || res.Recovered {
		t.Errorf("result %+v", res)
	}
	wantActions := []string{
		"AMT_GeneralSettings/Get", "CIM_SoftwareIdentity/Enumerate", "CIM_SoftwareIdentity/Pull",
		"AMT_SetupAndConfigurationService/Get", "AMT_SetupAndConfigurationService/SetMEBxPassword",
		"AMT_AuthorizationService/SetAdminAclEntryEx", "AMT_TimeSynchronizationService/GetLowAccuracyTimeSynch",
		"AMT_SetupAndConfigurationService/CommitChanges", "AMT_SetupAndConfigurationService/Get",
	}
	if !slices.Equal(d.Actions, wantActions) {
		t.Errorf("actions\n got %v\nwant %v", d.Actions, wantActions)
	}
	if d.State != "2" || d.AdminHA1 != fakeamt.MD5Hex("admin:"+d.Realm+":N3w-Adm!n<&>") {
		t.Errorf("device state %s, admin HA1 %s", d.State, d.AdminHA1)
	}
	if d.MEBx != "N3w-Adm!n<&>" {
		t.Errorf("MEBx password %q (must default to the admin password, XML-escaped on the wire)", d.MEBx)
	}
	if !strings.Contains(d.ACLBody, "SetAdminAclEntryEx_INPUT") || strings.Contains(d.ACLBody, "ACL") {
		t.Errorf("SetAdminAclEntryEx body misspelled: %s", d.ACLBody)
	}
	if d.TimeSet {
		t.Error("clock in sync was set anyway")
	}
	if !slices.Contains(steps, StepVerify) || !slices.Contains(steps, StepCommit) {
		t.Errorf("steps %v", steps)
	}
}

func TestScenarios(t *testing.T) {
	cases := []struct {
		name    string
		setup   func(d *fakeamt.Device, p *Params)
		wantErr error
		step    string
		check   func(t *testing.T, d *fakeamt.Device, res Result)
	}{
		{name: "factory password empty (MeshCentral style)", setup: func(d *fakeamt.Device, p *Params) { d.FactoryPass = "" }},
		{name: "OTP matches", setup: func(d *fakeamt.Device, p *Params) { d.OTP, p.OTP = "K7Q2-X9", "K7Q2-X9" }},
		{name: "OTP differs", setup: func(d *fakeamt.Device, p *Params) { d.OTP, p.OTP = "WRONG", "K7Q2-X9" },
			wantErr: ErrOTPMismatch, step: StepOTP,
			check: func(t *testing.T, d *fakeamt.Device, _ Result) {
				if d.ExtendCalled != "0" || d.State != "1" || d.MEBx != "" {
					t.Errorf("extend %q state %s mebx %q", d.ExtendCalled, d.State, d.MEBx)
				}
			}},
		{name: "OTP expected, device has none", setup: func(d *fakeamt.Device, p *Params) { p.OTP = "K7Q2-X9" },
			wantErr: ErrOTPMismatch, step: StepOTP},
		{name: "commit answer dropped", setup: func(d *fakeamt.Device, p *Params) { d.DropCommit = true },
			check: func(t *testing.T, d *fakeamt.Device, res Result) {
				if !res.Recovered || d.State != "2" {
					t.Errorf("recovered %v state %s", res.Recovered, d.State)
				}
				if n := strings.Count(strings.Join(d.Actions, " "), "CommitChanges"); n != 1 {
					t.Errorf("CommitChanges sent %d times", n)
				}
			}},
		{name: "transient drops are retried", setup: func(d *fakeamt.Device, p *Params) { d.FailStarts = 2 }},
		{name: "clock off by 100 s is set", setup: func(d *fakeamt.Device, p *Params) { d.ClockOffset = -100; p.TimeSync = true },
			check: func(t *testing.T, d *fakeamt.Device, _ Result) {
				if !d.TimeSet {
					t.Error("clock not set")
				}
			}},
		{name: "separate MEBx password", setup: func(d *fakeamt.Device, p *Params) { p.MEBxPassword = "Mebx-P4ss" },
			check: func(t *testing.T, d *fakeamt.Device, _ Result) {
				if d.MEBx != "Mebx-P4ss" {
					t.Errorf("mebx %q", d.MEBx)
				}
			}},
		{name: "already activated by us", setup: func(d *fakeamt.Device, p *Params) {
			d.State, d.AdminHA1 = "2", fakeamt.MD5Hex("admin:"+d.Realm+":"+p.AdminPassword)
		}, check: func(t *testing.T, d *fakeamt.Device, res Result) {
			if !res.Recovered {
				t.Error("not marked recovered")
			}
		}},
		{name: "activated by someone else", setup: func(d *fakeamt.Device, p *Params) {
			d.State, d.AdminHA1 = "2", fakeamt.MD5Hex("admin:"+d.Realm+":theirs")
		}, wantErr: wsman.ErrUnauthorized, step: StepConnect},
		{name: "device stays down", setup: func(d *fakeamt.Device, p *Params) { d.FailStarts = 100 }, step: StepConnect},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := fakeamt.New()
			srv := d.Start(t)
			p := params(t, host(t, srv.URL))
			c.setup(d, &p)
			res, err := Activate(context.Background(), p)
			switch {
			case c.step == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case c.step != "":
				var se *StepError
				if !errors.As(err, &se) || se.Step != c.step {
					t.Fatalf("err = %v, want a failure in step %s", err, c.step)
				}
				if c.wantErr != nil && !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
			}
			if c.check != nil {
				c.check(t, d, res)
			}
		})
	}
}

func TestDigestPasswordVector(t *testing.T) {
	// amt-protocol.md §3.5.
	if got := DigestPassword("admin", "Digest:AF541D9BC94CFF7ADFA073F492F355E6", "P@ssw0rd"); got != "qJPnlrnBjtSEXIqsAfgjOA==" {
		t.Errorf("DigestPassword = %s", got)
	}
}

// The hand-built envelope must carry the same action the library uses.
func TestHandBuiltEnvelopes(t *testing.T) {
	m := newMessages()
	lib, err := wsman.ParseXML([]byte(m.amt.AuthorizationService.SetAdminACLEntryEx("admin", "x")))
	if err != nil {
		t.Fatal(err)
	}
	ours, err := wsman.ParseXML([]byte(m.setAdminAclEntryEx("admin", "x")))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"Action", "ResourceURI", "To"} {
		if lib.Value(f) != ours.Value(f) {
			t.Errorf("%s: library %q, ours %q", f, lib.Value(f), ours.Value(f))
		}
	}
	if ours.Find("SetAdminAclEntryEx_INPUT") == nil || lib.Find("SetAdminACLEntryEx_INPUT") == nil {
		t.Error("body element names are not as expected")
	}
	ext, err := wsman.ParseXML([]byte(m.extendProvisioningPeriod(0)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(ext.Value("Action"), "/AMT_SetupAndConfigurationService/ExtendProvisioningPeriod") || ext.Value("Duration") != "0" {
		t.Errorf("ExtendProvisioningPeriod envelope: action %q duration %q", ext.Value("Action"), ext.Value("Duration"))
	}
}
