// Package boot is what a simulated AMT device does after power-on: get an
// address by DHCP on its own interface, learn the option-15 suffix, find
// ProvisionServer.<suffix> through the DHCP-given DNS server and send hellos
// on the retry schedule while its provisioning window is open.
package boot

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// Lease is what the device learnt from DHCP.
type Lease struct {
	IP       net.IP
	Mask     net.IPMask
	Router   net.IP
	DNS      []net.IP
	Domain   string // option 15
	Server   net.IP
	Duration time.Duration
}

func (l Lease) String() string {
	ones, _ := l.Mask.Size()
	return fmt.Sprintf("%s/%d domain %q dns %v router %v from %v", l.IP, ones, l.Domain, l.DNS, l.Router, l.Server)
}

// AcquireLease runs DISCOVER/OFFER/REQUEST/ACK on iface with the interface's
// own MAC address.
func AcquireLease(ctx context.Context, iface string, timeout time.Duration) (Lease, error) {
	c, err := nclient4.New(iface, nclient4.WithTimeout(timeout), nclient4.WithRetry(3))
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp client on %s: %w", iface, err)
	}
	defer c.Close()
	l, err := c.Request(ctx, dhcpv4.WithRequestedOptions(
		dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer, dhcpv4.OptionDomainName))
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp on %s: %w", iface, err)
	}
	ack := l.ACK
	lease := Lease{
		IP: ack.YourIPAddr, Mask: ack.SubnetMask(), DNS: ack.DNS(), Domain: strings.TrimSuffix(ack.DomainName(), "."),
		Server: ack.ServerIdentifier(), Duration: ack.IPAddressLeaseTime(time.Hour),
	}
	if r := ack.Router(); len(r) > 0 {
		lease.Router = r[0]
	}
	if lease.Mask == nil {
		lease.Mask = lease.IP.DefaultMask()
	}
	return lease, nil
}

// ConfigureAddress puts the leased address on iface (iproute2).
func ConfigureAddress(iface string, l Lease) error {
	ones, _ := l.Mask.Size()
	out, err := exec.Command("ip", "addr", "replace", fmt.Sprintf("%s/%d", l.IP, ones), "dev", iface).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip addr replace %s on %s: %v: %s", l.IP, iface, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// BindToDevice is a socket Control function pinning a socket to iface, so
// that with many devices in one namespace each talks through its own NIC.
func BindToDevice(iface string) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = syscall.BindToDevice(int(fd), iface) }); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("SO_BINDTODEVICE %s: %w", iface, serr)
		}
		return nil
	}
}
