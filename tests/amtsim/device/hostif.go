package device

import (
	"fmt"
	"net"

	"github.com/branchbox/branchbox/tests/amtsim/firmware"
)

// Host-interface operations: what an OS agent asks the firmware through MEI
// (/dev/mei0, the AMTHI client; amt-protocol.md §7). They answer PT_STATUS
// codes; the rules are those of Intel's AMT SDK pages for each command
// (amt-protocol.md §9, I-6, I-11, cfgstartconfiguration.htm,
// cfgunprovision.htm, cfggetlocalsystemaccount.htm).

// OTP length bounds of ProvisioningServerOTP.
const (
	MinOTPLength = 8
	MaxOTPLength = 32
)

// maxAccountField is CFG_MAX_ACL_USER_LENGTH / CFG_MAX_ACL_PWD_LENGTH (33)
// minus the terminating NUL (cfggetlocalsystemaccount.htm).
const maxAccountField = 32

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func checkLocalPassword(pw string) error {
	if len(pw) > maxAccountField || !printableASCII(pw) {
		return fmt.Errorf("local password: 1..%d printable ASCII characters (MEI CFG_GetLocalSystemAccount field)", maxAccountField)
	}
	return nil
}

// setupRefusedLocked reports why a setup command (OTP, StartConfiguration) is
// refused now: never in post-provisioning, and in in-provisioning only once
// the provisioning period has elapsed (cfgsetprovisioningserverotp.htm,
// cfgstartconfiguration.htm: "allowed in IN_PROVISION state only if the time
// period dedicated for provisioning has elapsed").
func (d *Device) setupRefusedLocked() (int, string) {
	switch {
	case d.now().Before(d.rebootUntil):
		return PTNotReady, "firmware is rebooting"
	case d.state == PostProvisioning:
		return PTInvalidPTMode, "device is post-provisioning"
	case d.windowOpenLocked():
		return PTInvalidPTMode, "device is in-provisioning and its provisioning window is still open"
	}
	return PTSuccess, ""
}

// SetProvisioningServerOTP stores the one-time password the setup server
// reads back (AMT_SetupAndConfigurationService.ProvisioningServerOTP).
func (d *Device) SetProvisioningServerOTP(otp string) int {
	const op = "SetProvisioningServerOTP"
	d.mu.Lock()
	defer d.mu.Unlock()
	if code, why := d.setupRefusedLocked(); code != PTSuccess {
		return d.failure(op, code, why)
	}
	if len(otp) < MinOTPLength || len(otp) > MaxOTPLength || !printableASCII(otp) {
		// The value is a secret: the reason names the rule, never the value.
		return d.failure(op, PTInvalidParameter, fmt.Sprintf("OTP must be %d..%d printable ASCII characters (got %d bytes)", MinOTPLength, MaxOTPLength, len(otp)))
	}
	d.otp = otp
	d.auditLocked("otp-set", "", "provisioning server OTP set over MEI")
	d.log.Info("provisioning server OTP set over MEI")
	return PTSuccess
}

// StartConfiguration opens the provisioning window: the device goes
// in-provisioning, sends hellos and accepts a remote-configuration session.
// The first window of the device's life lasts FirstWindow, later ones
// LaterWindow (amt-protocol.md §2.5).
func (d *Device) StartConfiguration() int {
	const op = "StartConfiguration"
	d.mu.Lock()
	if code, why := d.setupRefusedLocked(); code != PTSuccess {
		code = d.failure(op, code, why)
		d.mu.Unlock()
		return code
	}
	if d.trustedSuffixLocked() == "" {
		// cfgstartconfigurationex.htm: NOT_READY "typically means that either
		// the system is not connected to a DHCP server or that DNS option 15
		// is not present"; without a suffix there is no server to say hello to.
		code := d.failure(op, PTNotReady, "no DNS suffix (no PKI suffix, no DHCP option 15)")
		d.mu.Unlock()
		return code
	}
	window := d.cfg.LaterWindow
	if !d.windowUsed {
		window = d.cfg.FirstWindow
	}
	d.windowUsed = true
	d.state = InProvisioning
	d.windowEnd = d.now().Add(window)
	// An agent reopening the window overrides a window that expired at boot.
	d.faults.WindowExpired = false
	d.lastError = ""
	d.auditLocked("start-configuration", "", fmt.Sprintf("provisioning window opened for %s", window))
	publish := d.changed("start-configuration")
	d.mu.Unlock()
	publish()
	return PTSuccess
}

// StopConfiguration closes the window and returns to pre-provisioning, as
// host-based setup needs (amt-protocol.md §3.3, §6.2).
func (d *Device) StopConfiguration() int {
	const op = "StopConfiguration"
	d.mu.Lock()
	if d.state != InProvisioning {
		code := d.failure(op, PTInvalidPTMode, "device is "+d.state.String())
		d.mu.Unlock()
		return code
	}
	d.state = PreProvisioning
	d.windowEnd = d.now()
	d.staged = staged{}
	d.tls.staged, d.tls.dirty = d.tls.active, false
	d.lastError = ""
	d.auditLocked("stop-configuration", "", "provisioning window closed over MEI")
	publish := d.changed("stop-configuration")
	d.mu.Unlock()
	publish()
	return PTSuccess
}

// UnprovisionFromHost is MEI CFG_Unprovision: a full unprovision without the
// admin password, available only in client control mode (cfgunprovision.htm);
// otherwise AMT_STATUS_INVALID_AMT_MODE, which rpc-go reports for an ACM
// device (pkg/pthi/commands.go Unprovision).
func (d *Device) UnprovisionFromHost() int {
	const op = "CFG_Unprovision"
	d.mu.Lock()
	if d.state != PostProvisioning || d.mode != ModeClient {
		code := d.failure(op, PTInvalidPTMode, "only available in client control mode; device is "+d.state.String()+"/"+d.mode.String())
		d.mu.Unlock()
		return code
	}
	publish := d.unprovisionLocked(1)
	d.mu.Unlock()
	publish()
	return PTSuccess
}

// LocalSystemAccount is the $$OsAdmin account GetLocalSystemAccount hands
// to host software.
func (d *Device) LocalSystemAccount() (user, password string) {
	return LocalUser, d.localPassword
}

// LANSettings is CFG_GetLANInterfaceSettings' answer.
type LANSettings struct {
	Enabled  bool
	IPv4     net.IP // nil: none
	DHCP     bool
	DHCPMode uint8 // 1 active (AMT's own DHCP client), 2 passive; 0 with a static address
	LinkUp   bool
	MAC      net.HardwareAddr
}

// LANInterfaceSettings answers for interface 0 (wired); the simulated
// device has no wireless interface (1), which it refuses as an invalid
// parameter.
func (d *Device) LANInterfaceSettings(index uint32) (LANSettings, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if index != 0 {
		return LANSettings{}, PTInvalidParameter
	}
	s := LANSettings{Enabled: true, IPv4: d.ipv4, DHCP: d.dhcp, LinkUp: !d.now().Before(d.rebootUntil), MAC: d.mac}
	if d.dhcp {
		s.DHCPMode = 1
	}
	return s, PTSuccess
}

// HashEntries returns a copy of the hash table in handle order.
func (d *Device) HashEntries() []firmware.HashEntry {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]firmware.HashEntry, len(d.table.Entries))
	copy(out, d.table.Entries)
	return out
}
