package wsman

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/device"
	"github.com/branchbox/branchbox/tests/amtsim/firmware"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
	"github.com/branchbox/branchbox/tests/certcases"
)

// TestCertCasesOverTLS presents every chain of the shared table to a device
// of every firmware generation in a real TLS handshake on 16993: the device
// refuses exactly the chains the table says, and its audit log names the
// rule, as the pre-flight check (provisioner/certrules) names it.
func TestCertCasesOverTLS(t *testing.T) {
	for _, c := range certcases.All {
		m, err := c.Material()
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		for _, major := range certcases.Majors {
			t.Run(fmt.Sprintf("%s/AMT %d", c.Name, major), func(t *testing.T) {
				want := c.Refused(major)
				dev, addr := remoteDevice(t, major, m)
				hsErr := presentChain(addr, m)
				rec, ok := lastTLSRecord(dev)
				if !ok {
					t.Fatalf("no TLS audit record (handshake: %v)", hsErr)
				}
				switch {
				case want == "" && (hsErr != nil || rec.Event != "tls-client-accepted"):
					t.Errorf("refused, want accepted: handshake %v, audit %+v", hsErr, rec)
				case want != "" && hsErr == nil:
					t.Errorf("handshake succeeded, want refusal for rule %s (audit %+v)", want, rec)
				case want != "" && (rec.Event != "tls-client-refused" || rec.Rule != want):
					t.Errorf("audit %+v, want tls-client-refused with rule %s", rec, want)
				}
				t.Logf("audit: %s %s %s", rec.Event, rec.Rule, rec.Detail)
				if st := dev.Status(); want != "" && st.State != "in-provisioning" {
					t.Errorf("state after refusal %s", st.State)
				}
			})
		}
	}
}

func remoteDevice(t *testing.T, major int, m *certcases.Material) (*device.Device, string) {
	t.Helper()
	p, ok := firmware.Profiles[major]
	if !ok {
		t.Fatalf("no profile %d", major)
	}
	alg := hello.SHA256
	if !slices.Contains(p.HashAlgs, hello.SHA256) {
		alg = hello.SHA1
	}
	uuid, _ := hello.ParseUUID("939b524b-13d4-1d18-e487-1c697a6b7a2b")
	dev, err := device.New(device.Config{
		UUID: uuid, Profile: p, DNSSuffix: m.Domain, SetupMode: true,
		CustomHashes: []device.CustomHash{{Name: "trusted root", Alg: alg, Sum: firmware.Digest(alg, m.Trusted.Raw)}},
		Log:          slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeRemote(ctx, dev, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return dev, ln.Addr().String()
}

// presentChain is a provisioning server's side of the handshake: the chain
// as given, signed for with the key as given.
func presentChain(addr string, m *certcases.Material) error {
	cert := &tls.Certificate{Certificate: m.DER(), PrivateKey: m.Key}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		InsecureSkipVerify:   true, // the device's setup-mode certificate is self-signed
		MinVersion:           tls.VersionTLS10,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA,
		},
	})
	if err != nil {
		return err
	}
	// Every profile stops at TLS 1.2, where the server's Finished comes
	// after the client's: a refusal reaches the client inside Handshake.
	return conn.Close()
}

// lastTLSRecord waits for the device to record the session: the server
// side finishes after the client has seen the outcome.
func lastTLSRecord(dev *device.Device) (device.AuditRecord, bool) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		for _, r := range dev.Audit() {
			if r.Event == "tls-client-accepted" || r.Event == "tls-client-refused" {
				return r, true
			}
		}
		if time.Now().After(deadline) {
			return device.AuditRecord{}, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
