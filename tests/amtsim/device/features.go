package device

import (
	"errors"
	"fmt"
)

// Errors of the configuration classes. WS-Transfer operations (Get, Put,
// Create) have no ReturnValue, so the transport turns these into SOAP faults.
var (
	// ErrNotActivated: the class is only reachable with the admin account
	// of an activated device.
	ErrNotActivated = errors.New("access denied: the device is not activated")
	// ErrInvalidValue: a property value the firmware does not accept.
	ErrInvalidValue = errors.New("invalid representation")
	// ErrAlreadyExists: a Create of an instance that exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrNoInstance: a selector names no instance.
	ErrNoInstance = errors.New("no such instance")
)

// AMT_RedirectionService.EnabledState / RequestStateChange values: the low
// two bits are IDER (1) and SOL (2) on top of 32768.
const (
	RedirectionBase    = 32768
	redirectionIDERBit = 1
	redirectionSOLBit  = 2
)

// CIM_KVMRedirectionSAP states.
const (
	KVMEnabled           = 2
	KVMDisabled          = 3
	KVMEnabledButOffline = 6 // enabled, no session open
)

// OptInRequired values of IPS_OptInService.
const (
	OptInNone uint32 = 0
	OptInKVM  uint32 = 1
	OptInAll  uint32 = 0xFFFFFFFF
)

// CIM RequestStateChange return values.
const (
	RSCCompleted        = 0
	RSCInvalidParameter = 5
)

// features is the device's redirection and consent configuration. The
// factory defaults are those of MEBx's usual defaults: SOL, IDER and KVM
// allowed, the redirection listener off, consent needed for KVM.
type features struct {
	sol, ider, listener bool
	kvm                 bool
	kvmRequested        int
	optIn               uint32
	kvmSettings         KVMSettings
}

func factoryFeatures() features {
	return features{sol: true, ider: true, kvm: true, kvmRequested: KVMEnabled, optIn: OptInKVM,
		kvmSettings: KVMSettings{OptInPolicy: true, OptInPolicyTimeout: 120, SessionTimeout: 10}}
}

// Redirection is AMT_RedirectionService.
type Redirection struct {
	SOL, IDER, ListenerEnabled bool
}

// EnabledState is the AMT_RedirectionService.EnabledState of r.
func (r Redirection) EnabledState() int {
	s := RedirectionBase
	if r.IDER {
		s |= redirectionIDERBit
	}
	if r.SOL {
		s |= redirectionSOLBit
	}
	return s
}

// requireAdminLocked refuses the configuration classes before activation,
// except over the remote-configuration session itself: MeshCentral's
// bare-metal flow generates the TLS key, adds the certificate and enables
// TLS before its CommitChanges, and activates real firmware that way
// (amtprovisioningserver.js, attemptTlsSync → amtPerformCommit), so the
// firmware authorises them on the provisioning chain's TLS session. Only a
// remote client that passed the chain rules reaches 16993 in setup mode.
func (d *Device) requireAdminLocked(op string) error {
	if d.state != PostProvisioning && d.state != InProvisioning {
		d.refuse(op, "device is "+d.state.String())
		return fmt.Errorf("%s: %w", op, ErrNotActivated)
	}
	return nil
}

// refuse records an operation answered with a fault.
func (d *Device) refuse(op, why string) {
	d.lastError = op + " refused: " + why
	d.log.Warn("operation refused", "op", op, "reason", why)
}

// invalid records and returns an ErrInvalidValue.
func (d *Device) invalid(op, format string, args ...any) error {
	why := fmt.Sprintf(format, args...)
	d.refuse(op, why)
	return fmt.Errorf("%s: %w: %s", op, ErrInvalidValue, why)
}

// GetRedirection reads AMT_RedirectionService.
func (d *Device) GetRedirection() (Redirection, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.requireAdminLocked("Get AMT_RedirectionService"); err != nil {
		return Redirection{}, err
	}
	return Redirection{SOL: d.feat.sol, IDER: d.feat.ider, ListenerEnabled: d.feat.listener}, nil
}

