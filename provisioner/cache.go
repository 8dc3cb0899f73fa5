package provisioner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// repoDir is models--org--name under the cache.
func (p *Provisioner) repoDir(repo string) string {
	return filepath.Join(p.cacheDir, "models--"+strings.ReplaceAll(repo, "/", "--"))
}

// lockPath is where huggingface_hub keeps its lock for a blob, so that its
// tools and this process exclude each other too.
func (p *Provisioner) lockPath(repo, blobID string) string {
	return filepath.Join(p.cacheDir, ".locks", filepath.Base(p.repoDir(repo)), blobID+".lock")
}

// commitFor finds the commit a revision points to in the cache.
func (p *Provisioner) commitFor(r Ref) (string, bool) {
	rev := r.revision()
	if isCommit(rev) {
		return rev, true
	}
	b, err := os.ReadFile(filepath.Join(p.repoDir(r.Repo), "refs", filepath.FromSlash(rev)))
	if err != nil {
		return "", false
	}
	c := strings.TrimSpace(string(b))
	return c, isCommit(c)
}

// cachedHF finds an hf: model in the cache without any network call.
func (p *Provisioner) cachedHF(r Ref) (Model, bool) {
	commit, ok := p.commitFor(r)
	if !ok {
		return Model{}, false
	}
	snap := filepath.Join(p.repoDir(r.Repo), "snapshots", commit)
	m := Model{Ref: r.String(), Commit: commit}
	if r.Path != "" {
		lp := filepath.Join(snap, filepath.FromSlash(r.Path))
		st, err := os.Stat(lp)
		if err != nil || !st.Mode().IsRegular() {
			return Model{}, false
		}
		m.LocalPath, m.SizeBytes = lp, st.Size()
		// An LFS blob is named by its sha256: no need to hash.
		if target, err := os.Readlink(lp); err == nil && isSHA256(filepath.Base(target)) {
			m.SHA256 = filepath.Base(target)
		}
		return m, true
	}
	var size int64
	files := 0
	err := filepath.WalkDir(snap, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		st, err := os.Stat(path) // follows the link: a dangling one fails
		if err != nil {
			return err
		}
		size += st.Size()
		files++
		return nil
	})
	if err != nil || files == 0 {
		return Model{}, false
	}
	m.LocalPath, m.SizeBytes = snap, size
	return m, true
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	return isCommit(s[:40]) && isCommit(s[24:])
}

// link points snapshots/<commit>/<path> at ../../blobs/<id> (relative, as
// huggingface_hub does).
func link(repoDir, commit, path, blobID string) error {
	lp := filepath.Join(repoDir, "snapshots", commit, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(lp), 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(lp), filepath.Join(repoDir, "blobs", blobID))
	if err != nil {
		return err
	}
	if cur, err := os.Readlink(lp); err == nil && cur == rel {
		return nil
	}
	tmp := lp + ".rbee-tmp"
	os.Remove(tmp)
	if err := os.Symlink(rel, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, lp)
}

