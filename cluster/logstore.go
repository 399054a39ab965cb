package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/branchbox/branchbox/cluster/raftlog"
)

// raftStores is where raft keeps its state: entries in a raftlog segment
// log (one fdatasync per commit), and the few stable keys (current term,
// vote) in raft.db.
type raftStores struct {
	stable *raftboltdb.BoltStore
	log    *raftlog.Store
}

// openRaftStores opens both stores under raftDir. Entries that an older
// release kept in raft.db are moved into the segment log first.
func openRaftStores(raftDir string) (*raftStores, error) {
	stable, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(raftDir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("open raft stable store: %w", err)
	}
	logDir := filepath.Join(raftDir, "log")
	if _, err := os.Stat(logDir); errors.Is(err, fs.ErrNotExist) {
		if err := migrateLog(stable, raftDir, logDir); err != nil {
			stable.Close()
			return nil, err
		}
	}
	log, err := raftlog.Open(logDir, 0)
	if err != nil {
		stable.Close()
		return nil, err
	}
	// raft.db and log/ may have just been created: make their names
	// durable too.
	if err := raftlog.SyncDir(raftDir); err != nil {
		log.Close()
		stable.Close()
		return nil, err
	}
	// Entries still in raft.db were copied by a migration that stopped
	// before it could drop them.
	if err := dropLogs(stable); err != nil {
		log.Close()
		stable.Close()
		return nil, err
	}
	return &raftStores{stable: stable, log: log}, nil
}

// migrateLog copies raft.db's entries into a new segment log, built
// aside and renamed into place so a stop part-way starts over.
func migrateLog(from raft.LogStore, raftDir, logDir string) error {
	first, last, err := logRange(from)
	if err != nil {
		return fmt.Errorf("raft log migration: %w", err)
	}
	// A bolt log can have a hole: a follower that installed a snapshot
	// keeps the entries it had below it. Only the unbroken run that ends
	// at the last entry matters; raft's snapshot covers the rest.
	for i := last; first > 0 && i > first; i-- {
		var l raft.Log
		if err := from.GetLog(i-1, &l); errors.Is(err, raft.ErrLogNotFound) {
			first = i
			break
		} else if err != nil {
			return fmt.Errorf("raft log migration: entry %d: %w", i-1, err)
		}
	}
	tmp := logDir + ".migrating"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("raft log migration: %w", err)
	}
	to, err := raftlog.Open(tmp, 0)
	if err != nil {
		return fmt.Errorf("raft log migration: %w", err)
	}
	for i := first; first > 0 && i <= last; {
		var batch []*raft.Log
		for ; i <= last && len(batch) < 256; i++ {
			l := new(raft.Log)
			if err := from.GetLog(i, l); err != nil {
				to.Close()
				return fmt.Errorf("raft log migration: entry %d: %w", i, err)
			}
			batch = append(batch, l)
		}
		if err := to.StoreLogs(batch); err != nil {
			to.Close()
			return fmt.Errorf("raft log migration: %w", err)
		}
	}
	to.Close()
	if err := os.Rename(tmp, logDir); err != nil {
		return fmt.Errorf("raft log migration: %w", err)
	}
	return raftlog.SyncDir(raftDir)
}

func logRange(s raft.LogStore) (first, last uint64, err error) {
	if first, err = s.FirstIndex(); err != nil {
		return 0, 0, err
	}
	last, err = s.LastIndex()
	return first, last, err
}

func dropLogs(s raft.LogStore) error {
	first, last, err := logRange(s)
	if err != nil {
		return fmt.Errorf("raft.db: %w", err)
	}
	if last == 0 {
		return nil
	}
	if err := s.DeleteRange(first, last); err != nil {
		return fmt.Errorf("raft.db: dropping migrated entries: %w", err)
	}
	return nil
}

func (s *raftStores) Close() error {
	err := s.log.Close()
	if cerr := s.stable.Close(); err == nil {
		err = cerr
	}
	return err
}
