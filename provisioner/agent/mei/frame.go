// Package mei is the agent's client for the Intel AMT Host Interface
// (PTHI, "AMTHI") reached through the Management Engine Interface: the
// message framing of amt-protocol.md §7.1, the provisioning commands the
// agent needs, and two transports carrying the same bytes — the Linux
// /dev/mei0 character device and a Unix stream socket (for amtsim).
//
// Layouts and codes come from Intel's own LMS (github.com/intel/lms,
// MEIClient/AMTHIClient), rpc-go (github.com/device-management-toolkit/rpc-go,
// pkg/pthi, pkg/heci) and MeshCentral's agent (agents/modules_meshcore/amt-mei.js);
// each decoder names the source it follows.
package mei

import (
	"encoding/binary"
	"fmt"
)

// Framing (amt-protocol.md §7.1; LMS AMTHICommand.h AMTHI_MESSAGE_HEADER,
// rpc-go pkg/pthi/types.go MessageHeader): version major u8, minor u8,
// reserved u16, command u32 LE, length u32 LE of what follows the header.
// A response sets bit 23 of the command and starts its payload with a u32
// status.
const (
	headerLen    = 12
	statusLen    = 4
	versionMajor = 1
	versionMinor = 1
	responseBit  = 0x00800000

	// MaxMessage bounds one message either way. The largest response the
	// agent asks for, GetCodeVersions with rpc-go's fixed 50 entries, is
	// 12+4+65+4+50*44 = 2285 bytes; amtsim refuses headers past 4 KiB.
	MaxMessage = 4096
)

// Command is a PTHI request code; the response carries Command|0x00800000.
type Command uint32

// Request codes: amt-protocol.md §7.1, rpc-go pkg/pthi/types.go (*_REQUEST),
// LMS MEIClient/AMTHIClient/Include/*Command.h (REQUEST_COMMAND_NUMBER).
const (
	CmdUnprovision              Command = 0x04000010
	CmdGetProvisioningState     Command = 0x04000011
	CmdGetCodeVersions          Command = 0x0400001A
	CmdStartConfiguration       Command = 0x04000029
	CmdSetProvisioningServerOTP Command = 0x0400002A
	CmdEnumerateHashHandles     Command = 0x0400002C
	CmdGetCertificateHashEntry  Command = 0x0400002D
	CmdGetPkiFqdnSuffix         Command = 0x04000036
	CmdGetLANInterfaceSettings  Command = 0x04000048
	CmdGetUUID                  Command = 0x0400005C
	CmdStopConfiguration        Command = 0x0400005E
	CmdGetLocalSystemAccount    Command = 0x04000067
	CmdGetControlMode           Command = 0x0400006B
)

var commandNames = map[Command]string{
	CmdUnprovision:              "Unprovision",
	CmdGetProvisioningState:     "GetProvisioningState",
	CmdGetCodeVersions:          "GetCodeVersions",
	CmdStartConfiguration:       "StartConfiguration",
	CmdSetProvisioningServerOTP: "SetProvisioningServerOTP",
	CmdEnumerateHashHandles:     "EnumerateHashHandles",
	CmdGetCertificateHashEntry:  "GetCertificateHashEntry",
	CmdGetPkiFqdnSuffix:         "GetPkiFqdnSuffix",
	CmdGetLANInterfaceSettings:  "GetLANInterfaceSettings",
	CmdGetUUID:                  "GetUUID",
	CmdStopConfiguration:        "StopConfiguration",
	CmdGetLocalSystemAccount:    "GetLocalSystemAccount",
	CmdGetControlMode:           "GetControlMode",
}

func (c Command) String() string {
	if n, ok := commandNames[c]; ok {
		return n
	}
	return fmt.Sprintf("command 0x%08X", uint32(c))
}

// Status is the u32 every response starts with.
type Status uint32

// Status codes from Intel LMS MEIClient/Include/StatusCodeDefinitions.h
// ("as defined in the Intel(R) AMT Network Design Guide"); rpc-go
// pkg/pthi/status.go and MeshCentral amt-mei.js list the same values for
// the subset they use.
const (
	StatusSuccess              Status = 0x0
	StatusInternalError        Status = 0x1
	StatusNotReady             Status = 0x2
	StatusInvalidPTMode        Status = 0x3 // "not permitted in current operating mode"
	StatusInvalidMessageLength Status = 0x4
	StatusNotPermitted         Status = 0x10
	StatusMaxLimitReached      Status = 0x17
	StatusInvalidParameter     Status = 0x24
	StatusFlashWriteLimit      Status = 0x26
	StatusDisabledByPolicy     Status = 0x400
	StatusInvalidCommand       Status = 0x803
	StatusInvalidHandle        Status = 0x805
	StatusInvalidPassword      Status = 0x806
	StatusDataMissing          Status = 0x809
	StatusUnsupported          Status = 0x812
	StatusNotFound             Status = 0x814
	StatusBlockingComponent    Status = 0x81C
)

