package agentapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/internal/httpjson"
)

// Channel binding (README.md, "Authentication"): both ends derive keying
// material from the TLS session and prove with the site token over it, so
// a proof is worth nothing on any other connection and no certificate has
// to be distributed to agents.
const (
	ekmLabel          = "EXPORTER-branchbox-agent"
	ekmLength         = 32
	authScheme        = "Branchbox-Agent"
	serverProofHeader = "Branchbox-Server-Proof"
)

// proofOf is hex(HMAC-SHA256(token, role ‖ ekm)); role is "agent" for the
// agent's proof and "server" for the server's.
func proofOf(token []byte, role string, ekm []byte) string {
	m := hmac.New(sha256.New, token)
	m.Write([]byte(role))
	m.Write(ekm)
	return hex.EncodeToString(m.Sum(nil))
}

// errAuth is the one answer to every failed proof: which part failed is no
// business of whoever is guessing.
var errAuth = errors.New("agent authentication failed")

// caller is an authenticated agent.
type caller struct {
	site        cluster.Site
	serverProof string
}

type callerKey struct{}

func callerOf(r *http.Request) *caller {
	c, _ := r.Context().Value(callerKey{}).(*caller)
	return c
}

// authenticate checks the Authorization header against the site's token
// and this connection's keying material. The error is the answer to give.
func (s *Server) authenticate(r *http.Request) (*caller, int, error) {
	site, proof, ok := parseAuthorization(r.Header.Get("Authorization"))
	if !ok || r.TLS == nil {
		return nil, http.StatusUnauthorized, errAuth
	}
	st, ok := s.o.Store.Site(site)
	if !ok {
		return nil, http.StatusUnauthorized, errAuth
	}
	if len(st.AgentToken) == 0 {
		return nil, http.StatusForbidden, fmt.Errorf("site %q accepts no agents (no agent_token_file)", site)
	}
	token, err := s.o.Store.Unseal(st.AgentToken)
	if err != nil {
		return nil, http.StatusInternalServerError, fmt.Errorf("site %q agent token: %w", site, err)
	}
	ekm, err := r.TLS.ExportKeyingMaterial(ekmLabel, nil, ekmLength)
	if err != nil {
		return nil, http.StatusUnauthorized, errAuth
	}
	got, err := hex.DecodeString(proof)
	want, _ := hex.DecodeString(proofOf(token, "agent", ekm))
	if err != nil || !hmac.Equal(got, want) {
		return nil, http.StatusUnauthorized, errAuth
	}
	return &caller{site: st, serverProof: proofOf(token, "server", ekm)}, 0, nil
}

// parseAuthorization reads `Branchbox-Agent site="NAME", proof="HEX"`.
func parseAuthorization(h string) (site, proof string, ok bool) {
	scheme, rest, found := strings.Cut(strings.TrimSpace(h), " ")
	if !found || !strings.EqualFold(scheme, authScheme) {
		return "", "", false
	}
	for _, kv := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "site":
			site = v
		case "proof":
			proof = v
		}
	}
	return site, proof, site != "" && proof != ""
}

// withAuth authenticates every request before it reaches a handler, and
// signs every answer to an authenticated one.
func (s *Server) withAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, code, err := s.authenticate(r)
		if err != nil {
			if code == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", authScheme)
			}
			s.o.Log.Info("agent refused", "remote", r.RemoteAddr, "path", r.URL.Path, "status", code, "reason", err)
			httpjson.Error(w, code, err)
			return
		}
		w.Header().Set(serverProofHeader, c.serverProof)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}