// writeRef records refs/<rev> → commit.
func writeRef(repoDir, rev, commit string) error {
	if isCommit(rev) {
		return nil
	}
	path := filepath.Join(repoDir, "refs", filepath.FromSlash(rev))
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == commit {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".rbee-tmp"
	if err := os.WriteFile(tmp, []byte(commit), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// blobFetch is one blob download in flight in this process; every
// provision that needs the blob follows its progress.
type blobFetch struct {
	done chan struct{}
	err  error

	mu     sync.Mutex
	bytes  int64 // net progress so far
	nextID int
	subs   map[int]func(int64)
}

// follow adds a progress receiver, bringing it up to date first.
func (b *blobFetch) follow(fn func(int64)) (unfollow func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	id := b.nextID
	b.nextID++
	b.subs[id] = fn
	if b.bytes != 0 {
		fn(b.bytes)
	}
	return func() {
		b.mu.Lock()
		delete(b.subs, id)
		b.mu.Unlock()
	}
}

func (b *blobFetch) progress(d int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bytes += d
	for _, fn := range b.subs {
		fn(d)
	}
}

// fetchBlob makes sure blobs/<id> exists and is verified: one download per
// blob in the process (the first caller fetches, later ones follow it) and
// across processes (flock).
func (p *Provisioner) fetchBlob(ctx context.Context, repo string, spec blobSpec, progress func(int64)) error {
	blob := filepath.Join(p.repoDir(repo), "blobs", spec.id)
	if st, err := os.Stat(blob); err == nil && st.Size() == spec.size {
		progress(spec.size)
		return nil
	}
	p.blobMu.Lock()
	f := p.blobFetches[blob]
	leader := f == nil
	if leader {
		f = &blobFetch{done: make(chan struct{}), subs: map[int]func(int64){}}
		p.blobFetches[blob] = f
	}
	unfollow := f.follow(progress)
	p.blobMu.Unlock()
	defer unfollow()
	if leader {
		f.err = p.fetchBlobLocked(ctx, repo, blob, spec, f.progress)
		p.blobMu.Lock()
		delete(p.blobFetches, blob)
		p.blobMu.Unlock()
		close(f.done)
		return f.err
	}
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Provisioner) fetchBlobLocked(ctx context.Context, repo, blob string, spec blobSpec, progress func(int64)) error {
	unlock, err := lockFile(ctx, p.lockPath(repo, spec.id))
	if err != nil {
		return err
	}
	defer unlock()
	if st, err := os.Stat(blob); err == nil && st.Size() == spec.size {
		progress(spec.size) // another process fetched it meanwhile
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return err
	}
	part := blob + ".incomplete"
	received := func(n int64) { p.bytesDownloaded.Add(n) }
	for try := 1; ; try++ {
		done := int64(0)
		track := func(d int64) { done += d; progress(d) }
		err := p.hub.download(ctx, spec, part, track, received)
		if err == nil {
			break
		}
		progress(-done)
		if !errors.Is(err, errChecksum) {
			return err
		}
		os.Remove(part)
		if try == 2 {
			return fmt.Errorf("%w: %v (twice)", ErrChecksumMismatch, err)
		}
		p.log.Warn("downloaded blob did not verify, starting over", "blob", spec.id, "err", err)
	}
	if err := os.Rename(part, blob); err != nil {
		return fmt.Errorf("move blob into place: %w", err)
	}
	return nil
}

// testHookLockBusy, set by tests only, is called while another process
// holds a blob lock.
var testHookLockBusy func(path string)

// lockFile takes an exclusive flock on path, waiting until ctx ends.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() {
				unix.Flock(int(f.Fd()), unix.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if testHookLockBusy != nil {
			testHookLockBusy(path)
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// removeModelFiles deletes a model's snapshot entry and every blob of the
// repo that no snapshot links to any more; it returns the bytes freed.
func (p *Provisioner) removeModelFiles(r Ref, m Model) (int64, error) {
	dir := p.repoDir(r.Repo)
	snaps := filepath.Join(dir, "snapshots")
	if err := os.RemoveAll(m.LocalPath); err != nil {
		return 0, fmt.Errorf("remove %s: %w", m.LocalPath, err)
	}
	// Drop directories left empty, up to snapshots/.
	for d := filepath.Dir(m.LocalPath); strings.HasPrefix(d, snaps+string(filepath.Separator)); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break
		}
	}
	used := map[string]bool{}
	commits := map[string]bool{}
	filepath.WalkDir(snaps, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if rel, err := filepath.Rel(snaps, path); err == nil && !strings.Contains(rel, string(filepath.Separator)) && d.IsDir() && rel != "." {
			commits[rel] = true
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if t, err := os.Readlink(path); err == nil {
				used[filepath.Base(t)] = true
			}
		}
		return nil
	})
	var freed int64
	entries, _ := os.ReadDir(filepath.Join(dir, "blobs"))
	for _, e := range entries {
		name := e.Name()
		if used[name] || strings.HasSuffix(name, ".incomplete") || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		if os.Remove(filepath.Join(dir, "blobs", name)) == nil {
			freed += info.Size()
		}
	}
	// refs pointing at a snapshot that is gone go too.
	filepath.WalkDir(filepath.Join(dir, "refs"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && !commits[strings.TrimSpace(string(b))] {
			os.Remove(path)
		}
		return nil
	})
	if len(commits) == 0 {
		if rest, _ := os.ReadDir(filepath.Join(dir, "blobs")); len(rest) == 0 {
			os.RemoveAll(dir)
		}
	}
	return freed, nil
}

// usage sums the verified blobs of every repo in the cache.
func (p *Provisioner) usage() int64 {
	repos, _ := filepath.Glob(filepath.Join(p.cacheDir, "models--*", "blobs"))
	var total int64
	for _, b := range repos {
		entries, _ := os.ReadDir(b)
		for _, e := range entries {
			if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), ".incomplete") {
				continue
			}
			if info, err := e.Info(); err == nil {
				total += info.Size()
			}
		}
	}
	return total
}
