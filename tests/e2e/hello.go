package e2e

import (
	"encoding/hex"
	"fmt"
	"net"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

// SendHello sends, from inside ns and from address from, the hello the
// firmware of device uuid would send to server (host:port), offering the
// root hash rootHash (hex SHA-256).
func SendHello(ns *NS, from, server, uuid, rootHash string) error {
	u, err := hello.ParseUUID(uuid)
	if err != nil {
		return err
	}
	sum, err := hex.DecodeString(rootHash)
	if err != nil {
		return fmt.Errorf("root hash: %w", err)
	}
	raw, err := hello.Packet{Version: hello.VersionPKI, UUID: u, Hashes: []hello.Hash{{Alg: hello.SHA256, Sum: sum}}}.Marshal()
	if err != nil {
		return err
	}
	return ns.Do(func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", server)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(raw)
		return err
	})
}
