// Package hello encodes and decodes the packet an Intel AMT device sends to
// its setup server on TCP 9971 before Remote Configuration (amt-protocol.md
// §2): version 3 carries the device's active root-certificate hashes (PKI),
// version 2 carries a TLS-PSK provisioning identifier (PID).
package hello

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Interface versions a device puts at offset 2.
const (
	VersionPSK = 2
	VersionPKI = 3
)

// MaxSize bounds what a listener should accept: MeshCentral drops senders
// past 16000 bytes, far above the 25+255*50 bytes a v3 hello can reach.
const MaxSize = 16000

const (
	headerLen = 24 // admin flag, version, retry count, UUID
	pskLen    = headerLen + pidLen
	pidLen    = 8
)

// HashAlg is the type byte of a hash entry; its value fixes the length.
type HashAlg uint8

// Hash algorithms of the firmware's root-certificate hash table.
const (
	SHA1   HashAlg = 1
	SHA256 HashAlg = 2
	SHA384 HashAlg = 3
)

// Size is the digest length the firmware uses for the algorithm, 0 if unknown.
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
		return "sha1"
	case SHA256:
		return "sha256"
	case SHA384:
		return "sha384"
	}
	return fmt.Sprintf("hashalg(%d)", uint8(a))
}

// Hash is one active root-certificate hash the device trusts.
type Hash struct {
	Alg HashAlg
	Sum []byte
}

// String renders the hash as "alg:hex", the form kept on device records.
func (h Hash) String() string { return h.Alg.String() + ":" + hex.EncodeToString(h.Sum) }

// Hello is one decoded hello packet.
type Hello struct {
	// AdminCredentialsSet is the flag at offset 0; real captures show 1 on
	// factory-fresh devices, so it is informational only.
	AdminCredentialsSet bool
	Version             uint16
	RetryCount          uint32
	// UUID is in RFC 4122 byte order; the wire uses the mixed-endian
	// SMBIOS form, converted by Parse and Marshal.
	UUID   [16]byte
	Hashes []Hash // version 3 only
	PID    string // version 2 only
}

// Errors a caller may want to tell apart.
var (
	ErrShort         = errors.New("hello truncated")
	ErrVersion       = errors.New("unsupported hello version")
	ErrMalformed     = errors.New("malformed hello")
	errTooManyHashes = errors.New("more than 255 hashes")
)

// Parse decodes a hello. Bytes after the last field are ignored, as
// MeshCentral does, since nothing documents their absence.
func Parse(b []byte) (Hello, error) {
	var h Hello
	if len(b) < headerLen {
		return h, fmt.Errorf("%w: %d bytes, header needs %d", ErrShort, len(b), headerLen)
	}
	flag := binary.LittleEndian.Uint16(b[0:2])
	if flag > 1 {
		return h, fmt.Errorf("%w: admin-credentials flag %d", ErrMalformed, flag)
	}
	h.AdminCredentialsSet = flag == 1
	h.Version = binary.LittleEndian.Uint16(b[2:4])
	h.RetryCount = binary.LittleEndian.Uint32(b[4:8])
	h.UUID = uuidFromWire(b[8:24])

	switch h.Version {
	case VersionPKI:
		hashes, err := parseHashes(b[headerLen:])
		if err != nil {
			return h, err
		}
		h.Hashes = hashes
	case VersionPSK:
		if len(b) < pskLen {
			return h, fmt.Errorf("%w: PSK hello of %d bytes, needs %d", ErrShort, len(b), pskLen)
		}
		pid := string(b[headerLen:pskLen])
		if !validPID(pid) {
			return h, fmt.Errorf("%w: PID is not 8 characters A-Z/0-9", ErrMalformed)
		}
		h.PID = pid
	default:
		return h, fmt.Errorf("%w: %d", ErrVersion, h.Version)
	}
	return h, nil
}

