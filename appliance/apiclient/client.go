// Package apiclient calls a box's admin API the way `branchbox ctl` does:
// it knows where the token and the pinned certificate live in data_dir. It
// imports nothing but the standard library, so the image's boxinit (which
// shows the status banner) can use it without linking the store.
package apiclient

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Client calls the admin API the way `branchbox ctl` does.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// TokenFile is the bearer token's file name inside data_dir.
const TokenFile = "api.token"

// CertFile is the API's self-signed certificate inside data_dir, used when
// it listens beyond loopback; clients pin it.
const CertFile = "api-cert.pem"

// IsLoopback reports whether a listen address only accepts local callers
// (the API then speaks plain HTTP).
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// New reads the token (and, off loopback, the pinned certificate)
// from dataDir.
func New(addr, dataDir string) (*Client, error) {
	tok, err := os.ReadFile(filepath.Join(dataDir, TokenFile))
	if err != nil {
		return nil, fmt.Errorf("reading the API token (is branchbox running with data_dir %s?): %w", dataDir, err)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("api address %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	c := &Client{token: strings.TrimSpace(string(tok)), http: &http.Client{Timeout: 30 * time.Second}}
	if IsLoopback(net.JoinHostPort(host, port)) {
		c.base = "http://" + net.JoinHostPort(host, port)
		return c, nil
	}
	pemBytes, err := os.ReadFile(filepath.Join(dataDir, CertFile))
	if err != nil {
		return nil, fmt.Errorf("reading the API certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	c.http.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	c.base = "https://" + net.JoinHostPort(host, port)
	return c, nil
}

// APIError is a non-2xx answer.
type APIError struct {
	Code     int
	Message  string
	Problems []string
}

func (e *APIError) Error() string {
	if len(e.Problems) > 0 {
		return strings.Join(e.Problems, "\n")
	}
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Code)
}

// Do sends a request and decodes a JSON answer into out (when not nil).
func (c *Client) Do(method, path string, body []byte, out any) error {
	data, _, err := c.Raw(method, path, body)
	if err != nil {
		return err
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = data
		return nil
	}
	return json.Unmarshal(data, out)
}

// Raw sends a request and returns the answer's body and headers as they
// are, for endpoints that return files.
func (c *Client) Raw(method, path string, body []byte) ([]byte, http.Header, error) {
	resp, err := c.send(c.http, method, path, body)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, nil, err
	}
	if err := answerError(resp, data); err != nil {
		return nil, nil, err
	}
	return data, resp.Header, nil
}

// Stream sends a request whose answer is read as it arrives (server-sent
// events, progress lines): no overall timeout. The caller closes the body.
func (c *Client) Stream(method, path string, body []byte) (*http.Response, error) {
	hc := *c.http
	hc.Timeout = 0
	resp, err := c.send(&hc, method, path, body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, answerError(resp, data)
	}
	return resp, nil
}

func (c *Client) send(hc *http.Client, method, path string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("calling the API at %s: %w", c.base, err)
	}
	return resp, nil
}

// answerError is nil for a 2xx answer, else the API's error.
func answerError(resp *http.Response, data []byte) error {
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error    string   `json:"error"`
			Problems []string `json:"problems"`
		}
		json.Unmarshal(data, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &APIError{Code: resp.StatusCode, Message: e.Error, Problems: e.Problems}
	}
	return nil
}
