// Package wsman is the provisioner's WS-Management transport to an AMT
// device: mutual TLS presenting the provisioning chain, HTTP digest with a
// list of candidate credentials, SOAP faults as errors. Message bodies are
// built elsewhere (go-wsman-messages); this package only carries them.
package wsman

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Credential is one user/password pair to answer a digest challenge with.
type Credential struct {
	User, Password string
}

// ErrUnauthorized means every candidate credential was refused.
var ErrUnauthorized = errors.New("wsman: every credential refused (HTTP 401)")

// FaultError is a SOAP fault or a non-200 answer with a readable body.
type FaultError struct {
	Status  int
	Subcode string
	Reason  string
}

func (e *FaultError) Error() string {
	return fmt.Sprintf("wsman: HTTP %d fault %s: %s", e.Status, e.Subcode, e.Reason)
}

// maxResponse caps what one answer may be; AMT answers are a few KB.
const maxResponse = 4 << 20

// ClientCipherSuites are offered to the device. Old firmware speaks only
// RSA key exchange with AES-CBC (MeshCentral limits itself to RSA+AES),
// which Go no longer offers by default, so they are listed explicitly after
// the modern suites.
var ClientCipherSuites = []uint16{
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_RSA_WITH_AES_128_CBC_SHA256,
	tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

// ProvisioningTLS is the client side of Remote Configuration: the device
// is the TLS server and the provisioning chain (leaf first, root last) is
// the client certificate. The device's own certificate is self-signed in
// setup mode and proves nothing, so it is not verified (as MeshCentral);
// the device authenticates us, not the other way round.
func ProvisioningTLS(chainDER [][]byte, key crypto.Signer) *tls.Config {
	cert := &tls.Certificate{Certificate: chainDER, PrivateKey: key}
	return &tls.Config{
		// Always present the chain, whatever CA names the device lists.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		InsecureSkipVerify:   true, //nolint:gosec // see the function comment
		MinVersion:           tls.VersionTLS10,
		CipherSuites:         ClientCipherSuites,
	}
}

// Options configure a Client.
type Options struct {
	// URL of the endpoint, e.g. https://10.1.0.5:16993/wsman.
	URL string
	// TLS is nil for plain HTTP (port 16992).
	TLS *tls.Config
	// Credentials are tried in order when the device asks for digest.
	Credentials []Credential
	// Timeout bounds one request, dial and TLS handshake included.
	Timeout time.Duration
	// Dial, when set, replaces TCP (and TLS) to the URL's host: requests
	// go as plain HTTP/1.1 over the connection it returns, such as a relay
	// the device's host agent holds open. See dialTransport for how such a
	// connection is used and when it is closed.
	Dial func(ctx context.Context) (net.Conn, error)
	// Header is added to every request (Content-Type and Authorization
	// are the client's own).
	Header http.Header
}

// Client talks to one device. It is safe for sequential use by one
// session; the mutex only guards the cached challenge.
type Client struct {
	url     string
	http    *http.Client
	creds   []Credential
	header  http.Header
	timeout time.Duration

	mu     sync.Mutex
	cred   int // index of the credential in use
	chal   *challenge
	server string
}

// New builds a client; nothing is dialled until the first Post.
func New(o Options) *Client {
	if o.Timeout == 0 {
		o.Timeout = 20 * time.Second
	}
	var tr http.RoundTripper
	if o.Dial != nil {
		tr = &dialTransport{dial: o.Dial}
	} else {
		dialer := &net.Dialer{Timeout: o.Timeout}
		tr = &http.Transport{
			DialContext:         dialer.DialContext,
			TLSClientConfig:     o.TLS,
			TLSHandshakeTimeout: o.Timeout,
			MaxConnsPerHost:     1,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		}
	}
	return &Client{url: o.URL, http: &http.Client{Transport: tr, Timeout: o.Timeout}, creds: o.Credentials, header: o.Header.Clone(), timeout: o.Timeout}
}

// Close drops pooled connections, so the next Post makes a fresh handshake.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Server is the last Server header seen; AMT puts its version there.
func (c *Client) Server() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.server
}

// Credential is the credential the device last accepted (zero if none
// was needed).
func (c *Client) Credential() Credential {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.chal == nil || c.cred >= len(c.creds) {
		return Credential{}
	}
	return c.creds[c.cred]
}

