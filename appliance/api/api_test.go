package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/branchbox/branchbox/appliance/apiclient"
	"github.com/branchbox/branchbox/cluster"
)

type fakeCluster struct{}

func (fakeCluster) Remove(context.Context, string, bool) error { return nil }
func (fakeCluster) Leave(context.Context, bool) error          { return nil }

func (fakeCluster) Members() ([]cluster.Member, error) {
	return []cluster.Member{{ID: "box1", Address: "local", Role: "leader", Voter: true, Leader: true}}, nil
}

// siteWriter stores whatever it is given, or refuses with the problems set.
type siteWriter struct {
	st       *cluster.Store
	problems []string
}

func (w siteWriter) PutSite(r *http.Request, body []byte) (cluster.Site, error) {
	if w.problems != nil {
		return cluster.Site{}, &ValidationError{Problems: w.problems}
	}
	var s cluster.Site
	if err := json.Unmarshal(body, &s); err != nil {
		return s, err
	}
	return s, w.st.Apply(r.Context(), cluster.PutSite{Site: s})
}

func (w siteWriter) DeleteSite(r *http.Request, name string) error {
	if name == "cfg" {
		return ErrManagedByConfig
	}
	return w.st.Apply(r.Context(), cluster.DeleteSite{Name: name})
}

func newTestServer(t *testing.T, sw SiteWriter) (*httptest.Server, *cluster.Store) {
	t.Helper()
	st := cluster.NewMemory()
	if sw == nil {
		sw = siteWriter{st: st}
	}
	key, _ := st.Seal([]byte("PRIVATE-KEY-MATERIAL"))
	token, _ := st.Seal([]byte("PRIVATE-AGENT-TOKEN-0123456789"))
	ctx := context.Background()
	st.Apply(ctx, cluster.PutSite{Site: cluster.Site{Name: "b1", Domain: "b1.example.com", Subnet: "10.1.0.0/24", CertChainPEM: "x", CertKey: key, AgentToken: token}})
	st.Apply(ctx, cluster.DeviceUpdate{UUID: "u1", Site: "b1", State: cluster.DeviceActivated, Event: cluster.DeviceEvent{State: cluster.DeviceActivated}, Time: time.Now()})
	st.Apply(ctx, cluster.LeaseCAS{Lease: cluster.Lease{IP: "10.1.0.100", ClientID: "c", MAC: "02:00:00:00:00:01", Site: "b1", Expires: time.Now().Add(time.Hour)}, Time: time.Now()})
	srv := NewServer(Options{
		Store: st, Cluster: fakeCluster{}, Sites: sw, Token: "tok",
		Status:  func() Status { return Status{Node: "box1", Role: "leader", Leader: "box1"} },
		Metrics: prometheus.NewRegistry(),
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	ts := httptest.NewServer(srv.Handler)
	t.Cleanup(ts.Close)
	return ts, st
}

func call(t *testing.T, ts *httptest.Server, method, path, token, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestEndpoints(t *testing.T) {
	ts, _ := newTestServer(t, nil)
	tests := []struct {
		method, path, token, body string
		code                      int
		contains                  string
	}{
		{"GET", "/api/v1/status", "", "", 401, "API token"},
		{"GET", "/api/v1/status", "wrong", "", 401, "API token"},
		{"GET", "/api/v1/status", "tok", "", 200, `"role": "leader"`},
		{"GET", "/api/v1/devices", "tok", "", 200, `"state": "activated"`},
		{"GET", "/api/v1/devices?state=failed", "tok", "", 200, `[]`},
		{"GET", "/api/v1/devices/u1", "tok", "", 200, `"history"`},
		{"GET", "/api/v1/devices/nope", "tok", "", 404, "not found"},
		{"GET", "/api/v1/leases", "tok", "", 200, `"ip": "10.1.0.100"`},
		{"GET", "/api/v1/cluster", "tok", "", 200, `"leader": true`},
		{"GET", "/api/v1/sites", "tok", "", 200, `"has_provisioning_cert": true`},
		{"GET", "/api/v1/sites", "tok", "", 200, `"accepts_agents": true`},
		{"POST", "/api/v1/sites", "tok", `{"name": "b2", "subnet": "10.2.0.0/24"}`, 201, `"name": "b2"`},
		{"DELETE", "/api/v1/sites/b2", "tok", "", 204, ""},
		{"DELETE", "/api/v1/sites/b2", "tok", "", 404, "not found"},
		{"DELETE", "/api/v1/sites/cfg", "tok", "", 409, "config file"},
		{"GET", "/metrics", "", "", 200, ""},
	}
	for _, tc := range tests {
		resp, body := call(t, ts, tc.method, tc.path, tc.token, tc.body)
		if resp.StatusCode != tc.code || !strings.Contains(body, tc.contains) {
			t.Errorf("%s %s: %d %s, want %d containing %q", tc.method, tc.path, resp.StatusCode, body, tc.code, tc.contains)
		}
		if strings.HasPrefix(tc.path, "/api/") && resp.Header.Get("Content-Type") != "application/json" && tc.code != 204 {
			t.Errorf("%s %s: content type %q", tc.method, tc.path, resp.Header.Get("Content-Type"))
		}
		if strings.Contains(body, "PRIVATE-") {
			t.Errorf("%s %s leaks the certificate key or the agent token", tc.method, tc.path)
		}
	}
}

func TestSiteValidationProblems(t *testing.T) {
	ts, _ := newTestServer(t, siteWriter{problems: []string{"site.subnet: bad", "site.range: worse"}})
	resp, body := call(t, ts, "POST", "/api/v1/sites", "tok", `{}`)
	if resp.StatusCode != 400 || !strings.Contains(body, "site.subnet: bad") || !strings.Contains(body, "site.range: worse") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

func TestClientAgainstServer(t *testing.T) {
	ts, _ := newTestServer(t, nil)
	dir := t.TempDir()
	tok, err := LoadOrCreateToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := LoadOrCreateToken(dir); again != tok {
		t.Error("token changed between starts")
	}
	if fi, _ := os.Stat(filepath.Join(dir, TokenFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("token mode %v", fi.Mode())
	}
	// Point the client at the test server with the test's token.
	os.WriteFile(filepath.Join(dir, TokenFile), []byte("tok\n"), 0o600)
	c, err := apiclient.New(strings.TrimPrefix(ts.URL, "http://"), dir)
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	if err := c.Do("GET", "/api/v1/status", nil, &st); err != nil || st.Node != "box1" {
		t.Fatalf("status %+v %v", st, err)
	}
	err = c.Do("GET", "/api/v1/devices/nope", nil, nil)
	var ae *apiclient.APIError
	if !errors.As(err, &ae) || ae.Code != 404 {
		t.Fatalf("want a 404 APIError, got %v", err)
	}
}

func TestListenTLSBeyondLoopback(t *testing.T) {
	dir := t.TempDir()
	// 127.0.0.2 is loopback too; use the unspecified address to force TLS.
	ln, err := Listen("0.0.0.0:0", dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := os.Stat(filepath.Join(dir, certFile)); err != nil {
		t.Fatalf("no pinned certificate written: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, keyFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode())
	}
}
