package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/certgen"
	"github.com/branchbox/branchbox/tests/amtsim/firmware"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
	"github.com/open-amt-cloud-toolkit/go-wsman-messages/pkg/amt"
)

// lockedBuffer collects a child's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "amtsim")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startServe runs "amtsim serve" and returns its address and stderr.
func startServe(t *testing.T, bin string, args ...string) (string, *lockedBuffer) {
	t.Helper()
	addr, stderr, _ := startServeLines(t, bin, args...)
	return addr, stderr
}

// startServeLines is startServe that also returns the lines printed before
// the device line (the other endpoints' addresses).
func startServeLines(t *testing.T, bin string, args ...string) (string, *lockedBuffer, []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if strings.Contains(stderr.String(), "DATA RACE") {
			t.Errorf("amtsim reported a data race:\n%s", stderr.String())
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	re := regexp.MustCompile(`listening on (\S+)`)
	var before []string
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("amtsim serve exited after %q; stderr:\n%s", before, stderr.String())
			}
			if m := re.FindStringSubmatch(l); m != nil {
				go func() {
					for range lines {
					}
				}()
				return m[1], stderr, before
			}
			before = append(before, l)
		case <-timeout:
			t.Fatalf("amtsim serve did not start; stderr:\n%s", stderr.String())
		}
	}
}

func writePEM(t *testing.T, dir, name string, certs []*x509.Certificate) string {
	t.Helper()
	c := &certgen.Chain{Certs: certs}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, c.ChainPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// sClient runs openssl s_client presenting leaf+key with the rest of the
// chain, sends a WS-Man Get of AMT_GeneralSettings and returns the output.
func sClient(t *testing.T, addr string, chain *certgen.Chain, rest []*x509.Certificate) (string, error) {
	t.Helper()
	dir := t.TempDir()
	// Security level 0 so that openssl itself sends SHA-1 and 1024-bit chains:
	// the device, not the client, must refuse them.
	args := []string{"s_client", "-connect", addr, "-ign_eof", "-cipher", "DEFAULT:@SECLEVEL=0"}
	if chain != nil {
		key, err := chain.LeafKeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		keyFile := filepath.Join(dir, "key.pem")
		if err := os.WriteFile(keyFile, key, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-cert", writePEM(t, dir, "leaf.pem", chain.Certs[:1]), "-key", keyFile)
		if len(rest) > 0 {
			args = append(args, "-cert_chain", writePEM(t, dir, "chain.pem", rest))
		}
	}
	body := amt.NewMessages().GeneralSettings.Get()
	req := fmt.Sprintf("POST /wsman HTTP/1.1\r\nHost: %s\r\nContent-Type: application/soap+xml; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", addr, len(body), body)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openssl", args...)
	cmd.Stdin = strings.NewReader(req)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The contract's probe: amtsim serve + openssl s_client -cert -key accepts a
// good provisioning chain and refuses each bad one, naming the rule.
func TestServeWithOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl not installed (Debian package openssl)")
	}
	root, err := certgen.Build(certgen.CA("amtsim Test Root"))
	if err != nil {
		t.Fatal(err)
	}
	rootHash := hex.EncodeToString(firmware.Digest(hello.SHA256, root.Certs[0].Raw))
	bin := buildBinary(t)
	addr, stderr := startServe(t, bin, "--domain", "example.com", "--custom-root-hash", rootHash, "--amt-version", "16.1")

	leaf := certgen.Leaf("prov.example.com")
	noOID := leaf
	noOID.UnknownEKU = nil
	noServerAuth := leaf
	noServerAuth.EKU = nil
	sha1Int := certgen.CA("SHA-1 Issuing CA")
	sha1Int.SigAlg = x509.SHA1WithRSA
	weakInt := certgen.CA("Weak Issuing CA")
	weakInt.Bits = 1024
	issuing := certgen.CA("Issuing CA")
	bigLeaf := leaf
	bigLeaf.Bits = 4096
	expiredLeaf := leaf
	expiredLeaf.NotBefore, expiredLeaf.NotAfter = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)

	extend := func(specs ...certgen.Spec) *certgen.Chain {
		c, err := certgen.Extend(root, specs...)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	foreign, err := certgen.Build(leaf, issuing, certgen.CA("Some Other Root"))
	if err != nil {
		t.Fatal(err)
	}
	good := extend(leaf, issuing)
	tests := []struct {
		name  string
		chain *certgen.Chain
		rest  []*x509.Certificate // nil: chain.Certs[1:]
		rule  firmware.Rule       // "" = accepted
	}{
		{"good chain", good, nil, ""},
		{"no Intel OID or OU", extend(noOID, issuing), nil, firmware.RuleIntelOIDOrOU},
		{"no serverAuth EKU", extend(noServerAuth, issuing), nil, firmware.RuleServerAuthEKU},
		{"other domain", extend(certgen.Leaf("prov.other.com"), issuing), nil, firmware.RuleDomainSuffix},
		{"untrusted root", foreign, nil, firmware.RuleRootHash},
		{"SHA-1 intermediate", extend(leaf, sha1Int), nil, firmware.RuleSignatureHash},
		{"1024-bit intermediate", extend(leaf, weakInt), nil, firmware.RuleKeySize},
		{"4096-bit leaf", extend(bigLeaf, issuing), nil, firmware.RuleKeySize},
		{"leaf expired in 2021", extend(expiredLeaf, issuing), nil, firmware.RuleValidity},
		{"five certificates", extend(leaf, certgen.CA("I1"), certgen.CA("I2"), certgen.CA("I3")), nil, firmware.RuleChainLength},
		{"root before intermediate", good, []*x509.Certificate{good.Certs[2], good.Certs[1]}, firmware.RuleChainOrder},
		{"no client certificate", nil, nil, "no-certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rest := tc.rest
			if rest == nil && tc.chain != nil {
				rest = tc.chain.Certs[1:]
			}
			before := len(stderr.String())
			out, err := sClient(t, addr, tc.chain, rest)
			accepted := strings.Contains(out, "DigestRealm")
			if tc.rule == "" {
				if !accepted {
					t.Fatalf("good chain refused (%v):\n%s\nserver:\n%s", err, out, stderr.String()[before:])
				}
				return
			}
			if accepted {
				t.Fatalf("bad chain accepted:\n%s", out)
			}
			if tc.rule == "no-certificate" {
				return
			}
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(stderr.String()[before:], "rule="+string(tc.rule)) {
				if time.Now().After(deadline) {
					t.Fatalf("server did not log rule %s:\n%s", tc.rule, stderr.String()[before:])
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
