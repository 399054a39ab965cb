package agenttest

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// LMSRequest is one request LMS saw.
type LMSRequest struct {
	User          string // authenticated user, "" if refused
	Authorization string
	Header        http.Header
	Body          string
}

// LMS is a plain-HTTP WS-Man endpoint with RFC 2617 digest (MD5,
// qop=auth), answering each authenticated POST /wsman with an envelope
// naming the user and echoing the body. Answers are chunked, as AMT's are.
type LMS struct {
	Realm string
	Users map[string]string // user → password

	mu       sync.Mutex
	nonces   map[string]bool
	Requests []LMSRequest
}

// NewLMS accepts $$OsAdmin with osPassword and admin with adminPassword.
func NewLMS(osPassword, adminPassword string) *LMS {
	return &LMS{
		Realm:  "Digest:AF541D9BC94CFF7ADFA073F492F355E6",
		Users:  map[string]string{"$$OsAdmin": osPassword, "admin": adminPassword},
		nonces: map[string]bool{},
	}
}

// Serve starts LMS on a Unix socket (unix true, returns "unix:PATH") or on
// loopback TCP (returns host:port).
func (l *LMS) Serve(t testing.TB, unix bool) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(l.handle))
	addr := ""
	if unix {
		path := ShortSocketPath(t, "lms")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener.Close()
		srv.Listener = ln
		addr = "unix:" + path
	}
	srv.Start()
	t.Cleanup(srv.Close)
	if addr == "" {
		addr = srv.Listener.Addr().String()
	}
	return addr
}

// Seen returns the requests so far.
func (l *LMS) Seen() []LMSRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]LMSRequest(nil), l.Requests...)
}

func (l *LMS) handle(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	user := l.verify(r.Header.Get("Authorization"), r.Method)
	l.mu.Lock()
	l.Requests = append(l.Requests, LMSRequest{User: user, Authorization: r.Header.Get("Authorization"), Header: r.Header.Clone(), Body: string(body)})
	l.mu.Unlock()
	w.Header().Set("Server", "Intel(R) Active Management Technology 16.1.25")
	if r.URL.Path != "/wsman" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	if user == "" {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Digest realm="%s", nonce="%s", stale="false", qop="auth"`, l.Realm, l.nonce()))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/soap+xml; charset=UTF-8")
	io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><a:Envelope xmlns:a="http://www.w3.org/2003/05/soap-envelope"><a:Body>`)
	w.(http.Flusher).Flush() // forces chunked transfer encoding
	fmt.Fprintf(w, `<user>%s</user><echo>%d</echo></a:Body></a:Envelope>`, user, len(body))
}

func (l *LMS) nonce() string {
	b := make([]byte, 16)
	rand.Read(b)
	n := hex.EncodeToString(b)
	l.mu.Lock()
	l.nonces[n] = true
	l.mu.Unlock()
	return n
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// verify returns the user a valid Authorization header proves, or "".
func (l *LMS) verify(h, method string) string {
	rest, ok := strings.CutPrefix(h, "Digest ")
	if !ok {
		return ""
	}
	p := map[string]string{}
	for _, kv := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		p[k] = strings.Trim(v, `"`)
	}
	l.mu.Lock()
	known := l.nonces[p["nonce"]]
	l.mu.Unlock()
	pass, user := l.Users[p["username"]], p["username"]
	if !known || pass == "" || p["realm"] != l.Realm || p["uri"] != "/wsman" || p["qop"] != "auth" {
		return ""
	}
	ha1 := md5hex(user + ":" + l.Realm + ":" + pass)
	ha2 := md5hex(method + ":" + p["uri"])
	if p["response"] != md5hex(ha1+":"+p["nonce"]+":"+p["nc"]+":"+p["cnonce"]+":auth:"+ha2) {
		return ""
	}
	return user
}
