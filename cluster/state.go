package cluster

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// auditCap bounds the audit ring kept in the replicated state so snapshots
// stay small; older entries are dropped oldest first.
const auditCap = 10000

// historyCap bounds the per-device history.
const historyCap = 50

// state is the whole replicated data set. It is only touched under the
// store's lock; Apply is the only writer.
type state struct {
	Sites    map[string]Site    `json:"sites"`
	Profiles map[string]Profile `json:"profiles"`
	Devices  map[string]Device  `json:"devices"`
	OTPs     map[string]OTP     `json:"otps"`
	PSKs     map[string]PSKPair `json:"psks"`
	Leases   map[string]Lease   `json:"leases"` // by IP
	Audit    []AuditEntry       `json:"audit"`
	AuditSeq uint64             `json:"audit_seq"`

	Authorities map[string]Authority    `json:"authorities"` // see authority.go
	Members     map[string]MemberRecord `json:"members"`     // see members.go

	// bound indexes the bound lease of each (site, client) so a commit
	// does not scan every lease; it is derived, never serialised.
	bound map[clientKey]string
	// changed collects the addresses whose lease an apply set or removed,
	// for the store's lease feed; never serialised.
	changed []string
}

type clientKey struct{ site, client string }

// clone copies the state for a snapshot that is encoded while apply goes
// on. Maps are copied; records are values that apply replaces whole,
// except the audit trail and device histories, which apply trims in place
// and so are copied too. The derived index is left out, as in a snapshot.
func (s *state) clone() *state {
	c := *s
	c.Sites = maps.Clone(s.Sites)
	c.Profiles = maps.Clone(s.Profiles)
	c.OTPs = maps.Clone(s.OTPs)
	c.PSKs = maps.Clone(s.PSKs)
	c.Leases = maps.Clone(s.Leases)
	c.Authorities = maps.Clone(s.Authorities)
	c.Members = maps.Clone(s.Members)
	c.Audit = slices.Clone(s.Audit)
	c.Devices = make(map[string]Device, len(s.Devices))
	for k, d := range s.Devices {
		d.History = slices.Clone(d.History)
		c.Devices[k] = d
	}
	c.bound, c.changed = nil, nil
	return &c
}

// reindex rebuilds the derived indexes after a restore.
func (s *state) reindex() {
	s.bound = make(map[clientKey]string, len(s.Leases))
	for ip, l := range s.Leases {
		if l.State == LeaseBound {
			s.bound[clientKey{l.Site, l.ClientID}] = ip
		}
	}
}

func (s *state) dropLease(ip string) {
	l, ok := s.Leases[ip]
	if !ok {
		return
	}
	k := clientKey{l.Site, l.ClientID}
	if s.bound[k] == ip {
		delete(s.bound, k)
	}
	delete(s.Leases, ip)
	s.changed = append(s.changed, ip)
}

func newState() *state {
	return &state{
		Sites:    map[string]Site{},
		Profiles: map[string]Profile{},
		Devices:  map[string]Device{},
		OTPs:     map[string]OTP{},
		PSKs:     map[string]PSKPair{},
		Leases:   map[string]Lease{},
		bound:    map[clientKey]string{},

		Authorities: map[string]Authority{},
		Members:     map[string]MemberRecord{},
	}
}

