package wsman

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// digestAuth implements RFC 2617 digest (MD5, qop=auth) as AMT does.
type digestAuth struct {
	mu     sync.Mutex
	nonces map[string]time.Time
}

const nonceLifetime = 5 * time.Minute

// errNoChallenge marks an Authorization header sent without a nonce.
var errNoChallenge = errors.New("digest response without a challenge nonce")

func newDigestAuth() *digestAuth { return &digestAuth{nonces: map[string]time.Time{}} }

func (a *digestAuth) challenge(realm string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	nonce := hex.EncodeToString(b)
	a.mu.Lock()
	now := time.Now()
	for n, t := range a.nonces {
		if now.Sub(t) > nonceLifetime {
			delete(a.nonces, n)
		}
	}
	a.nonces[nonce] = now
	a.mu.Unlock()
	return fmt.Sprintf(`Digest realm="%s", nonce="%s", stale="false", qop="auth"`, realm, nonce)
}

// parseDigest splits `Digest k="v", k=v` into a map.
func parseDigest(h string) (map[string]string, bool) {
	rest, ok := strings.CutPrefix(h, "Digest ")
	if !ok {
		return nil, false
	}
	out := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			return nil, false
		}
		k = strings.TrimSpace(k)
		if strings.HasPrefix(v, `"`) {
			end := strings.Index(v[1:], `"`)
			if end < 0 {
				return nil, false
			}
			out[k], rest = v[1:1+end], v[2+end:]
		} else {
			val, tail, _ := strings.Cut(v, ",")
			out[k], rest = strings.TrimSpace(val), tail
			continue
		}
		rest = strings.TrimPrefix(strings.TrimSpace(rest), ",")
	}
	return out, true
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// verify checks an Authorization header against the users' HA1 secrets and
// returns the authenticated user.
func (a *digestAuth) verify(header, method, realm string, users map[string][]byte) (string, error) {
	p, ok := parseDigest(header)
	if !ok {
		return "", fmt.Errorf("not a digest Authorization header")
	}
	if p["nonce"] == "" {
		return "", errNoChallenge
	}
	if p["realm"] != realm {
		return "", fmt.Errorf("realm %q is not the device realm", p["realm"])
	}
	a.mu.Lock()
	issued, known := a.nonces[p["nonce"]]
	a.mu.Unlock()
	if !known || time.Since(issued) > nonceLifetime {
		return "", fmt.Errorf("unknown or expired nonce")
	}
	ha1, ok := users[p["username"]]
	if !ok {
		return "", fmt.Errorf("user %q not accepted in the device's current state", p["username"])
	}
	ha2 := md5hex(method + ":" + p["uri"])
	var want string
	switch p["qop"] {
	case "auth":
		want = md5hex(hex.EncodeToString(ha1) + ":" + p["nonce"] + ":" + p["nc"] + ":" + p["cnonce"] + ":auth:" + ha2)
	case "":
		want = md5hex(hex.EncodeToString(ha1) + ":" + p["nonce"] + ":" + ha2)
	default:
		return "", fmt.Errorf("qop %q not supported", p["qop"])
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(p["response"]))) != 1 {
		return "", fmt.Errorf("wrong credentials for %q", p["username"])
	}
	return p["username"], nil
}
