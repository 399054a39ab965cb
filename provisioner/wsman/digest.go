package wsman

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
)

// challenge is one parsed WWW-Authenticate: Digest header (RFC 2617).
type challenge struct {
	realm, nonce, opaque, qop, algorithm string
	nc                                   int
}

func parseChallenge(h string) (*challenge, error) {
	h = strings.TrimSpace(h)
	if len(h) < 7 || !strings.EqualFold(h[:7], "digest ") {
		return nil, fmt.Errorf("not a digest challenge: %q", h)
	}
	c := &challenge{}
	for _, kv := range splitParams(h[7:]) {
		k, v, _ := strings.Cut(kv, "=")
		v = strings.Trim(strings.TrimSpace(v), `"`)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "realm":
			c.realm = v
		case "nonce":
			c.nonce = v
		case "opaque":
			c.opaque = v
		case "algorithm":
			c.algorithm = v
		case "qop":
			// A server may offer "auth,auth-int"; only auth is used.
			for _, q := range strings.Split(v, ",") {
				if strings.TrimSpace(q) == "auth" {
					c.qop = "auth"
				}
			}
		}
	}
	if c.nonce == "" {
		return nil, fmt.Errorf("digest challenge without nonce")
	}
	if c.algorithm != "" && !strings.EqualFold(c.algorithm, "MD5") {
		return nil, fmt.Errorf("digest algorithm %q not supported", c.algorithm)
	}
	return c, nil
}

// splitParams splits on commas outside quotes.
func splitParams(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case r == ',' && !quoted:
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// authorize builds the Authorization header for one request.
func (c *challenge) authorize(user, pass, method, uri string) string {
	c.nc++
	ha1 := md5hex(user + ":" + c.realm + ":" + pass)
	ha2 := md5hex(method + ":" + uri)
	var b strings.Builder
	fmt.Fprintf(&b, `Digest username="%s", realm="%s", nonce="%s", uri="%s"`, user, c.realm, c.nonce, uri)
	if c.qop == "auth" {
		cnonce := make([]byte, 8)
		if _, err := rand.Read(cnonce); err != nil {
			panic(fmt.Sprintf("crypto/rand failed: %v", err))
		}
		cn := hex.EncodeToString(cnonce)
		nc := fmt.Sprintf("%08x", c.nc)
		resp := md5hex(ha1 + ":" + c.nonce + ":" + nc + ":" + cn + ":auth:" + ha2)
		fmt.Fprintf(&b, `, response="%s", qop=auth, nc=%s, cnonce="%s"`, resp, nc, cn)
	} else {
		fmt.Fprintf(&b, `, response="%s"`, md5hex(ha1+":"+c.nonce+":"+ha2))
	}
	if c.opaque != "" {
		fmt.Fprintf(&b, `, opaque="%s"`, c.opaque)
	}
	if c.algorithm != "" {
		fmt.Fprintf(&b, `, algorithm=%s`, c.algorithm)
	}
	return b.String()
}
