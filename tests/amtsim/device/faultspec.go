package device

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// FaultNames documents the fault knobs accepted by ApplyFault.
const FaultNames = `drop-commit-response        commit, then close the connection without answering
  wrong-realm                 AMT_GeneralSettings reports a realm digest auth does not use
  expired-window              the provisioning window is closed at boot: no hellos, 16993 resets
  hash-inactive               custom root hashes are stored inactive (not in hello, not trusted)
  slow=DURATION               delay every WS-Man answer
  reset-at=N                  once: TCP RST instead of answering the Nth HTTP request of a connection (401 rounds count)
  reboot-during-activation[=DOWNTIME]
                              once: reboot instead of answering CommitChanges/AdminSetup/Setup`

// ApplyFault sets one fault from "name[=value]".
func (f *Faults) ApplyFault(spec string) error {
	name, val, hasVal := strings.Cut(spec, "=")
	noValue := func() error {
		if hasVal {
			return fmt.Errorf("fault %q takes no value", name)
		}
		return nil
	}
	switch name {
	case "drop-commit-response":
		f.DropResponseAfterCommit = true
		return noValue()
	case "wrong-realm":
		f.WrongRealm = true
		return noValue()
	case "expired-window":
		f.WindowExpired = true
		return noValue()
	case "hash-inactive":
		f.HashInactive = true
		return noValue()
	case "slow":
		d, err := time.ParseDuration(val)
		if err != nil || d <= 0 {
			return fmt.Errorf("fault slow=%q: want a positive duration", val)
		}
		f.Slow = d
	case "reset-at":
		n, err := strconv.Atoi(val)
		if err != nil || n < 1 {
			return fmt.Errorf("fault reset-at=%q: want a request number >= 1", val)
		}
		f.ResetAtRequest = n
	case "reboot-during-activation":
		f.RebootDuringActivation = true
		if hasVal {
			d, err := time.ParseDuration(val)
			if err != nil || d <= 0 {
				return fmt.Errorf("fault reboot-during-activation=%q: want a positive duration", val)
			}
			f.RebootDowntime = d
		}
	default:
		return fmt.Errorf("unknown fault %q", name)
	}
	return nil
}
