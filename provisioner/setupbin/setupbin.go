// Package setupbin writes (and reads back) the USB provisioning file
// `setup.bin` that the BIOS of an AMT machine in factory mode consumes
// during POST (amt-protocol.md §5.2): one record per machine, carrying
// MEBx passwords and either a TLS-PSK PID/PPS pair or, for bare-metal
// Remote Configuration, the PKI DNS suffix, a custom root hash and the
// setup server's address.
package setupbin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

const chunk = 512

// fileTypeV3 is the version-3 file GUID in its on-disk byte order; v3 is
// the first that accepts SHA-256 custom hashes.
var fileTypeV3 = [16]byte{0xa7, 0xf7, 0xf6, 0xc6, 0x89, 0xc4, 0xf6, 0x47, 0x93, 0xed, 0xe2, 0xe5, 0x02, 0x0d, 0xa5, 0x1d}

// Header flags.
const flagDoNotConsume = 1

// Data record flags.
const (
	recordValid     = 1
	recordScrambled = 2
)

// Var identifies one setting: module and variable id.
type Var struct{ Module, ID uint16 }

// Settings used here (module 1: MEBx, module 2: AMT setup).
var (
	CurrentMEBxPassword = Var{1, 1}
	NewMEBxPassword     = Var{1, 2}
	ManageabilitySel    = Var{1, 3}
	PID                 = Var{2, 1}
	PPS                 = Var{2, 2}
	PKIDNSSuffix        = Var{2, 3}
	ConfigServerFQDN    = Var{2, 4}
	CustomHash          = Var{2, 8}
	ServerAddress       = Var{2, 17}
	ServerPort          = Var{2, 18}
	ProvisioningStart   = Var{2, 28}
)

// Entry is one setting's raw value.
type Entry struct {
	Var   Var
	Value []byte
}

// Record is the settings for one machine.
type Record []Entry

// File is a whole setup.bin.
type File struct {
	// Consume: when false the BIOS leaves records unused, so one file
	// provisions any number of machines with the same values.
	Consume   bool
	Scrambled bool
	Records   []Record
}

// Marshal encodes the file: a 512-byte header chunk, then one 512-byte
// chunk per record.
func (f File) Marshal() ([]byte, error) {
	if len(f.Records) == 0 {
		return nil, errors.New("setup.bin: no records")
	}
	modules := map[uint16]bool{}
	for _, r := range f.Records {
		for _, e := range r {
			modules[e.Var.Module] = true
		}
	}
	ids := make([]uint16, 0, len(modules))
	for m := range modules {
		ids = append(ids, m)
	}
	slices.Sort(ids)

	out := make([]byte, chunk, chunk*(1+len(f.Records)))
	copy(out[0:16], fileTypeV3[:])
	le := binary.LittleEndian
	le.PutUint16(out[16:], 1)
	le.PutUint16(out[18:], uint16(42+2*len(ids)))
	le.PutUint32(out[20:], 0)
	out[24], out[25] = 3, 0
	if !f.Consume {
		le.PutUint16(out[26:], flagDoNotConsume)
	}
	le.PutUint32(out[28:], uint32(len(f.Records)))
	le.PutUint32(out[32:], 0)
	le.PutUint16(out[36:], 1)
	for i, m := range ids {
		le.PutUint16(out[40+2*i:], m)
	}
	for i, r := range f.Records {
		rec, err := marshalRecord(r, uint32(i+1), f.Scrambled)
		if err != nil {
			return nil, fmt.Errorf("setup.bin: record %d: %w", i+1, err)
		}
		out = append(out, rec...)
	}
	return out, nil
}

func marshalRecord(r Record, number uint32, scramble bool) ([]byte, error) {
	entries := slices.Clone(r)
	// The BIOS wants (module, variable) order; that also puts the start
	// flag 2.28 after the suffix, FQDN and address it depends on.
	slices.SortStableFunc(entries, func(a, b Entry) int {
		if a.Var.Module != b.Var.Module {
			return int(a.Var.Module) - int(b.Var.Module)
		}
		return int(a.Var.ID) - int(b.Var.ID)
	})
	b := make([]byte, chunk)
	le := binary.LittleEndian
	le.PutUint32(b[0:], 1)
	flags := uint32(recordValid)
	if scramble {
		flags |= recordScrambled
	}
	le.PutUint32(b[4:], flags)
	le.PutUint16(b[16:], 1)
	le.PutUint16(b[18:], 24)
	le.PutUint32(b[20:], number)
	p := 24
	for _, e := range entries {
		n := 8 + len(e.Value)
		n += (4 - n%4) % 4
		// Room must stay for the 2-byte terminating module id 0.
		if p+n+2 > chunk {
			return nil, fmt.Errorf("entries exceed %d bytes", chunk)
		}
		le.PutUint16(b[p:], e.Var.Module)
		le.PutUint16(b[p+2:], e.Var.ID)
		le.PutUint16(b[p+4:], uint16(len(e.Value)))
		copy(b[p+8:], e.Value)
		p += n
	}
	if scramble {
		for i := 24; i < chunk; i++ {
			b[i] += 0x11
		}
	}
	return b, nil
}

