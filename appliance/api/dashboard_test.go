package api

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/branchbox/branchbox/cluster"
)

// TestEventsStream reads the live stream: a snapshot first, then a
// "device" and a "counts" event when a device changes state.
func TestEventsStream(t *testing.T) {
	ts, st := newTestServer(t, nil)
	req, _ := http.NewRequest("GET", ts.URL+"/api/v1/events", nil)
	req.Header.Set("Authorization", "Bearer tok")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func() (string, string) {
		t.Helper()
		var event string
		for sc.Scan() {
			l := sc.Text()
			if v, ok := strings.CutPrefix(l, "event: "); ok {
				event = v
			}
			if v, ok := strings.CutPrefix(l, "data: "); ok {
				return event, v
			}
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return "", ""
	}
	ev, data := next()
	var snap Snapshot
	if ev != "snapshot" || json.Unmarshal([]byte(data), &snap) != nil || len(snap.Devices) != 1 || snap.Counts.States["activated"] != 1 {
		t.Fatalf("first event %s %s", ev, data)
	}
	st.Apply(ctx, cluster.DeviceUpdate{UUID: "u2", Site: "b1", State: cluster.DeviceActivating,
		Event: cluster.DeviceEvent{State: cluster.DeviceActivating}, Time: time.Now()})
	ev, data = next()
	var d Device
	if ev != "device" || json.Unmarshal([]byte(data), &d) != nil || d.UUID != "u2" || d.State != "activating" {
		t.Fatalf("second event %s %s", ev, data)
	}
	ev, data = next()
	var c Counts
	if ev != "counts" || json.Unmarshal([]byte(data), &c) != nil || c.Total != 2 || c.States["activating"] != 1 {
		t.Fatalf("third event %s %s", ev, data)
	}
}

// TestDashboardSession: the login form sets a session cookie that reads
// the API, changes need the dashboard's header as well, and a wrong token
// gets no cookie.
func TestDashboardSession(t *testing.T) {
	ts, _ := newTestServer(t, nil)
	jar, _ := cookiejar.New(nil)
	noFollow := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	browser := &http.Client{Jar: jar, CheckRedirect: noFollow}

	resp, err := browser.PostForm(ts.URL+"/ui/login", url.Values{"token": {"wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != 303 || !strings.Contains(loc, "login=failed") || len(resp.Cookies()) != 0 {
		t.Fatalf("wrong token: %d %q %v", resp.StatusCode, loc, resp.Cookies())
	}
	if resp, err = browser.PostForm(ts.URL+"/ui/login", url.Values{"token": {"tok"}}); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cs := resp.Cookies()
	if resp.StatusCode != 303 || len(cs) != 1 || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode || strings.Contains(cs[0].Value, "tok") {
		t.Fatalf("login: %d %+v", resp.StatusCode, cs)
	}
	get := func(method, path, header string) int {
		req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(`{"name":"b9","subnet":"10.9.0.0/24"}`))
		if header != "" {
			req.Header.Set(uiHeader, header)
		}
		resp, err := browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		method, path, header string
		want                 int
	}{
		{"GET", "/api/v1/devices", "", 200},
		{"POST", "/api/v1/sites", "", 401}, // a cross-site form cannot add the header
		{"POST", "/api/v1/sites", "1", 201},
		{"GET", "/ui/", "", 200},
		{"GET", "/ui/app.js", "", 200},
		{"GET", "/", "", 302},
		{"GET", "/api/v1/openapi.json", "", 200},
	} {
		if got := get(c.method, c.path, c.header); got != c.want {
			t.Errorf("%s %s (header %q): %d, want %d", c.method, c.path, c.header, got, c.want)
		}
	}
	// The session cookie is not the token: it cannot be used as a bearer.
	if resp, _ := call(t, ts, "GET", "/api/v1/status", cs[0].Value, ""); resp.StatusCode != 401 {
		t.Errorf("cookie value accepted as a bearer token")
	}
	if resp, err = browser.PostForm(ts.URL+"/ui/logout", nil); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := get("GET", "/api/v1/devices", ""); got != 401 {
		t.Errorf("after logout: %d", got)
	}
}

// TestOpenAPICoversEveryRoute keeps the description in step with the API:
// every route registered under /api/ is in it, with its method.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	// Routes of this package and of the services that mount theirs (the
	// provisioner's Mount, the appliance's site certificate), as registered.
	var routes []string
	for _, src := range []string{"api.go", "../../provisioner/handlers.go", "../sitecert.go"} {
		routes = append(routes, registered(t, src)...)
	}
	for _, r := range routes {
		method, path, _ := strings.Cut(r, " ")
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("openapi.json lacks %s", r)
		}
	}
}

var routePattern = regexp.MustCompile(`Handle(?:Func)?\("((?:GET|POST|PUT|DELETE) /api/[^"]+)"`)

func registered(t *testing.T, file string) []string {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range routePattern.FindAllStringSubmatch(string(src), -1) {
		out = append(out, m[1])
	}
	if len(out) == 0 {
		t.Fatalf("%s registers no /api/ route", file)
	}
	return out
}