// Post sends one envelope and returns the parsed response envelope.
func (c *Client) Post(ctx context.Context, envelope string) (*Node, error) {
	for {
		c.mu.Lock()
		chal, credIdx := c.chal, c.cred
		c.mu.Unlock()

		var auth string
		if chal != nil {
			if credIdx >= len(c.creds) {
				return nil, ErrUnauthorized
			}
			cr := c.creds[credIdx]
			c.mu.Lock()
			auth = chal.authorize(cr.User, cr.Password, http.MethodPost, "/wsman")
			c.mu.Unlock()
		}
		status, hdr, body, err := c.do(ctx, envelope, auth)
		if err != nil {
			return nil, err
		}
		if status == http.StatusUnauthorized {
			next, err := parseChallenge(hdr.Get("WWW-Authenticate"))
			if err != nil {
				return nil, fmt.Errorf("wsman: 401: %w", err)
			}
			c.mu.Lock()
			// A refused answer to a fresh challenge means a wrong
			// password: move on. A first challenge, or a stale nonce
			// after an accepted one, retries the same credential.
			if chal != nil && !strings.EqualFold(strings.TrimSpace(paramOf(hdr.Get("WWW-Authenticate"), "stale")), "true") {
				c.cred++
			}
			c.chal = next
			c.mu.Unlock()
			continue
		}
		return parseResponse(status, body)
	}
}

func paramOf(h, name string) string {
	if len(h) < 7 {
		return ""
	}
	for _, kv := range splitParams(h[7:]) {
		k, v, _ := strings.Cut(kv, "=")
		if strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return ""
}

func (c *Client) do(ctx context.Context, envelope, auth string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader([]byte(envelope)))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("wsman: %w", err)
	}
	for k, vs := range c.header {
		if k != "Content-Type" && k != "Authorization" {
			req.Header[k] = vs
		}
	}
	req.Header.Set("Content-Type", "application/soap+xml; charset=utf-8")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.http.Do(req)
	// crypto/tls reports an alert from the peer as a net.OpError with Op
	// "remote error"; its alert type is not exported.
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return 0, nil, nil, &RefusedError{Alert: op.Err.Error()}
	}
	if err != nil {
		return 0, nil, nil, &TransportError{Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return 0, nil, nil, &TransportError{Err: err}
	}
	if s := resp.Header.Get("Server"); s != "" {
		c.mu.Lock()
		c.server = s
		c.mu.Unlock()
	}
	return resp.StatusCode, resp.Header, body, nil
}

// TransportError is a failure below HTTP: refused, reset, timed out,
// handshake refused. Callers retry these; a device that rebooted or
// dropped an answer looks like this.
type TransportError struct{ Err error }

func (e *TransportError) Error() string { return "wsman: transport: " + e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

// RefusedError is a TLS alert from the device during the handshake: its
// firmware refused the provisioning chain. Retrying cannot help.
type RefusedError struct{ Alert string }

func (e *RefusedError) Error() string {
	return fmt.Sprintf("device refused the provisioning certificate (%s): a firmware rule failed — "+
		"check with `branchbox cert check` against the device's DNS suffix (DHCP option 15 or MEBx PKI suffix), "+
		"and that the root hash is active on the device", e.Alert)
}

// IsTransient reports whether err is worth retrying.
func IsTransient(err error) bool {
	var te *TransportError
	return errors.As(err, &te)
}

func parseResponse(status int, body []byte) (*Node, error) {
	doc, perr := ParseXML(body)
	if perr == nil {
		if f := doc.Find("Fault"); f != nil {
			reason := f.Value("Text")
			if reason == "" {
				reason = f.Value("Reason")
			}
			sub := ""
			if s := f.Find("Subcode"); s != nil {
				sub = s.Value("Value")
			}
			return nil, &FaultError{Status: status, Subcode: sub, Reason: reason}
		}
	}
	if status != http.StatusOK {
		return nil, &FaultError{Status: status, Reason: strings.TrimSpace(string(truncate(body, 200)))}
	}
	if perr != nil {
		return nil, fmt.Errorf("wsman: response: %w", perr)
	}
	return doc, nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
