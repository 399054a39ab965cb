package device

import "fmt"

// ProvisioningState is AMT_SetupAndConfigurationService.ProvisioningState.
type ProvisioningState int

const (
	PreProvisioning  ProvisioningState = 0 // factory mode
	InProvisioning   ProvisioningState = 1 // setup mode: hello window open
	PostProvisioning ProvisioningState = 2 // provisioned
)

func (s ProvisioningState) String() string {
	switch s {
	case PreProvisioning:
		return "pre-provisioning"
	case InProvisioning:
		return "in-provisioning"
	case PostProvisioning:
		return "post-provisioning"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// ControlMode is IPS_HostBasedSetupService.CurrentControlMode.
type ControlMode int

const (
	ModeNone   ControlMode = 0
	ModeClient ControlMode = 1 // CCM
	ModeAdmin  ControlMode = 2 // ACM
)

func (m ControlMode) String() string {
	switch m {
	case ModeNone:
		return "none"
	case ModeClient:
		return "ccm"
	case ModeAdmin:
		return "acm"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Return values (amt-protocol.md §3.3 tables).
const (
	// AMT_SetupAndConfigurationService, AMT_AuthorizationService, time sync.
	PTSuccess           = 0
	PTInternalError     = 1
	PTNotPermitted      = 16
	PTInvalidParameter  = 36
	PTFlashWriteLimit   = 38
	PTInvalidPassword   = 2054
	PTDataMissing       = 2057
	PTBlockingComponent = 2076

	// IPS_HostBasedSetupService.AddNextCertInChain.
	CertSuccess             = 0
	CertInvalidParam        = 1
	CertInternalError       = 2
	CertInvalidState        = 3
	CertVerifyFailed        = 4
	CertChainLengthExceeded = 5

	// IPS_HostBasedSetupService.AdminSetup / Setup / UpgradeClientToAdmin.
	HBSSuccess        = 0
	HBSInternalError  = 1
	HBSInvalidState   = 2
	HBSInvalidParam   = 3
	HBSMethodDisabled = 4 // Setup only
	HBSAuthFailed     = 5
)

// CertChainStatus values of IPS_HostBasedSetupService.
const (
	ChainNotStarted = 0
	ChainInProgress = 1
	ChainComplete   = 2
)