func parseHashes(b []byte) ([]Hash, error) {
	if len(b) < 1 {
		return nil, fmt.Errorf("%w: no hash count", ErrShort)
	}
	n := int(b[0])
	p := 1
	hashes := make([]Hash, 0, n)
	for i := range n {
		if len(b) < p+2 {
			return nil, fmt.Errorf("%w: hash entry %d of %d missing", ErrShort, i+1, n)
		}
		alg, size := HashAlg(b[p]), int(b[p+1])
		if alg.Size() == 0 {
			return nil, fmt.Errorf("%w: hash entry %d has type %d", ErrMalformed, i+1, alg)
		}
		if size != alg.Size() {
			return nil, fmt.Errorf("%w: hash entry %d: %s with length %d", ErrMalformed, i+1, alg, size)
		}
		p += 2
		if len(b) < p+size {
			return nil, fmt.Errorf("%w: hash entry %d cut off", ErrShort, i+1)
		}
		hashes = append(hashes, Hash{Alg: alg, Sum: append([]byte(nil), b[p:p+size]...)})
		p += size
	}
	return hashes, nil
}

// Marshal encodes the hello exactly as a device would send it.
func (h Hello) Marshal() ([]byte, error) {
	out := make([]byte, headerLen, headerLen+1+len(h.Hashes)*50)
	if h.AdminCredentialsSet {
		out[0] = 1
	}
	binary.LittleEndian.PutUint16(out[2:4], h.Version)
	binary.LittleEndian.PutUint32(out[4:8], h.RetryCount)
	uuidToWire(out[8:24], h.UUID)

	switch h.Version {
	case VersionPKI:
		if len(h.Hashes) > 255 {
			return nil, errTooManyHashes
		}
		out = append(out, byte(len(h.Hashes)))
		for i, hs := range h.Hashes {
			if hs.Alg.Size() == 0 || len(hs.Sum) != hs.Alg.Size() {
				return nil, fmt.Errorf("%w: hash %d: %s with %d bytes", ErrMalformed, i+1, hs.Alg, len(hs.Sum))
			}
			out = append(out, byte(hs.Alg), byte(len(hs.Sum)))
			out = append(out, hs.Sum...)
		}
	case VersionPSK:
		if !validPID(h.PID) {
			return nil, fmt.Errorf("%w: PID is not 8 characters A-Z/0-9", ErrMalformed)
		}
		out = append(out, h.PID...)
	default:
		return nil, fmt.Errorf("%w: %d", ErrVersion, h.Version)
	}
	return out, nil
}

// UUIDString formats the UUID the way AMT tools and the API print it.
func (h Hello) UUIDString() string { return FormatUUID(h.UUID) }

// HashStrings renders every hash as "alg:hex".
func (h Hello) HashStrings() []string {
	out := make([]string, len(h.Hashes))
	for i, hs := range h.Hashes {
		out[i] = hs.String()
	}
	return out
}

// FormatUUID renders RFC 4122 bytes as lower-case 8-4-4-4-12.
func FormatUUID(u [16]byte) string {
	x := hex.EncodeToString(u[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// ParseUUID accepts 8-4-4-4-12 (any case) or 32 bare hex digits.
func ParseUUID(s string) ([16]byte, error) {
	var u [16]byte
	clean := strings.ReplaceAll(strings.TrimSpace(s), "-", "")
	if len(clean) != 32 {
		return u, fmt.Errorf("uuid %q: want 32 hex digits", s)
	}
	if _, err := hex.Decode(u[:], []byte(clean)); err != nil {
		return u, fmt.Errorf("uuid %q: %w", s, err)
	}
	return u, nil
}

// NormalizeUUID returns the canonical lower-case form of s.
func NormalizeUUID(s string) (string, error) {
	u, err := ParseUUID(s)
	if err != nil {
		return "", err
	}
	return FormatUUID(u), nil
}

// The wire GUID stores its first three fields little-endian (SMBIOS form).
func uuidFromWire(w []byte) [16]byte {
	var u [16]byte
	u[0], u[1], u[2], u[3] = w[3], w[2], w[1], w[0]
	u[4], u[5] = w[5], w[4]
	u[6], u[7] = w[7], w[6]
	copy(u[8:], w[8:16])
	return u
}

func uuidToWire(w []byte, u [16]byte) {
	w[0], w[1], w[2], w[3] = u[3], u[2], u[1], u[0]
	w[4], w[5] = u[5], u[4]
	w[6], w[7] = u[7], u[6]
	copy(w[8:16], u[8:])
}

func validPID(pid string) bool {
	if len(pid) != pidLen {
		return false
	}
	for _, c := range []byte(pid) {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
