package provisioner

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/branchbox/branchbox/cluster"
)

func TestEnsureAuthorityOnceForEveryCaller(t *testing.T) {
	st := cluster.NewMemory()
	now := time.Now()
	const callers = 8
	pems := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := EnsureAuthority(context.Background(), st, now)
			if err != nil {
				t.Error(err)
				return
			}
			pems[i] = a.CertPEM
		}()
	}
	wg.Wait()
	for i, p := range pems {
		if p != pems[0] || p == "" {
			t.Fatalf("caller %d got a different (or no) CA", i)
		}
	}
	a, _ := st.Authority(managementCA)
	if strings.Contains(string(a.Key), "PRIVATE KEY") {
		t.Error("the CA key is stored unsealed")
	}
}

func TestIssueDeviceCertificate(t *testing.T) {
	st := cluster.NewMemory()
	now := time.Now()
	var cache issuerCache
	iss, err := cache.get(context.Background(), st, now)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := cache.get(context.Background(), st, now); again != iss {
		t.Error("the issuer is loaded again for every session")
	}
	deviceKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := iss.issue("amt-1234abcd.branch1.example.com", &deviceKey.PublicKey, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		dnsName string
		at      time.Time
		ok      bool
	}{
		{"for its FQDN", "amt-1234abcd.branch1.example.com", now, true},
		{"for a device clock an hour behind", "amt-1234abcd.branch1.example.com", now.Add(-59 * time.Minute), true},
		{"not for another name", "amt-other.branch1.example.com", now, false},
		{"not after it expired", "amt-1234abcd.branch1.example.com", now.Add(leafLifetime + time.Hour), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := leaf.Verify(x509.VerifyOptions{DNSName: tc.dnsName, Roots: iss.roots, CurrentTime: tc.at})
			if (err == nil) != tc.ok {
				t.Errorf("verify: %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if !leaf.PublicKey.(*rsa.PublicKey).Equal(&deviceKey.PublicKey) {
		t.Error("the certificate is not for the device's key")
	}
}

func TestManagementCAEndpoint(t *testing.T) {
	st := cluster.NewMemory()
	mux := http.NewServeMux()
	(&Handlers{Store: st}).Mount(mux)
	get := func() string {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/tls/ca", nil))
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/x-pem-file" {
			t.Fatalf("GET /api/v1/tls/ca: %d %s", rec.Code, rec.Header().Get("Content-Type"))
		}
		b, _ := io.ReadAll(rec.Body)
		return string(b)
	}
	first := get()
	block, rest := pem.Decode([]byte(first))
	if block == nil || block.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		t.Fatalf("answer is not one PEM certificate:\n%s", first)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !ca.IsCA {
		t.Fatalf("not a CA certificate: %v", err)
	}
	if get() != first {
		t.Error("a second GET answered another CA")
	}
}

// racingStore hides the authority from the first reads, as if another
// node's create committed between this node's check and its own create.
type racingStore struct {
	*cluster.Store
	hidden int
}

func (s *racingStore) Authority(name string) (cluster.Authority, bool) {
	if s.hidden > 0 {
		s.hidden--
		return cluster.Authority{}, false
	}
	return s.Store.Authority(name)
}

func TestEnsureAuthorityLosesTheRace(t *testing.T) {
	st := cluster.NewMemory()
	now := time.Now()
	certPEM, keyDER, err := newAuthority(now)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := st.Seal(keyDER)
	other := cluster.Authority{Name: managementCA, CertPEM: string(certPEM), Key: key, Created: now}
	if err := st.Apply(context.Background(), cluster.CreateAuthority{Authority: other, Time: now}); err != nil {
		t.Fatal(err)
	}
	a, err := EnsureAuthority(context.Background(), &racingStore{Store: st, hidden: 2}, now)
	if err != nil {
		t.Fatal(err)
	}
	if a.CertPEM != other.CertPEM {
		t.Error("the node that lost the create issues with its own CA")
	}
}
