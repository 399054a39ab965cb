package firmware

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	_ "embed"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

//go:embed default-hashes.txt
var defaultHashes []byte

// HashEntry is one row of the firmware's root-certificate hash table.
type HashEntry struct {
	Name    string
	Alg     hello.HashAlg
	Sum     []byte
	Default bool
	Active  bool
}

// HashTable is the device's list of trusted root hashes.
type HashTable struct {
	Entries []HashEntry
}

// NewHashTable loads the profile's default entries, all active.
func NewHashTable(p Profile) (*HashTable, error) {
	t := &HashTable{}
	sc := bufio.NewScanner(bytes.NewReader(defaultHashes))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.SplitN(text, " ", 4)
		if len(f) != 4 {
			return nil, fmt.Errorf("default-hashes.txt line %d: want 4 fields", line)
		}
		if f[0] != p.HashSet {
			continue
		}
		alg, sum, err := ParseHash(f[2])
		if err != nil {
			return nil, fmt.Errorf("default-hashes.txt line %d: %w", line, err)
		}
		t.Entries = append(t.Entries, HashEntry{Name: f[3], Alg: alg, Sum: sum, Default: true, Active: true})
	}
	return t, nil
}

// ParseHash reads a hex hash and infers the algorithm from its length.
func ParseHash(h string) (hello.HashAlg, []byte, error) {
	sum, err := hex.DecodeString(strings.TrimSpace(h))
	if err != nil {
		return 0, nil, fmt.Errorf("hash %q: %w", h, err)
	}
	for _, a := range []hello.HashAlg{hello.SHA1, hello.SHA256, hello.SHA384} {
		if a.Size() == len(sum) {
			return a, sum, nil
		}
	}
	return 0, nil, fmt.Errorf("hash %q: %d bytes is not SHA-1, SHA-256 or SHA-384", h, len(sum))
}

// AddCustom adds a user-defined root hash as MEBx or setup.bin would,
// enforcing the profile's algorithm set and capacities.
func (t *HashTable) AddCustom(p Profile, name string, alg hello.HashAlg, sum []byte, active bool) error {
	if !p.allowsAlg(alg) {
		return fmt.Errorf("custom hash %q: AMT %s cannot store %s hashes", name, p.Name, alg)
	}
	custom := 0
	for _, e := range t.Entries {
		if !e.Default {
			custom++
		}
		if e.Alg == alg && bytes.Equal(e.Sum, sum) {
			return fmt.Errorf("custom hash %q: already in the table as %q", name, e.Name)
		}
	}
	if custom >= p.CustomCapacity {
		return fmt.Errorf("custom hash %q: AMT %s holds at most %d custom hashes", name, p.Name, p.CustomCapacity)
	}
	if len(t.Entries) >= p.HashCapacity {
		return fmt.Errorf("custom hash %q: hash table full (%d entries)", name, p.HashCapacity)
	}
	t.Entries = append(t.Entries, HashEntry{Name: name, Alg: alg, Sum: append([]byte(nil), sum...), Active: active})
	return nil
}

// RemoveCustom drops every custom entry (full unprovision).
func (t *HashTable) RemoveCustom() {
	kept := t.Entries[:0]
	for _, e := range t.Entries {
		if e.Default {
			kept = append(kept, e)
		}
	}
	t.Entries = kept
}

// Active returns the active entries as the hello carries them.
func (t *HashTable) Active() []hello.Hash {
	var out []hello.Hash
	for _, e := range t.Entries {
		if e.Active {
			out = append(out, hello.Hash{Alg: e.Alg, Sum: e.Sum})
		}
	}
	return out
}

// MatchActive reports the active entry equal to the hash of der, if any.
func (t *HashTable) MatchActive(der []byte) (HashEntry, bool) {
	for _, e := range t.Entries {
		if e.Active && bytes.Equal(e.Sum, Digest(e.Alg, der)) {
			return e, true
		}
	}
	return HashEntry{}, false
}

// Digest hashes der with alg.
func Digest(alg hello.HashAlg, der []byte) []byte {
	switch alg {
	case hello.SHA1:
		s := sha1.Sum(der)
		return s[:]
	case hello.SHA256:
		s := sha256.Sum256(der)
		return s[:]
	case hello.SHA384:
		s := sha512.Sum384(der)
		return s[:]
	}
	return nil
}
