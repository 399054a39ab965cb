package wsman

import (
	"fmt"
	"sync"
)

// DigestAuth answers HTTP digest challenges (RFC 2617, MD5, qop=auth) for
// one user with the same code the Client uses, for callers that carry
// their own requests — the branchbox agent answering LMS as $$OsAdmin.
// Like the Client it keeps the last challenge, so later requests reuse its
// nonce with a rising nonce count. Safe for concurrent use.
type DigestAuth struct {
	user, password string

	mu   sync.Mutex
	chal *challenge
}

// NewDigestAuth answers as user with password.
func NewDigestAuth(user, password string) *DigestAuth {
	return &DigestAuth{user: user, password: password}
}

// String names the user and never the password.
func (d *DigestAuth) String() string { return fmt.Sprintf("digest as %q", d.user) }

// Challenge records the WWW-Authenticate header of a 401.
func (d *DigestAuth) Challenge(wwwAuthenticate string) error {
	c, err := parseChallenge(wwwAuthenticate)
	if err != nil {
		return fmt.Errorf("wsman: %w", err)
	}
	d.mu.Lock()
	d.chal = c
	d.mu.Unlock()
	return nil
}

// Authorization is the header value for one request, or "" before the
// first challenge.
func (d *DigestAuth) Authorization(method, uri string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.chal == nil {
		return ""
	}
	return d.chal.authorize(d.user, d.password, method, uri)
}
