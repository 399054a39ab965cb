package cluster

import (
	"errors"
	"time"
)

// CmdType is the first byte of every raft log entry. The high bit marks a
// command that older nodes may skip when they do not know it, so new
// command types can ship in a rolling upgrade.
type CmdType uint8

// IgnoreUnknown is or-ed into a CmdType that is safe to skip.
const IgnoreUnknown CmdType = 0x80

// Command types. Values are part of the on-disk format: never renumber.
const (
	TypePutSite         CmdType = 1
	TypeDeleteSite      CmdType = 2
	TypePutProfile      CmdType = 3
	TypeDeleteProfile   CmdType = 4
	TypeDeviceUpdate    CmdType = 5
	TypeDeleteDevice    CmdType = 6
	TypeCreateOTP       CmdType = 7
	TypeConsumeOTP      CmdType = 8
	TypePutPSK          CmdType = 9
	TypeUsePSK          CmdType = 10
	TypeLeaseCAS        CmdType = 11
	TypeLeaseRelease    CmdType = 12
	TypeLeaseExpire     CmdType = 13
	TypeAudit           CmdType = 14
	TypeLeaseBatch      CmdType = 15
	TypeCreateAuthority CmdType = 16 // authority.go
)

// Apply outcomes that are business answers rather than failures.
var (
	ErrConflict = errors.New("conflict")
	ErrNotFound = errors.New("not found")
	ErrConsumed = errors.New("one-time password already consumed")
	ErrExpired  = errors.New("expired")
)

// Command is one typed, versioned state change. Every timestamp a command
// needs is stamped by the proposer, so Apply is deterministic on all nodes.
type Command interface {
	Type() CmdType
}

// PutSite creates or replaces a site.
type PutSite struct {
	Site Site      `json:"site"`
	Time time.Time `json:"time"`
}

// DeleteSite removes a site by name.
type DeleteSite struct {
	Name string    `json:"name"`
	Time time.Time `json:"time"`
}

// PutProfile creates or replaces a profile.
type PutProfile struct {
	Profile Profile   `json:"profile"`
	Time    time.Time `json:"time"`
}

// DeleteProfile removes a profile by name.
type DeleteProfile struct {
	Name string    `json:"name"`
	Time time.Time `json:"time"`
}

// DeviceUpdate creates a device or changes it. Empty fields leave the
// stored value alone. When IfStateNot is set and the stored state is one
// of its values, Apply answers ErrConflict and changes nothing — that is
// how two hellos for one device start only one session.
type DeviceUpdate struct {
	UUID        string      `json:"uuid"`
	Site        string      `json:"site,omitempty"`
	FQDN        string      `json:"fqdn,omitempty"`
	Hostname    string      `json:"hostname,omitempty"`
	Profile     string      `json:"profile,omitempty"`
	State       string      `json:"state,omitempty"`
	AMTVersion  string      `json:"amt_version,omitempty"`
	IP          string      `json:"ip,omitempty"`
	Hashes      []string    `json:"hashes,omitempty"`
	PID         string      `json:"pid,omitempty"`
	LastError   *string     `json:"last_error,omitempty"`
	Inventoried bool        `json:"inventoried,omitempty"`
	IfStateNot  []string    `json:"if_state_not,omitempty"`
	Event       DeviceEvent `json:"event"`
	Time        time.Time   `json:"time"`
}

// DeleteDevice forgets a device.
type DeleteDevice struct {
	UUID string    `json:"uuid"`
	Time time.Time `json:"time"`
}

// CreateOTP registers a one-time password for a device, replacing any
// unconsumed one.
type CreateOTP struct {
	OTP  OTP       `json:"otp"`
	Time time.Time `json:"time"`
}

// ConsumeOTP marks a device's OTP used. The first consume wins; a replay of
// the same RequestID (a retry after ErrLeadershipLost) succeeds again, any
// other request gets ErrConsumed.
type ConsumeOTP struct {
	UUID      string    `json:"uuid"`
	RequestID string    `json:"request_id"`
	Time      time.Time `json:"time"`
}

// PutPSK stores a PID/PPS pair.
type PutPSK struct {
	Pair PSKPair   `json:"pair"`
	Time time.Time `json:"time"`
}

// UsePSK records which device used a PID.
type UsePSK struct {
	PID  string    `json:"pid"`
	UUID string    `json:"uuid"`
	Time time.Time `json:"time"`
}

// LeaseCAS binds Lease.IP to Lease.ClientID. It succeeds only when the
// address is free, expired at Time, or already held by the same client;
// otherwise ErrConflict. Any other lease the client holds in the same site
// is dropped, so a client owns at most one address per site.
type LeaseCAS struct {
	Lease Lease     `json:"lease"`
	Time  time.Time `json:"time"`
}

// LeaseBatch is several LeaseCAS applied in order in one raft entry, each
// with its own outcome. The store builds it from concurrent LeaseCAS
// calls (see batcher.go); callers never propose it themselves.
type LeaseBatch struct {
	Items []LeaseCAS `json:"items"`
}

// LeaseRelease frees an address if ClientID still holds it.
type LeaseRelease struct {
	IP       string    `json:"ip"`
	ClientID string    `json:"client_id"`
	Time     time.Time `json:"time"`
}

// LeaseExpire removes every lease that expired at or before Time. The
// leader proposes it; followers never expire by their own clocks.
type LeaseExpire struct {
	Time time.Time `json:"time"`
}

// Audit appends to the audit log.
type Audit struct {
	Entry AuditEntry `json:"entry"`
}

func (PutSite) Type() CmdType       { return TypePutSite }
func (DeleteSite) Type() CmdType    { return TypeDeleteSite }
func (PutProfile) Type() CmdType    { return TypePutProfile }
func (DeleteProfile) Type() CmdType { return TypeDeleteProfile }
func (DeviceUpdate) Type() CmdType  { return TypeDeviceUpdate }
func (DeleteDevice) Type() CmdType  { return TypeDeleteDevice }
func (CreateOTP) Type() CmdType     { return TypeCreateOTP }
func (ConsumeOTP) Type() CmdType    { return TypeConsumeOTP }
func (PutPSK) Type() CmdType        { return TypePutPSK }
func (UsePSK) Type() CmdType        { return TypeUsePSK }
func (LeaseCAS) Type() CmdType      { return TypeLeaseCAS }
func (LeaseBatch) Type() CmdType    { return TypeLeaseBatch }
func (LeaseRelease) Type() CmdType  { return TypeLeaseRelease }
func (LeaseExpire) Type() CmdType   { return TypeLeaseExpire }
func (Audit) Type() CmdType         { return TypeAudit | IgnoreUnknown }
