package api

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/branchbox/branchbox/appliance/apiclient"
	"github.com/branchbox/branchbox/internal/selfsigned"
)

// Files the API keeps in data_dir; apiclient reads the token and the
// certificate.
const (
	TokenFile = apiclient.TokenFile
	certFile  = apiclient.CertFile
	keyFile   = "api-key.pem"
)

// LoadOrCreateToken reads data_dir/api.token, creating it (0600) on first
// start.
func LoadOrCreateToken(dataDir string) (string, error) {
	path := filepath.Join(dataDir, TokenFile)
	b, err := os.ReadFile(path)
	if err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("api token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("api token: %w", err)
	}
	tok := hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("api token: %w", err)
	}
	return tok, nil
}

// Listen opens the API's listener: plain HTTP on loopback, HTTPS with a
// self-signed certificate kept in data_dir anywhere else (ctl pins it).
func Listen(addr, dataDir string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if apiclient.IsLoopback(addr) {
		return ln, nil
	}
	cert, err := selfsigned.LoadOrCreate(filepath.Join(dataDir, certFile), filepath.Join(dataDir, keyFile), "branchbox admin API", addr)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), nil
}