// RedirectionStateChange is AMT_RedirectionService.RequestStateChange:
// 32768 + IDER (1) + SOL (2).
func (d *Device) RedirectionStateChange(requested int) (int, error) {
	const op = "AMT_RedirectionService.RequestStateChange"
	d.mu.Lock()
	if err := d.requireAdminLocked(op); err != nil {
		d.mu.Unlock()
		return 0, err
	}
	if requested < RedirectionBase || requested > RedirectionBase|redirectionIDERBit|redirectionSOLBit {
		rv := d.failure(op, RSCInvalidParameter, fmt.Sprintf("RequestedState %d is not 32768..32771", requested))
		d.mu.Unlock()
		return rv, nil
	}
	d.feat.ider = requested&redirectionIDERBit != 0
	d.feat.sol = requested&redirectionSOLBit != 0
	publish := d.changed(fmt.Sprintf("redirection(%d)", requested))
	d.mu.Unlock()
	publish()
	return RSCCompleted, nil
}

// SetRedirectionListener is the writable part of a Put of
// AMT_RedirectionService.
func (d *Device) SetRedirectionListener(enabled bool) error {
	d.mu.Lock()
	if err := d.requireAdminLocked("Put AMT_RedirectionService"); err != nil {
		d.mu.Unlock()
		return err
	}
	d.feat.listener = enabled
	publish := d.changed(fmt.Sprintf("redirection-listener(%t)", enabled))
	d.mu.Unlock()
	publish()
	return nil
}

// KVM is CIM_KVMRedirectionSAP.
type KVM struct {
	EnabledState, RequestedState int
}

// GetKVM reads CIM_KVMRedirectionSAP.
func (d *Device) GetKVM() (KVM, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.requireAdminLocked("Get CIM_KVMRedirectionSAP"); err != nil {
		return KVM{}, err
	}
	k := KVM{EnabledState: KVMDisabled, RequestedState: d.feat.kvmRequested}
	if d.feat.kvm {
		k.EnabledState = KVMEnabledButOffline
	}
	return k, nil
}

// KVMStateChange is CIM_KVMRedirectionSAP.RequestStateChange: 2 enables,
// 3 disables.
func (d *Device) KVMStateChange(requested int) (int, error) {
	const op = "CIM_KVMRedirectionSAP.RequestStateChange"
	d.mu.Lock()
	if err := d.requireAdminLocked(op); err != nil {
		d.mu.Unlock()
		return 0, err
	}
	if requested != KVMEnabled && requested != KVMDisabled {
		rv := d.failure(op, RSCInvalidParameter, fmt.Sprintf("RequestedState %d is not 2 (enable) or 3 (disable)", requested))
		d.mu.Unlock()
		return rv, nil
	}
	d.feat.kvm, d.feat.kvmRequested = requested == KVMEnabled, requested
	publish := d.changed(fmt.Sprintf("kvm(%d)", requested))
	d.mu.Unlock()
	publish()
	return RSCCompleted, nil
}

// OptIn is IPS_OptInService.
type OptIn struct {
	OptInRequired        uint32
	CanModifyOptInPolicy bool
}

// GetOptIn reads IPS_OptInService.
func (d *Device) GetOptIn() (OptIn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.requireAdminLocked("Get IPS_OptInService"); err != nil {
		return OptIn{}, err
	}
	return OptIn{OptInRequired: d.feat.optIn, CanModifyOptInPolicy: d.mode == ModeAdmin}, nil
}

