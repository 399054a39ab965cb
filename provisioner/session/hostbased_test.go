package session

import (
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/branchbox/branchbox/provisioner/democa"
	"github.com/branchbox/branchbox/provisioner/internal/amtsimtest"
	"github.com/branchbox/branchbox/provisioner/wsman"
)

const (
	hbDomain    = "branch1.example.com"
	hbLocalPass = "L0cal-0s!Pass"
	hbAdminPass = "N3w-Adm!n<&>"
)

// directLMS reaches amtsim's host-side endpoint over plain TCP, the
// transport a relay stands in for in production: $$OsAdmin digest first,
// then admin.
type directLMS struct{ url string }

func (d directLMS) OsAdmin() *wsman.Client {
	return wsman.New(wsman.Options{URL: d.url, Credentials: []wsman.Credential{{User: "$$OsAdmin", Password: hbLocalPass}}, Timeout: 5 * time.Second})
}

func (d directLMS) Admin(c wsman.Credential) *wsman.Client {
	return wsman.New(wsman.Options{URL: d.url, Credentials: []wsman.Credential{c}, Timeout: 5 * time.Second})
}

func TestHostBasedAgainstAMTSim(t *testing.T) {
	ca, err := democa.Generate(democa.Options{Domain: hbDomain})
	if err != nil {
		t.Fatal(err)
	}
	trusted := []string{"--custom-root-hash", ca.RootSHA256()}
	cases := []struct {
		name      string
		sim       []string
		step      string // failing step; "" for success
		code      int
		codeName  string
		recovered bool
	}{
		{name: "AMT 16", sim: trusted},
		{name: "AMT 11", sim: append([]string{"--amt-version", "11.8"}, trusted...)},
		{name: "AdminSetup answer lost", sim: append([]string{"--fault", "drop-commit-response"}, trusted...), recovered: true},
		{name: "root not in the device's table", step: StepCertChain, code: 4, codeName: "CertVerifyFailed"},
		{name: "leaf outside the device's DNS suffix", sim: append([]string{"--pki-suffix", "other.org"}, trusted...), step: StepAdminSetup, code: 5, codeName: "AuthFailed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"--listen", "127.0.0.1:0", "--domain", hbDomain, "--setup-mode=false",
				"--local-listen", "127.0.0.1:0", "--local-password", hbLocalPass, "--status-listen", "127.0.0.1:0"}, c.sim...)
			sim := amtsimtest.Serve(t, args...)
			var steps, details []string
			p := HostBasedParams{
				Params: Params{
					AdminPassword: hbAdminPass, TimeSync: true, Backoff: 10 * time.Millisecond, VerifyFor: 2 * time.Second,
					Features: &Features{SOL: true, KVM: true, UserConsent: "all"},
					Step:     func(step, detail string) { steps = append(steps, step); details = append(details, detail) },
				},
				Transport: directLMS{sim.Local},
				Chain:     []*x509.Certificate{ca.Leaf, ca.Intermediate, ca.Root},
				Key:       ca.LeafKey,
			}
			res, err := HostBased(context.Background(), p)
			st := sim.DeviceStatus(t)
			t.Logf("steps %v; device %s/%s %q", steps, st.State, st.ControlMode, st.LastError)
			for _, d := range details {
				if strings.Contains(d, hbLocalPass) || strings.Contains(d, hbAdminPass) {
					t.Errorf("a password in the audit detail %q", d)
				}
			}
			if c.step != "" {
				t.Logf("error: %v", err)
				var se *StepError
				var re *ReturnError
				if !errors.As(err, &se) || se.Step != c.step || !errors.As(err, &re) || re.Code != c.code || re.Name != c.codeName {
					t.Fatalf("error %v, want step %s with firmware code %d %s", err, c.step, c.code, c.codeName)
				}
				if !strings.Contains(err.Error(), c.codeName) {
					t.Errorf("error %q does not name the code", err)
				}
				if res.Activated || res.AdminMode || st.State != "pre-provisioning" {
					t.Errorf("activated %v, device %s", res.Activated, st.State)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !res.Activated || !res.AdminMode || res.Recovered != c.recovered || res.Realm == "" || res.AMTVersion == "" {
				t.Errorf("result %+v", res)
			}
			if st.State != "post-provisioning" || st.ControlMode != "acm" || !st.Features.KVM || !st.Features.SOL || st.Features.UserConsent != "all" {
				t.Errorf("device reports %+v", st)
			}
			want := []string{StepConnect, StepVersion, StepHostBasedSetup, StepCertChain, StepAdminSetup, StepMEBx, StepTimeSync, StepVerify,
				StepRedirection, StepKVM, StepListener, StepUserConsent}
			if c.recovered {
				want = slices.Insert(want, 5, StepAdminSetup) // "answer lost", then "device reports admin control mode"
			}
			if !slices.Equal(steps, want) {
				t.Errorf("steps\n got %v\nwant %v", steps, want)
			}
			// The new password logs in; $$OsAdmin no longer configures.
			admin := directLMS{sim.Local}.Admin(wsman.Credential{User: "admin", Password: hbAdminPass})
			defer admin.Close()
			out, err := admin.Post(context.Background(), newMessages().amt.SetupAndConfigurationService.Get())
			if err != nil || out.Value("ProvisioningState") != statePost {
				t.Errorf("admin login after activation: %v, state %q", err, out.Value("ProvisioningState"))
			}
		})
	}
}

func TestHostBasedRefusesBadParams(t *testing.T) {
	ca, err := democa.Generate(democa.Options{Domain: hbDomain})
	if err != nil {
		t.Fatal(err)
	}
	good := HostBasedParams{Params: Params{AdminPassword: hbAdminPass}, Transport: directLMS{"http://127.0.0.1:1/wsman"},
		Chain: []*x509.Certificate{ca.Leaf, ca.Root}, Key: ca.LeafKey}
	cases := []struct {
		name   string
		change func(*HostBasedParams)
		want   string
	}{
		{"no admin password", func(p *HostBasedParams) { p.AdminPassword = "" }, "no admin password"},
		{"an OTP", func(p *HostBasedParams) { p.OTP = "ABCDEFGH" }, "one-time password"},
		{"no chain", func(p *HostBasedParams) { p.Chain = nil }, "no provisioning certificate chain"},
		{"TLS without the device's address", func(p *HostBasedParams) { p.Features = &Features{TLS: &TLSCertificate{}} }, "address is unknown"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := good
			c.change(&p)
			_, err := HostBased(context.Background(), p)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want %q", err, c.want)
			}
		})
	}
}
