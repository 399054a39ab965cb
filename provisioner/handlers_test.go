package provisioner

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/provisioner/setupbin"
)

func newAPI(t *testing.T) (*httptest.Server, *cluster.Store) {
	t.Helper()
	ca := demoCA(t)
	st := cluster.NewMemory()
	key, _ := st.Seal(ca.KeyPEM())
	ctx := context.Background()
	if err := st.Apply(ctx, cluster.PutProfile{Profile: cluster.Profile{Name: "standard"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(ctx, cluster.PutSite{Site: cluster.Site{Name: "lab", Domain: domain, Subnet: "10.1.0.0/24", CertChainPEM: string(ca.ChainPEM()), CertKey: key}}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	(&Handlers{Store: st, HelloPort: 9971, ServerAddr: func(cluster.Site) (netip.Addr, error) { return netip.MustParseAddr("10.1.0.2"), nil }}).Mount(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, st
}

func post(t *testing.T, url, ctype, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post(url, ctype, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestRegisterOTPEndpoint(t *testing.T) {
	srv, st := newAPI(t)
	resp, body := post(t, srv.URL+"/api/v1/devices/"+uuidOf(7)+"/otp", "application/json", `{"amt_version":"15.0.1","lifetime_seconds":600}`)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var reg Registered
	if err := json.Unmarshal(body, &reg); err != nil {
		t.Fatal(err)
	}
	o, ok := st.OTP(uuidOf(7))
	secret, _ := st.Unseal(o.Secret)
	if !ok || string(secret) != reg.OTP || time.Until(reg.Expires) > 601*time.Second {
		t.Errorf("stored %+v for answer %+v", o, reg)
	}
	if d, _ := st.Device(uuidOf(7)); d.AMTVersion != "15.0.1" {
		t.Errorf("device %+v", d)
	}
	for _, a := range st.Audit(0) {
		if strings.Contains(a.Detail, reg.OTP) {
			t.Error("OTP leaked into the audit log")
		}
	}
	if resp, _ := post(t, srv.URL+"/api/v1/devices/not-a-uuid/otp", "application/json", ""); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad uuid: %d", resp.StatusCode)
	}
	if resp, _ := post(t, srv.URL+"/api/v1/devices/"+uuidOf(7)+"/otp", "application/json", `{"site":"nowhere"}`); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown site: %d", resp.StatusCode)
	}
}

func TestImportEndpoint(t *testing.T) {
	srv, st := newAPI(t)
	good := "uuid,hostname,site,profile\n" + uuidOf(1) + ",pc-1,lab,standard\n" + uuidOf(2) + ",pc-2.branch1.example.com,,\n"
	resp, body := post(t, srv.URL+"/api/v1/devices/import", "text/csv", good)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"imported": 2`) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if d, _ := st.Device(uuidOf(1)); !d.Inventoried || d.Hostname != "pc-1" || d.Profile != "standard" {
		t.Errorf("device %+v", d)
	}
	bad := uuidOf(3) + ",pc 3,lab,\nnot-a-uuid,pc-4,,\n" + uuidOf(5) + ",pc-5,mars,\n" + uuidOf(6) + ",pc-6,,gold\n" + uuidOf(3) + ",pc-3b,,\n"
	resp, body = post(t, srv.URL+"/api/v1/devices/import", "text/csv", bad)
	var out struct{ Problems []string }
	json.Unmarshal(body, &out)
	if resp.StatusCode != http.StatusBadRequest || len(out.Problems) != 4 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	for i, want := range []string{"line 1: hostname", "line 2: uuid", `line 3: site "mars"`, `line 4: profile "gold"`} {
		if !strings.HasPrefix(out.Problems[i], want) {
			t.Errorf("problem %d = %q, want prefix %q", i, out.Problems[i], want)
		}
	}
	if _, ok := st.Device(uuidOf(5)); ok {
		t.Error("a rejected file was partly imported")
	}
}

func TestSetupBinEndpoints(t *testing.T) {
	srv, st := newAPI(t)
	resp, body := post(t, srv.URL+"/api/v1/sites/lab/psk", "application/json", `{"count":3,"new_mebx_password":"N3w-Mebx!"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	f, err := setupbin.Parse(body)
	if err != nil || len(f.Records) != 3 || !f.Consume {
		t.Fatalf("psk file: %v %+v", err, f)
	}
	pids := strings.Split(resp.Header.Get("X-Branchbox-PIDs"), ",")
	for i, rec := range f.Records {
		pid, _ := rec.Get(setupbin.PID)
		pps, _ := rec.Get(setupbin.PPS)
		pair, ok := st.PSK(string(pid))
		stored, _ := st.Unseal(pair.PPS)
		if !ok || string(pid) != pids[i] || string(stored) != string(pps) || len(pps) != 32 || pair.Site != "lab" {
			t.Errorf("record %d: pid %q pps %d chars, stored %v", i, pid, len(pps), ok)
		}
	}
	if resp, _ := post(t, srv.URL+"/api/v1/sites/lab/psk", "application/json", `{"count":1}`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("no MEBx password: %d", resp.StatusCode)
	}
	if resp, _ := post(t, srv.URL+"/api/v1/sites/mars/psk", "application/json", `{"new_mebx_password":"x"}`); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown site: %d", resp.StatusCode)
	}

	resp, body = post(t, srv.URL+"/api/v1/sites/lab/setup.bin", "application/json", `{"new_mebx_password":"N3w-Mebx!"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	f, err = setupbin.Parse(body)
	if err != nil || len(f.Records) != 1 || f.Consume {
		t.Fatalf("bare-metal file: %v %+v", err, f)
	}
	suffix, _ := f.Records[0].Get(setupbin.PKIDNSSuffix)
	hash, _ := f.Records[0].Get(setupbin.CustomHash)
	if string(suffix) != domain || len(hash) < 33 || hash[0] != 2 {
		t.Errorf("suffix %q hash % x", suffix, hash)
	}
}