var statusNames = map[Status]string{
	StatusSuccess:              "AMT_STATUS_SUCCESS",
	StatusInternalError:        "AMT_STATUS_INTERNAL_ERROR",
	StatusNotReady:             "AMT_STATUS_NOT_READY",
	StatusInvalidPTMode:        "AMT_STATUS_INVALID_PT_MODE",
	StatusInvalidMessageLength: "AMT_STATUS_INVALID_MESSAGE_LENGTH",
	StatusNotPermitted:         "AMT_STATUS_NOT_PERMITTED",
	StatusMaxLimitReached:      "AMT_STATUS_MAX_LIMIT_REACHED",
	StatusInvalidParameter:     "AMT_STATUS_INVALID_PARAMETER",
	StatusFlashWriteLimit:      "AMT_STATUS_FLASH_WRITE_LIMIT_EXCEEDED",
	StatusDisabledByPolicy:     "AMT_STATUS_DISABLED_BY_POLICY",
	StatusInvalidCommand:       "AMT_STATUS_INVALID_COMMAND",
	StatusInvalidHandle:        "AMT_STATUS_INVALID_HANDLE",
	StatusInvalidPassword:      "AMT_STATUS_INVALID_PASSWORD",
	StatusDataMissing:          "AMT_STATUS_DATA_MISSING",
	StatusUnsupported:          "AMT_STATUS_UNSUPPORTED",
	StatusNotFound:             "AMT_STATUS_NOT_FOUND",
	StatusBlockingComponent:    "AMT_STATUS_BLOCKING_COMPONENT",
}

func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return fmt.Sprintf("0x%X %s", uint32(s), n)
	}
	return fmt.Sprintf("0x%X", uint32(s))
}

// StatusError is a well-formed response whose status is not success: the
// firmware refused the command.
type StatusError struct {
	Command Command
	Status  Status
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("pthi %s: firmware status %s", e.Command, e.Status)
}

// FrameError is a response that does not fit the framing or the
// command's layout: a different firmware, a broken transport, or a peer
// that is not AMT.
type FrameError struct {
	Command Command
	Detail  string
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("pthi %s: malformed response: %s", e.Command, e.Detail)
}

func frameErr(c Command, format string, args ...any) error {
	return &FrameError{Command: c, Detail: fmt.Sprintf(format, args...)}
}

// encodeRequest frames one request.
func encodeRequest(c Command, payload []byte) []byte {
	b := make([]byte, headerLen, headerLen+len(payload))
	b[0], b[1] = versionMajor, versionMinor
	binary.LittleEndian.PutUint32(b[4:], uint32(c))
	binary.LittleEndian.PutUint32(b[8:], uint32(len(payload)))
	return append(b, payload...)
}

// checkResponse validates one whole response message to c and returns
// what follows the status. Intel's LMS (AMTHICommand.h
// verifyHeaderAndStatus) checks the command echo and that the header
// length equals the bytes received; so does this. It also checks the
// major version, because another major would be another framing, but
// neither the minor version nor the reserved field, which no client
// (LMS, rpc-go, MeshCentral) checks and firmware may not keep at 1/0.
func checkResponse(c Command, msg []byte) ([]byte, error) {
	if len(msg) < headerLen+statusLen {
		return nil, frameErr(c, "%d bytes, shorter than the 16-byte header and status", len(msg))
	}
	if msg[0] != versionMajor {
		return nil, frameErr(c, "header version %d.%d, want %d.x", msg[0], msg[1], versionMajor)
	}
	if got, want := binary.LittleEndian.Uint32(msg[4:]), uint32(c)|responseBit; got != want {
		return nil, frameErr(c, "answers command 0x%08X, want 0x%08X", got, want)
	}
	if n := binary.LittleEndian.Uint32(msg[8:]); uint64(n) != uint64(len(msg)-headerLen) {
		return nil, frameErr(c, "header length %d but %d bytes follow the header", n, len(msg)-headerLen)
	}
	if st := Status(binary.LittleEndian.Uint32(msg[12:])); st != StatusSuccess {
		return nil, &StatusError{Command: c, Status: st}
	}
	return msg[headerLen+statusLen:], nil
}