// apply runs one decoded command against the state and returns the
// business outcome. It must be deterministic: no clocks, no randomness.
func (s *state) apply(cmd Command) error {
	switch c := cmd.(type) {
	case *PutSite:
		if c.Site.Name == "" {
			return fmt.Errorf("site: empty name")
		}
		s.Sites[c.Site.Name] = c.Site
	case *DeleteSite:
		if _, ok := s.Sites[c.Name]; !ok {
			return fmt.Errorf("site %q: %w", c.Name, ErrNotFound)
		}
		delete(s.Sites, c.Name)
	case *PutProfile:
		if c.Profile.Name == "" {
			return fmt.Errorf("profile: empty name")
		}
		s.Profiles[c.Profile.Name] = c.Profile
	case *DeleteProfile:
		if _, ok := s.Profiles[c.Name]; !ok {
			return fmt.Errorf("profile %q: %w", c.Name, ErrNotFound)
		}
		delete(s.Profiles, c.Name)
	case *DeviceUpdate:
		return s.updateDevice(c)
	case *PutMember:
		return s.putMember(c)
	case *DeleteDevice:
		if _, ok := s.Devices[c.UUID]; !ok {
			return fmt.Errorf("device %q: %w", c.UUID, ErrNotFound)
		}
		delete(s.Devices, c.UUID)
	case *CreateOTP:
		if old, ok := s.OTPs[c.OTP.UUID]; ok && old.ConsumedBy == "" && old.Expires.After(c.Time) && old.Created.After(c.OTP.Created) {
			return fmt.Errorf("otp for %q: %w", c.OTP.UUID, ErrConflict)
		}
		s.OTPs[c.OTP.UUID] = c.OTP
	case *ConsumeOTP:
		o, ok := s.OTPs[c.UUID]
		switch {
		case c.RequestID == "":
			return fmt.Errorf("otp for %q: consume needs a request id", c.UUID)
		case !ok:
			return fmt.Errorf("otp for %q: %w", c.UUID, ErrNotFound)
		case o.ConsumedBy == c.RequestID:
			return nil // a retried apply of the consume that won
		case o.ConsumedBy != "":
			return fmt.Errorf("otp for %q: %w", c.UUID, ErrConsumed)
		case !c.Time.Before(o.Expires):
			return fmt.Errorf("otp for %q: %w", c.UUID, ErrExpired)
		}
		o.ConsumedBy, o.ConsumedAt = c.RequestID, c.Time
		s.OTPs[c.UUID] = o
	case *PutPSK:
		if _, ok := s.PSKs[c.Pair.PID]; ok {
			return fmt.Errorf("pid %q: %w", c.Pair.PID, ErrConflict)
		}
		s.PSKs[c.Pair.PID] = c.Pair
	case *UsePSK:
		p, ok := s.PSKs[c.PID]
		switch {
		case !ok:
			return fmt.Errorf("pid %q: %w", c.PID, ErrNotFound)
		case p.UsedBy != "" && p.UsedBy != c.UUID:
			return fmt.Errorf("pid %q: %w", c.PID, ErrConflict)
		}
		p.UsedBy = c.UUID
		s.PSKs[c.PID] = p
	case *LeaseCAS:
		return s.leaseCAS(c)
	case *LeaseRelease:
		l, ok := s.Leases[c.IP]
		if !ok || l.ClientID != c.ClientID {
			return fmt.Errorf("lease %s: %w", c.IP, ErrNotFound)
		}
		s.dropLease(c.IP)
	case *LeaseExpire:
		for ip, l := range s.Leases {
			if !l.Expires.After(c.Time) {
				s.dropLease(ip)
			}
		}
	case *CreateAuthority:
		return s.createAuthority(c)
	case *Audit:
		s.AuditSeq++
		e := c.Entry
		e.Seq = s.AuditSeq
		s.Audit = append(s.Audit, e)
		if over := len(s.Audit) - auditCap; over > 0 {
			s.Audit = slices.Delete(s.Audit, 0, over)
		}
	default:
		return fmt.Errorf("unhandled command %T", cmd)
	}
	return nil
}

func (s *state) updateDevice(c *DeviceUpdate) error {
	if c.UUID == "" {
		return fmt.Errorf("device: empty uuid")
	}
	d, ok := s.Devices[c.UUID]
	if ok && slices.Contains(c.IfStateNot, d.State) {
		return fmt.Errorf("device %q is %s: %w", c.UUID, d.State, ErrConflict)
	}
	if !ok {
		d = Device{UUID: c.UUID, State: DeviceSeen}
	}
	setIf := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	setIf(&d.Site, c.Site)
	setIf(&d.FQDN, c.FQDN)
	setIf(&d.Hostname, c.Hostname)
	setIf(&d.Profile, c.Profile)
	setIf(&d.State, c.State)
	setIf(&d.AMTVersion, c.AMTVersion)
	setIf(&d.IP, c.IP)
	setIf(&d.PID, c.PID)
	if c.Hashes != nil {
		d.Hashes = slices.Clone(c.Hashes)
	}
	if c.LastError != nil {
		d.LastError = *c.LastError
	}
	if c.Inventoried {
		d.Inventoried = true
	}
	d.Updated = c.Time
	if c.Event.State != "" || c.Event.Step != "" {
		ev := c.Event
		if ev.Time.IsZero() {
			ev.Time = c.Time
		}
		d.History = append(d.History, ev)
		if over := len(d.History) - historyCap; over > 0 {
			d.History = slices.Delete(d.History, 0, over)
		}
	}
	s.Devices[c.UUID] = d
	return nil
}

