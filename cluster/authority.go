package cluster

import (
	"fmt"
	"time"
)

// Authority is a certificate authority the cluster issues with. Every node
// must sign with the same one, so it lives in the replicated state: the
// certificate in the clear, the private key sealed.
type Authority struct {
	Name    string    `json:"name"`
	CertPEM string    `json:"cert_pem"`
	Key     Sealed    `json:"key"`
	Created time.Time `json:"created"`
}

// CreateAuthority stores a new authority. The first create of a name wins;
// any later one answers ErrConflict and changes nothing, so nodes that
// race to make the same authority all end up issuing with the winner's.
type CreateAuthority struct {
	Authority Authority `json:"authority"`
	Time      time.Time `json:"time"`
}

func (CreateAuthority) Type() CmdType { return TypeCreateAuthority }

func (s *state) createAuthority(c *CreateAuthority) error {
	a := c.Authority
	if a.Name == "" || a.CertPEM == "" || len(a.Key) == 0 {
		return fmt.Errorf("authority %q: name, certificate and key are required", a.Name)
	}
	if _, ok := s.Authorities[a.Name]; ok {
		return fmt.Errorf("authority %q: %w", a.Name, ErrConflict)
	}
	s.Authorities[a.Name] = a
	return nil
}

// Authority returns a certificate authority by name.
func (s *Store) Authority(name string) (Authority, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.st.Authorities[name]
	a.Key = append(Sealed(nil), a.Key...)
	return a, ok
}
