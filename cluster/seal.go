package cluster

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// sealKeyFile holds the AES-256 key that seals secrets before they enter
// the raft log. Every member of a cluster must hold the same key; joining
// members receive it over the authenticated join path.
const sealKeyFile = "seal.key"

// sealer encrypts secrets with AES-256-GCM. The nonce is random per value,
// so sealing the same secret twice gives different ciphertexts and nothing
// in the log reveals that two secrets are equal.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	return &sealer{aead: aead}, nil
}

// loadOrCreateSealKey reads dataDir/seal.key, creating it (mode 0600) on
// first start.
func loadOrCreateSealKey(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, sealKeyFile)
	key, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(key) != 32 {
			return nil, fmt.Errorf("%s: want 32 bytes, have %d", path, len(key))
		}
		return key, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read seal key: %w", err)
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate seal key: %w", err)
	}
	if err := writeFileAtomic(path, key, 0o600); err != nil {
		return nil, fmt.Errorf("write seal key: %w", err)
	}
	return key, nil
}

func (s *sealer) seal(plain []byte) (Sealed, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return s.aead.Seal(nonce, nonce, plain, nil), nil
}

func (s *sealer) unseal(v Sealed) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(v) < n {
		return nil, errors.New("unseal: value too short")
	}
	plain, err := s.aead.Open(nil, v[:n], v[n:], nil)
	if err != nil {
		// Never wrap the cipher's error with the value: it must not leak.
		return nil, errors.New("unseal: value was not sealed with this cluster's key")
	}
	return plain, nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