func (s *state) leaseCAS(c *LeaseCAS) error {
	l := c.Lease
	if _, err := netip.ParseAddr(l.IP); err != nil {
		return fmt.Errorf("lease ip %q: %w", l.IP, err)
	}
	if l.ClientID == "" || l.Site == "" {
		return fmt.Errorf("lease %s: client id and site are required", l.IP)
	}
	if cur, ok := s.Leases[l.IP]; ok && cur.ClientID != l.ClientID && cur.Expires.After(c.Time) {
		return fmt.Errorf("lease %s held by another client: %w", l.IP, ErrConflict)
	}
	if l.State == "" {
		l.State = LeaseBound
	}
	if cur, ok := s.Leases[l.IP]; ok {
		s.dropLease(cur.IP)
	}
	if l.State == LeaseBound {
		k := clientKey{l.Site, l.ClientID}
		if old, ok := s.bound[k]; ok && old != l.IP {
			s.dropLease(old)
		}
		s.bound[k] = l.IP
	}
	s.Leases[l.IP] = l
	s.changed = append(s.changed, l.IP)
	return nil
}

// applyBatch applies each item in order and returns each one's outcome.
func (s *state) applyBatch(c *LeaseBatch) []error {
	out := make([]error, len(c.Items))
	for i := range c.Items {
		out[i] = s.leaseCAS(&c.Items[i])
	}
	return out
}

// encodeCommand frames a command as one type byte and a JSON body. JSON
// keeps the log readable in a debugger and lets fields be added without a
// version bump; the version lives in the body.
func encodeCommand(cmd Command) ([]byte, error) {
	if bc, ok := cmd.(binaryEncoder); ok {
		return bc.appendBinary([]byte{byte(cmd.Type())}), nil
	}
	body, err := json.Marshal(struct {
		V   int     `json:"v"`
		Cmd Command `json:"c"`
	}{1, cmd})
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", cmd, err)
	}
	return append([]byte{byte(cmd.Type())}, body...), nil
}

var commandFactories = map[CmdType]func() Command{
	TypePutSite:         func() Command { return &PutSite{} },
	TypeDeleteSite:      func() Command { return &DeleteSite{} },
	TypePutProfile:      func() Command { return &PutProfile{} },
	TypeDeleteProfile:   func() Command { return &DeleteProfile{} },
	TypeDeviceUpdate:    func() Command { return &DeviceUpdate{} },
	TypeDeleteDevice:    func() Command { return &DeleteDevice{} },
	TypeCreateOTP:       func() Command { return &CreateOTP{} },
	TypeConsumeOTP:      func() Command { return &ConsumeOTP{} },
	TypePutPSK:          func() Command { return &PutPSK{} },
	TypeUsePSK:          func() Command { return &UsePSK{} },
	TypeLeaseCAS:        func() Command { return &LeaseCAS{} },
	TypeLeaseBatch:      func() Command { return &LeaseBatch{} },
	TypeLeaseRelease:    func() Command { return &LeaseRelease{} },
	TypeLeaseExpire:     func() Command { return &LeaseExpire{} },
	TypeAudit:           func() Command { return &Audit{} },
	TypeCreateAuthority: func() Command { return &CreateAuthority{} },
	TypePutMember:       func() Command { return &PutMember{} },
}

// errSkip marks an unknown command whose type carries IgnoreUnknown.
var errSkip = fmt.Errorf("unknown ignorable command")

func decodeCommand(b []byte) (Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("empty log entry")
	}
	t := CmdType(b[0])
	mk, ok := commandFactories[t&^IgnoreUnknown]
	if !ok {
		if t&IgnoreUnknown != 0 {
			return nil, errSkip
		}
		return nil, fmt.Errorf("unknown command type %d", t)
	}
	cmd := mk()
	if bc, ok := cmd.(binaryDecoder); ok && len(b) > 1 && b[1] != '{' {
		if err := bc.decodeBinary(b[1:]); err != nil {
			return nil, fmt.Errorf("decode command type %d: %w", t, err)
		}
		return cmd, nil
	}
	// One pass: json fills the command the interface already points at.
	// Every entry is decoded on every node, so a second pass over the body
	// showed in DHCP profiles.
	env := struct {
		V   int     `json:"v"`
		Cmd Command `json:"c"`
	}{Cmd: cmd}
	if err := json.Unmarshal(b[1:], &env); err != nil {
		return nil, fmt.Errorf("decode command type %d: %w", t, err)
	}
	if env.V != 1 {
		return nil, fmt.Errorf("command type %d: unsupported version %d", t, env.V)
	}
	return env.Cmd, nil
}

// clone deep-copies what readers may keep, so indexes handed out never
// alias state that Apply mutates.
func cloneDevice(d Device) Device {
	d.Hashes = slices.Clone(d.Hashes)
	d.History = slices.Clone(d.History)
	return d
}

func cloneSite(s Site) Site {
	s.Reservations = slices.Clone(s.Reservations)
	s.DNSServers = slices.Clone(s.DNSServers)
	s.CertKey = slices.Clone(s.CertKey)
	s.AgentToken = slices.Clone(s.AgentToken)
	return s
}
