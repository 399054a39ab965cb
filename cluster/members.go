package cluster

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// MemberRecord is what a member tells the others about the services it
// runs: where each site's devices reach its provisioner. DNS on every
// member answers ProvisionServer.<domain> from these records.
type MemberRecord struct {
	ID   string `json:"id"`
	Role string `json:"role"`
	// SiteAddrs maps a site name to this member's addresses for it.
	SiteAddrs map[string][]string `json:"site_addrs,omitempty"`
	API       string              `json:"api,omitempty"`
	Updated   time.Time           `json:"updated"`
}

// PutMember records a member's services. Members that run none (a
// witness) still record their role.
type PutMember struct {
	Member MemberRecord `json:"member"`
}

// TypePutMember is advisory: a node that does not know it loses only
// the other members' DNS answers, so it may skip it.
const TypePutMember CmdType = 17

func (PutMember) Type() CmdType { return TypePutMember | IgnoreUnknown }

func (s *state) putMember(c *PutMember) error {
	if c.Member.ID == "" {
		return fmt.Errorf("member: empty id")
	}
	s.Members[c.Member.ID] = c.Member
	return nil
}

// MemberRecords lists every member's record, by id.
func (s *Store) MemberRecords() []MemberRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]MemberRecord, 0, len(s.st.Members))
	for _, id := range slices.Sorted(maps.Keys(s.st.Members)) {
		m := s.st.Members[id]
		m.SiteAddrs = maps.Clone(m.SiteAddrs)
		out = append(out, m)
	}
	return out
}

// MemberRecord returns one member's record.
func (s *Store) MemberRecord(id string) (MemberRecord, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.st.Members[id]
	m.SiteAddrs = maps.Clone(m.SiteAddrs)
	return m, ok
}
