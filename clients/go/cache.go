package plugins

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cache is a directory of verified artifacts, shared safely by any number of
// processes (every write is a rename of a finished, fsynced file):
//
//	<dir>/blobs/sha256/<64 hex>      artifact bytes, content-addressed
//	<dir>/keys/<sha256 of key>.json  the record of the digest last pulled for a key
//	<dir>/.partial-*                 files being written
//
// Nothing read from it is trusted: a blob is hashed again before it is used,
// and one that no longer matches its name is removed. A blob's mtime is
// touched each time it is used, and blobs beyond the size limit are evicted
// least recently used first.
type cache struct {
	dir      string
	maxBytes int64
	// mu orders this process's evictions; other processes may evict too,
	// which a reader sees as a missing blob (fetched again).
	mu sync.Mutex
}

// record is what the cache remembers of one key.
type record struct {
	Digest     string     `json:"digest"`
	Size       int64      `json:"size"`
	VerifiedBy VerifiedBy `json:"verifiedBy"`
}

// Partial files older than this are a crashed writer's leftovers.
const stalePartial = 24 * time.Hour

func openCache(dir string, maxBytes int64) (*cache, error) {
	if maxBytes < 0 {
		return nil, fmt.Errorf("plugins: WithCache: maxBytes must be ≥ 0, not %d", maxBytes)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("plugins: cache: %w", err)
	}
	if err := private(dir); err != nil {
		return nil, fmt.Errorf("plugins: cache %s: %w", dir, err)
	}
	return &cache{dir: dir, maxBytes: maxBytes}, nil
}

// private checks that only this user can change what dir holds: the
// cache's records say what vouched for a blob and which blob is a key's
// last known good copy, which is loaded into this process. Whoever else
// could write there (a shared temporary folder) could have it load their
// plugin. Blobs are hashed again before use, records are not.
func private(dir string) error {
	info, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return errors.New("not a directory")
	}
	if info.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("other users can write to it (mode %o): chmod go-w it, or use a folder of your own (WithCache)", info.Mode().Perm())
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("it belongs to user %d, not to this process's user %d, who could change what it holds: use a folder of your own (WithCache)", st.Uid, os.Getuid())
	}
	return nil
}

func (c *cache) blobPath(digest string) string {
	return filepath.Join(c.dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

func (c *cache) keyPath(key Key) string {
	id := sha256.Sum256([]byte(key.subject()))
	return filepath.Join(c.dir, "keys", hex.EncodeToString(id[:])+".json")
}

// lookup is the record of key whose blob is still present with its size.
func (c *cache) lookup(key Key) *record {
	text, err := os.ReadFile(c.keyPath(key))
	if err != nil {
		return nil
	}
	var r record
	if json.Unmarshal(text, &r) != nil || !digestPattern.MatchString(r.Digest) {
		return nil
	}
	if info, err := os.Stat(c.blobPath(r.Digest)); err != nil || info.Size() != r.Size {
		return nil
	}
	return &r
}

// verified returns the path of the blob of digest after hashing it again,
// and touches it (least recently used goes first). A blob that no longer
// matches its name is removed; false then, as for a missing one.
func (c *cache) verified(digest string) (string, int64, bool) {
	path := c.blobPath(digest)
	file, err := os.Open(path)
	if err != nil {
		return "", 0, false
	}
	defer file.Close()
	hash := sha256.New()
	size, err := io.Copy(hash, file)
	if err != nil {
		return "", 0, false
	}
	if "sha256:"+hex.EncodeToString(hash.Sum(nil)) != digest {
		_ = os.Remove(path)
		return "", 0, false
	}
	now := time.Now()
	_ = os.Chtimes(path, now, now)
	return path, size, true
}

// partial creates a file to write an artifact into, in the cache's
// directory so that the rename into place is atomic. Nothing else is
// created until an artifact is added: a refused pull leaves the directory
// as it was.
func (c *cache) partial() (*os.File, error) {
	var suffix [8]byte
	_, _ = rand.Read(suffix[:])
	return os.OpenFile(filepath.Join(c.dir, ".partial-"+hex.EncodeToString(suffix[:])), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
}

// add moves the finished, fsynced file at partial into place as the blob of
// r.Digest and records it as key's, then evicts beyond the size limit.
func (c *cache) add(key Key, partial string, r record) (string, error) {
	blob := c.blobPath(r.Digest)
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(partial, blob); err != nil {
		return "", err
	}
	syncDir(filepath.Dir(blob))
	text, _ := json.Marshal(r)
	if err := c.writeFile(c.keyPath(key), text); err != nil {
		return "", err
	}
	c.prune(r.Digest)
	return blob, nil
}

// writeFile writes a small file atomically: temp, fsync, rename.
func (c *cache) writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	file, err := c.partial()
	if err != nil {
		return err
	}
	defer os.Remove(file.Name())
	if _, err := file.Write(data); err != nil {
		file.Close()
		return err
	}
	if err := file.Sync(); err != nil {
		file.Close()
		return err
	}
	if err := file.Close(); err != nil {
		return err
	}
	if err := os.Rename(file.Name(), path); err != nil {
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

// syncDir makes a rename in dir durable; a file system that cannot sync a
// directory loses at most the newest entry on a crash, which is re-fetched.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// prune evicts least recently used blobs until they fit the limit, never
// keep (the one just added), and removes stale partial files. Key records
// left pointing at nothing are ignored by lookup.
func (c *cache) prune(keep string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if entries, err := os.ReadDir(c.dir); err == nil {
		for _, e := range entries {
			if info, err := e.Info(); err == nil && strings.HasPrefix(e.Name(), ".partial-") && time.Since(info.ModTime()) > stalePartial {
				_ = os.Remove(filepath.Join(c.dir, e.Name()))
			}
		}
	}
	if c.maxBytes == 0 {
		return
	}
	type blob struct {
		path string
		size int64
		used time.Time
	}
	var blobs []blob
	var total int64
	_ = filepath.WalkDir(filepath.Join(c.dir, "blobs"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			blobs = append(blobs, blob{path, info.Size(), info.ModTime()})
			total += info.Size()
		}
		return nil
	})
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].used.Before(blobs[j].used) })
	kept := c.blobPath(keep)
	for _, b := range blobs {
		if total <= c.maxBytes {
			break
		}
		if b.path == kept {
			continue
		}
		if err := os.Remove(b.path); err == nil || errors.Is(err, fs.ErrNotExist) {
			total -= b.size
		}
	}
}
