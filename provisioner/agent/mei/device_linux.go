package mei

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlConnectClient is IOCTL_MEI_CONNECT_CLIENT from linux
// include/uapi/linux/mei.h: _IOWR('H', 0x01, struct mei_connect_client_data)
// with a 16-byte argument = 3<<30 | 16<<16 | 'H'<<8 | 1 = 0xC0104801
// (rpc-go pkg/heci/linux.go uses the same value; checked against the
// kernel header with a C compiler).
const ioctlConnectClient = 0xC0104801

// amthiGUID is the AMT Host Interface client, {12F80028-B4B7-4B2D-ACA8-46E0FF65814C},
// in the kernel's uuid_le byte order (first three fields little-endian):
// rpc-go pkg/heci/linux.go MEI_IAMTHIF; fwupd fu-mei-device.h
// FU_MEI_DEVICE_HECI_AMTHI_GUID ("GUID used to connect to the PTHI client").
var amthiGUID = [16]byte{0x28, 0x00, 0xf8, 0x12, 0xb7, 0xb4, 0x2d, 0x4b, 0xac, 0xa8, 0x46, 0xe0, 0xff, 0x65, 0x81, 0x4c}

// device is a MEI character device connected to the AMTHI client: the
// driver keeps message boundaries, so one write is one request and one
// read one whole response.
type device struct {
	fd      int
	path    string
	maxMsg  int
	timeout time.Duration
}

func openDevice(path string, timeout time.Duration) (Transport, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
			return nil, fmt.Errorf("open %s: %w: no Intel MEI device — is the mei_me kernel module loaded "+
				"(modprobe mei_me) and the Management Engine enabled in the BIOS?", path, err)
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return nil, fmt.Errorf("open %s: %w: run as root or as a member of the group owning %s (often \"mei\")", path, err, path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// struct mei_connect_client_data is a union: in, the client GUID; out,
	// struct mei_client {u32 max_msg_length; u8 protocol_version; u8 reserved[3]}.
	data := amthiGUID
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlConnectClient, uintptr(unsafe.Pointer(&data))); errno != 0 {
		unix.Close(fd)
		if errno == unix.ENOTTY || errno == unix.EINVAL {
			return nil, fmt.Errorf("%s: IOCTL_MEI_CONNECT_CLIENT: %w: not an MEI device", path, errno)
		}
		return nil, fmt.Errorf("%s: connecting to the AMT host interface (AMTHI) client: %w — AMT absent or disabled in this firmware?", path, errno)
	}
	maxMsg := int(binary.LittleEndian.Uint32(data[0:4]))
	if maxMsg < headerLen+statusLen {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: AMTHI client reports a maximum message of %d bytes", path, maxMsg)
	}
	return &device{fd: fd, path: path, maxMsg: maxMsg, timeout: timeout}, nil
}

func (d *device) RoundTrip(req []byte) ([]byte, error) {
	if len(req) > d.maxMsg {
		return nil, fmt.Errorf("%s: %d-byte request exceeds the client's %d-byte maximum", d.path, len(req), d.maxMsg)
	}
	n, err := unix.Write(d.fd, req)
	if err != nil {
		return nil, fmt.Errorf("%s: write: %w", d.path, err)
	}
	if n != len(req) {
		return nil, fmt.Errorf("%s: wrote %d of %d bytes", d.path, n, len(req))
	}
	deadline := time.Now().Add(d.timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("%s: no response within %s", d.path, d.timeout)
		}
		fds := []unix.PollFd{{Fd: int32(d.fd), Events: unix.POLLIN}}
		ready, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: poll: %w", d.path, err)
		}
		if ready == 0 {
			continue
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			return nil, fmt.Errorf("%s: device reported poll events 0x%x (ME reset?)", d.path, fds[0].Revents)
		}
		buf := make([]byte, max(d.maxMsg, MaxMessage))
		n, err := unix.Read(d.fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: read: %w", d.path, err)
		}
		return buf[:n], nil
	}
}

func (d *device) Close() error { return unix.Close(d.fd) }