// SetOptInRequired is the writable part of a Put of IPS_OptInService: 0
// none, 1 KVM only, 0xFFFFFFFF all. Only admin control mode may relax
// consent; in client control mode consent is always required.
func (d *Device) SetOptInRequired(v uint32) error {
	const op = "Put IPS_OptInService"
	d.mu.Lock()
	if err := d.requireAdminLocked(op); err != nil {
		d.mu.Unlock()
		return err
	}
	if v != OptInNone && v != OptInKVM && v != OptInAll {
		err := d.invalid(op, "OptInRequired %d is not 0, 1 or 4294967295", v)
		d.mu.Unlock()
		return err
	}
	if d.mode != ModeAdmin && v != OptInAll {
		err := d.invalid(op, "OptInRequired %d: user consent can only be relaxed in admin control mode", v)
		d.mu.Unlock()
		return err
	}
	d.feat.optIn = v
	publish := d.changed("user-consent(" + ConsentName(v) + ")")
	d.mu.Unlock()
	publish()
	return nil
}

// ConsentName names an OptInRequired value as profiles do.
func ConsentName(v uint32) string {
	switch v {
	case OptInNone:
		return "none"
	case OptInKVM:
		return "kvm"
	case OptInAll:
		return "all"
	}
	return fmt.Sprint(v)
}

// KVMSettings is IPS_KVMRedirectionSettingData. RFBPassword is write-only.
type KVMSettings struct {
	Is5900PortEnabled  bool
	OptInPolicy        bool
	OptInPolicyTimeout int
	SessionTimeout     int
	DefaultScreen      int
	rfbPasswordSet     bool
}

// KVMSettingsChange carries the properties a Put sets; nil leaves one alone.
type KVMSettingsChange struct {
	Is5900PortEnabled  *bool
	OptInPolicy        *bool
	OptInPolicyTimeout *int
	SessionTimeout     *int
	DefaultScreen      *int
	RFBPassword        *string
}

// GetKVMSettings reads IPS_KVMRedirectionSettingData.
func (d *Device) GetKVMSettings() (KVMSettings, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.requireAdminLocked("Get IPS_KVMRedirectionSettingData"); err != nil {
		return KVMSettings{}, err
	}
	return d.feat.kvmSettings, nil
}

// PutKVMSettings changes IPS_KVMRedirectionSettingData. The RFB (VNC)
// password is exactly 8 characters with the strong-password classes, and
// port 5900 opens only once one is set.
func (d *Device) PutKVMSettings(c KVMSettingsChange) (KVMSettings, error) {
	const op = "Put IPS_KVMRedirectionSettingData"
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.requireAdminLocked(op); err != nil {
		return KVMSettings{}, err
	}
	s := d.feat.kvmSettings
	if c.RFBPassword != nil {
		if len(*c.RFBPassword) != 8 || !validPassword(*c.RFBPassword) {
			return KVMSettings{}, d.invalid(op, "RFBPassword must be 8 characters with upper, lower, digit and symbol")
		}
		s.rfbPasswordSet = true
	}
	if c.Is5900PortEnabled != nil {
		if *c.Is5900PortEnabled && !s.rfbPasswordSet {
			return KVMSettings{}, d.invalid(op, "Is5900PortEnabled needs an RFBPassword")
		}
		s.Is5900PortEnabled = *c.Is5900PortEnabled
	}
	if c.OptInPolicy != nil {
		s.OptInPolicy = *c.OptInPolicy
	}
	for _, v := range []struct {
		name     string
		in       *int
		dst      *int
		min, max int
	}{
		{"OptInPolicyTimeout", c.OptInPolicyTimeout, &s.OptInPolicyTimeout, 0, 65535},
		{"SessionTimeout", c.SessionTimeout, &s.SessionTimeout, 0, 65535},
		{"DefaultScreen", c.DefaultScreen, &s.DefaultScreen, 0, 255},
	} {
		if v.in == nil {
			continue
		}
		if *v.in < v.min || *v.in > v.max {
			return KVMSettings{}, d.invalid(op, "%s %d outside %d..%d", v.name, *v.in, v.min, v.max)
		}
		*v.dst = *v.in
	}
	d.feat.kvmSettings = s
	d.log.Info("KVM settings changed")
	return s, nil
}
