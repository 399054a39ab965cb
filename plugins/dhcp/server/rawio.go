package server

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpIO reads and writes one IPv4 UDP socket with raw system calls.
//
// The socket is non-blocking (the netpoller parks a reader while nothing
// has arrived), so recvfrom and sendto never wait. package net still
// enters them as system calls that may block, and on the way in the Go
// runtime wakes its monitor thread (sysmon) whenever that thread is asleep
// because the process was idle: at 1 000 leases/s, idle between most
// packets, that was two or three extra thread switches per packet, half
// of all of the server's (perf, sched:sched_switch). Entered raw, the call
// runs on the goroutine's thread like a function call.
type udpIO struct{ rc syscall.RawConn }

func newUDPIO(c *net.UDPConn) (udpIO, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return udpIO{}, fmt.Errorf("dhcp socket: %w", err)
	}
	return udpIO{rc: rc}, nil
}

// readFrom receives one datagram into buf, waiting in the netpoller while
// there is none. The error wraps net.ErrClosed once the socket is closed.
func (u udpIO) readFrom(buf []byte) (int, netip.AddrPort, error) {
	var sa unix.RawSockaddrInet4
	var n uintptr
	var errno syscall.Errno
	err := u.rc.Read(func(fd uintptr) bool {
		for {
			salen := uint32(unsafe.Sizeof(sa))
			n, _, errno = unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0,
				uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&salen)))
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, netip.AddrPort{}, err
	case errno != 0:
		return 0, netip.AddrPort{}, fmt.Errorf("recvfrom: %w", errno)
	}
	return int(n), netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), portOf(&sa)), nil
}

// writeTo sends b to dst, an IPv4 address, waiting in the netpoller while
// the socket's send buffer is full.
func (u udpIO) writeTo(b []byte, dst *net.UDPAddr) error {
	ip4 := dst.IP.To4()
	if ip4 == nil {
		return fmt.Errorf("sendto %s: not an IPv4 address", dst)
	}
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte(ip4)}
	setPort(&sa, uint16(dst.Port))
	var errno syscall.Errno
	err := u.rc.Write(func(fd uintptr) bool {
		for {
			_, _, errno = unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0,
				uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return err
	case errno != 0:
		return fmt.Errorf("sendto %s: %w", dst, errno)
	}
	return nil
}

// sockaddr_in keeps the port in network byte order (see ip(7)).
func portOf(sa *unix.RawSockaddrInet4) uint16 {
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	return uint16(p[0])<<8 | uint16(p[1])
}

func setPort(sa *unix.RawSockaddrInet4, port uint16) {
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port)
}
