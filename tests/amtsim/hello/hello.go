// Package hello encodes and decodes the "hello" packet an Intel AMT device in
// setup mode sends to its provisioning server (amt-protocol.md §2.3, §2.4).
// It is the simulator's own implementation: the provisioner has its own, so a
// shared misreading of the layout cannot hide in both.
package hello

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Version is the hello "interface version" field.
type Version uint16

const (
	// VersionPSK is the one-touch TLS-PSK hello carrying a PID (AMT < 11).
	VersionPSK Version = 2
	// VersionPKI is the remote-configuration hello carrying root-cert hashes.
	VersionPKI Version = 3
)

// HashAlg is the algorithm byte of a hash entry.
type HashAlg uint8

const (
	SHA1   HashAlg = 1
	SHA256 HashAlg = 2
	SHA384 HashAlg = 3
)

// Size returns the digest length the wire format demands for the algorithm,
// or 0 for an unknown algorithm.
func (a HashAlg) Size() int {
	switch a {
	case SHA1:
		return 20
	case SHA256:
		return 32
	case SHA384:
		return 48
	}
	return 0
}

func (a HashAlg) String() string {
	switch a {
	case SHA1:
		return "SHA-1"
	case SHA256:
		return "SHA-256"
	case SHA384:
		return "SHA-384"
	}
	return fmt.Sprintf("hash-alg(%d)", uint8(a))
}

// Hash is one root-certificate hash entry.
type Hash struct {
	Alg HashAlg
	Sum []byte
}

// UUID is a device UUID in canonical (RFC 4122 text) byte order.
type UUID [16]byte

// String formats the UUID as 8-4-4-4-12 lower-case hex.
func (u UUID) String() string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ParseUUID reads the 8-4-4-4-12 text form.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	raw, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(raw) != 16 || len(s) != 36 {
		return u, fmt.Errorf("uuid %q: want 8-4-4-4-12 hex", s)
	}
	copy(u[:], raw)
	return u, nil
}

// Wire is the UUID as the hello and MEI GetUUID carry it, like an
// SMBIOS/Microsoft GUID: the first three fields little-endian, the last
// eight bytes as they are.
func (u UUID) Wire() [16]byte {
	var w [16]byte
	copy(w[:], u[:])
	w[0], w[1], w[2], w[3] = u[3], u[2], u[1], u[0]
	w[4], w[5] = u[5], u[4]
	w[6], w[7] = u[7], u[6]
	return w
}

func uuidFromWire(w []byte) UUID {
	var u UUID
	copy(u[:], w)
	u[0], u[1], u[2], u[3] = w[3], w[2], w[1], w[0]
	u[4], u[5] = w[5], w[4]
	u[6], u[7] = w[7], w[6]
	return u
}

// Packet is a decoded hello.
type Packet struct {
	AdminCredentialsSet bool
	Version             Version
	RetryCount          uint32
	UUID                UUID
	Hashes              []Hash // VersionPKI only
	PID                 string // VersionPSK only: 8 characters
}

const (
	headerLen = 24
	pidLen    = 8
	// MaxHashes is what the one-byte count field can carry.
	MaxHashes = 255
)

// Marshal encodes the packet.
func (p Packet) Marshal() ([]byte, error) {
	b := make([]byte, headerLen, headerLen+1+len(p.Hashes)*50)
	if p.AdminCredentialsSet {
		binary.LittleEndian.PutUint16(b[0:], 1)
	}
	binary.LittleEndian.PutUint16(b[2:], uint16(p.Version))
	binary.LittleEndian.PutUint32(b[4:], p.RetryCount)
	w := p.UUID.Wire()
	copy(b[8:24], w[:])
	switch p.Version {
	case VersionPKI:
		if len(p.Hashes) > MaxHashes {
			return nil, fmt.Errorf("hello: %d hashes, the count field holds at most %d", len(p.Hashes), MaxHashes)
		}
		b = append(b, byte(len(p.Hashes)))
		for i, h := range p.Hashes {
			if h.Alg.Size() == 0 || len(h.Sum) != h.Alg.Size() {
				return nil, fmt.Errorf("hello: hash %d: %s with %d bytes", i, h.Alg, len(h.Sum))
			}
			b = append(b, byte(h.Alg), byte(len(h.Sum)))
			b = append(b, h.Sum...)
		}
	case VersionPSK:
		if len(p.PID) != pidLen {
			return nil, fmt.Errorf("hello: PID must be %d characters, got %d", pidLen, len(p.PID))
		}
		b = append(b, p.PID...)
	default:
		return nil, fmt.Errorf("hello: unsupported version %d", p.Version)
	}
	return b, nil
}

// ErrShort reports a packet shorter than its own fields say.
var ErrShort = errors.New("hello: packet too short")

// Parse decodes a whole hello (everything the device wrote before closing).
// It is strict: trailing bytes, unknown algorithms and wrong lengths fail.
func Parse(b []byte) (Packet, error) {
	var p Packet
	if len(b) < headerLen {
		return p, ErrShort
	}
	admin := binary.LittleEndian.Uint16(b[0:])
	if admin > 1 {
		return p, fmt.Errorf("hello: admin-credentials field %d, want 0 or 1", admin)
	}
	p.AdminCredentialsSet = admin == 1
	p.Version = Version(binary.LittleEndian.Uint16(b[2:]))
	p.RetryCount = binary.LittleEndian.Uint32(b[4:])
	p.UUID = uuidFromWire(b[8:24])
	rest := b[headerLen:]
	switch p.Version {
	case VersionPSK:
		if len(rest) != pidLen {
			return p, fmt.Errorf("hello v2: %d bytes after the header, want %d (PID)", len(rest), pidLen)
		}
		p.PID = string(rest)
		return p, nil
	case VersionPKI:
	default:
		return p, fmt.Errorf("hello: unsupported version %d", p.Version)
	}
	if len(rest) < 1 {
		return p, ErrShort
	}
	n := int(rest[0])
	rest = rest[1:]
	p.Hashes = make([]Hash, 0, n)
	for i := 0; i < n; i++ {
		if len(rest) < 2 {
			return p, fmt.Errorf("hello: hash %d of %d: %w", i, n, ErrShort)
		}
		alg, size := HashAlg(rest[0]), int(rest[1])
		if alg.Size() == 0 {
			return p, fmt.Errorf("hello: hash %d: unknown algorithm %d", i, rest[0])
		}
		if size != alg.Size() {
			return p, fmt.Errorf("hello: hash %d: %s with length %d", i, alg, size)
		}
		if len(rest) < 2+size {
			return p, fmt.Errorf("hello: hash %d of %d: %w", i, n, ErrShort)
		}
		p.Hashes = append(p.Hashes, Hash{Alg: alg, Sum: append([]byte(nil), rest[2:2+size]...)})
		rest = rest[2+size:]
	}
	if len(rest) != 0 {
		return p, fmt.Errorf("hello: %d trailing bytes after %d hashes", len(rest), n)
	}
	return p, nil
}
