package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// A LeaseBatch is the one entry a DHCP storm writes thousands of times a
// second, so its body is binary rather than JSON: encoding, decoding on
// every node and the bytes fsynced per lease all showed in DHCP profiles.
// The body starts with binaryV1, a byte no JSON body can start with (those
// open with '{'), so decodeCommand tells the two apart and older JSON
// LeaseBatch entries still decode.
//
//	binaryV1 | uvarint count | count × item
//	item: varint time | strings IP, MAC, ClientID, Hostname, Site, State | varint start | varint expires
//	string: uvarint length | bytes; time: Unix nanoseconds, 0 for the zero time

const binaryV1 = 0x01

// binaryEncoder and binaryDecoder are a command with its own compact body.
type binaryEncoder interface{ appendBinary(b []byte) []byte }
type binaryDecoder interface{ decodeBinary(b []byte) error }

func (c LeaseBatch) appendBinary(b []byte) []byte {
	b = append(b, binaryV1)
	b = binary.AppendUvarint(b, uint64(len(c.Items)))
	for _, it := range c.Items {
		l := it.Lease
		b = appendTime(b, it.Time)
		for _, s := range [...]string{l.IP, l.MAC, l.ClientID, l.Hostname, l.Site, l.State} {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
		b = appendTime(b, l.Start)
		b = appendTime(b, l.Expires)
	}
	return b
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

var errShortBatch = errors.New("truncated")

func (c *LeaseBatch) decodeBinary(b []byte) error {
	r := binReader{b: b}
	if v := r.byte(); r.err == nil && v != binaryV1 {
		return fmt.Errorf("lease batch: unsupported binary version %d", v)
	}
	n := r.uvarint()
	// Each item takes at least 9 bytes, which bounds a hostile count.
	if r.err == nil && n > uint64(len(r.b))/9 {
		return fmt.Errorf("lease batch: %d items cannot fit in %d bytes", n, len(b))
	}
	c.Items = make([]LeaseCAS, 0, n)
	for range n {
		var it LeaseCAS
		it.Time = r.time()
		l := &it.Lease
		for _, s := range [...]*string{&l.IP, &l.MAC, &l.ClientID, &l.Hostname, &l.Site, &l.State} {
			*s = r.string()
		}
		l.Start, l.Expires = r.time(), r.time()
		c.Items = append(c.Items, it)
	}
	if r.err != nil {
		return fmt.Errorf("lease batch: %w", r.err)
	}
	if len(r.b) != 0 {
		return fmt.Errorf("lease batch: %d bytes after the last item", len(r.b))
	}
	return nil
}

// binReader reads until its first error, after which every read is zero.
type binReader struct {
	b   []byte
	err error
}

func (r *binReader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errShortBatch
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *binReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShortBatch
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *binReader) time() time.Time {
	if r.err != nil {
		return time.Time{}
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errShortBatch
		return time.Time{}
	}
	r.b = r.b[n:]
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v).UTC()
}

func (r *binReader) string() string {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = errShortBatch
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