// Parse decodes a file written by Marshal (or by Intel/MeshCentral tools
// of the same layout).
func Parse(b []byte) (File, error) {
	var f File
	if len(b) < chunk || len(b)%chunk != 0 {
		return f, fmt.Errorf("setup.bin: %d bytes is not a whole number of 512-byte chunks", len(b))
	}
	if !bytes.Equal(b[0:16], fileTypeV3[:]) {
		return f, errors.New("setup.bin: not a version 3 file")
	}
	le := binary.LittleEndian
	f.Consume = le.Uint16(b[26:])&flagDoNotConsume == 0
	count := int(le.Uint32(b[28:]))
	headerChunks := int(le.Uint16(b[16:]))
	if headerChunks < 1 || len(b) < chunk*(headerChunks+count) {
		return f, fmt.Errorf("setup.bin: %d records do not fit in %d bytes", count, len(b))
	}
	for i := range count {
		rec := slices.Clone(b[chunk*(headerChunks+i) : chunk*(headerChunks+i+1)])
		flags := le.Uint32(rec[4:])
		if flags&recordScrambled != 0 {
			f.Scrambled = true
			for j := 24; j < chunk; j++ {
				rec[j] += 0xEF
			}
		}
		r, err := parseRecord(rec)
		if err != nil {
			return f, fmt.Errorf("setup.bin: record %d: %w", i+1, err)
		}
		f.Records = append(f.Records, r)
	}
	return f, nil
}

func parseRecord(b []byte) (Record, error) {
	le := binary.LittleEndian
	var r Record
	for p := 24; p+8 <= len(b); {
		v := Var{le.Uint16(b[p:]), le.Uint16(b[p+2:])}
		if v.Module == 0 || v.ID == 0 {
			return r, nil
		}
		n := int(le.Uint16(b[p+4:]))
		if p+8+n > len(b) {
			return nil, fmt.Errorf("entry %d.%d overruns the record", v.Module, v.ID)
		}
		r = append(r, Entry{v, slices.Clone(b[p+8 : p+8+n])})
		p += 8 + n + (4-(8+n)%4)%4
	}
	return r, nil
}

// Get returns the value of v in the record.
func (r Record) Get(v Var) ([]byte, bool) {
	for _, e := range r {
		if e.Var == v {
			return e.Value, true
		}
	}
	return nil, false
}

// MEBx holds the two passwords every record starts with: the BIOS checks
// the current one (factory default "admin") and sets the new one.
type MEBx struct{ Current, New string }

func (m MEBx) entries() (Record, error) {
	if m.Current == "" {
		m.Current = "admin"
	}
	if m.New == "" {
		return nil, errors.New("a new MEBx password is required")
	}
	return Record{
		{CurrentMEBxPassword, []byte(m.Current)},
		{NewMEBxPassword, []byte(m.New)},
		{ManageabilitySel, []byte{1}},
	}, nil
}

// PSKRecord is one machine's TLS-PSK record: it enters setup mode and
// sends a version-2 hello carrying pid.
func PSKRecord(m MEBx, pid, pps string) (Record, error) {
	r, err := m.entries()
	if err != nil {
		return nil, err
	}
	return append(r, Entry{PID, []byte(pid)}, Entry{PPS, []byte(pps)}), nil
}

// BareMetal points a machine at this appliance for Remote Configuration.
type BareMetal struct {
	MEBx MEBx
	// DNSSuffix is the PKI DNS suffix: the site domain the certificate's
	// CN must fall in.
	DNSSuffix string
	// RootSHA256 is the provisioning root's hash, added as a custom hash.
	RootSHA256 []byte
	HashName   string // ≤32 characters, shown in MEBx
	Server     netip.Addr
	Port       uint16
}

// BareMetalRecord sets the suffix, the custom root hash and the server
// address and port, then starts provisioning (2.28 = 1) so the machine
// sends version-3 hellos to this appliance.
func BareMetalRecord(b BareMetal) (Record, error) {
	r, err := b.MEBx.entries()
	if err != nil {
		return nil, err
	}
	if len(b.RootSHA256) != 32 {
		return nil, fmt.Errorf("root hash must be SHA-256 (32 bytes), got %d", len(b.RootSHA256))
	}
	if b.DNSSuffix == "" || len(b.DNSSuffix) > 255 {
		return nil, errors.New("DNS suffix must be 1 to 255 characters")
	}
	if !b.Server.Is4() {
		return nil, fmt.Errorf("server %v is not IPv4", b.Server)
	}
	name := b.HashName
	if name == "" {
		name = "branchbox"
	}
	if len(name) > 32 {
		name = name[:32]
	}
	hash := append([]byte{2}, b.RootSHA256...) // 2 = SHA-256
	hash = append(hash, byte(len(name)))
	hash = append(hash, name...)
	ip := b.Server.As4()
	port := b.Port
	if port == 0 {
		port = 9971
	}
	return append(r,
		Entry{PKIDNSSuffix, []byte(b.DNSSuffix)},
		Entry{CustomHash, hash},
		// The address is stored as a little-endian u32, octets reversed.
		Entry{ServerAddress, []byte{ip[3], ip[2], ip[1], ip[0]}},
		Entry{ServerPort, binary.LittleEndian.AppendUint16(nil, port)},
		Entry{ProvisioningStart, []byte{1}},
	), nil
}
