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
	// PT_STATUS / AMT_STATUS: the ReturnValues of
	// AMT_SetupAndConfigurationService, AMT_AuthorizationService and time
	// sync, and the Status of every MEI host-interface (PTHI) response.
	// Numbers from Intel's StatusCodeDefinitions.h (as shipped with Intel's
	// LMS, e.g. illumos usr/src/cmd/lms/heci) and rpc-go pkg/pthi/status.go.
	PTSuccess              = 0
	PTInternalError        = 1
	PTNotReady             = 2 // no DHCP / option 15 yet (CFG_StartConfigurationEx page)
	PTInvalidPTMode        = 3 // AMT_STATUS_INVALID_AMT_MODE: not in the current provisioning state
	PTInvalidMessageLength = 4 // header or embedded length field does not fit the command
	PTNotPermitted         = 16
	PTInvalidParameter     = 36
	PTFlashWriteLimit      = 38
	PTInvalidCommand       = 0x803 // 2051: PT_STATUS_INVALID_COMMAND
	PTInvalidHandle        = 0x805 // 2053
	PTInvalidPassword      = 2054
	PTDataMissing          = 2057
	PTBlockingComponent    = 2076

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
