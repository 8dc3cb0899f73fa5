package monitor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
)

// Worker logs. A worker writes its stdout and stderr straight into
// <LogDir>/<worker_id>.log, opened with O_APPEND: no pipe and no copying
// goroutine, and a re-adopted worker keeps a valid stdout after the hive that
// started it is gone (a pipe would give it SIGPIPE). The cap is enforced the
// way logrotate's copytruncate does it: once the file reaches LogMaxBytes
// (checked every second and before each read), its content moves to .log.1
// and the file is truncated; the worker's appends continue at the new end.
// So a worker keeps at most about 2 × LogMaxBytes, plus what it writes within
// one check interval; as with copytruncate, a line written between the copy
// and the truncation can be lost.

func (m *Monitor) logPathFor(id string) string { return m.logDir + "/" + id + ".log" }

func openLog(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
}

// capLog rotates path to path.1 once it holds maxBytes or more.
func capLog(path string, maxBytes int64, log *slog.Logger) {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() < maxBytes {
		return
	}
	if err := rotateLog(path); err != nil {
		log.Warn("rotate worker log", "path", path, "err", err)
	}
}

func rotateLog(path string) error {
	src, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := path + ".1.tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		os.Remove(tmp)
		return err
	}
	if err := dst.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path+".1"); err != nil {
		return err
	}
	return src.Truncate(0)
}

// tailLines returns the last n lines of path.1 followed by path (all of
// them when n <= 0).
func tailLines(path string, n int) ([]byte, error) {
	cur, got, err := tailFile(path, n)
	if err != nil {
		return nil, err
	}
	if n > 0 && got >= n {
		return cur, nil
	}
	rest := 0
	if n > 0 {
		rest = n - got
	}
	old, _, err := tailFile(path+".1", rest)
	if err != nil {
		return nil, err
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		old = append(old, '\n')
	}
	return append(old, cur...), nil
}

// tailFile returns the last n lines of a file (all when n <= 0) and how
// many lines that is. A missing file is empty. It reads backwards from the
// end in blocks, so a large log costs only what is returned.
func tailFile(path string, n int) ([]byte, int, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("worker log: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("worker log: %w", err)
	}
	size := fi.Size()
	if n <= 0 {
		b, err := io.ReadAll(f)
		if err != nil {
			return nil, 0, fmt.Errorf("worker log: %w", err)
		}
		return b, countLines(b), nil
	}
	const block = 32 << 10
	var buf []byte
	off := size
	for off > 0 {
		step := int64(block)
		if off < step {
			step = off
		}
		off -= step
		chunk := make([]byte, step)
		if _, err := f.ReadAt(chunk, off); err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, fmt.Errorf("worker log: %w", err)
		}
		buf = append(chunk, buf...)
		// One newline more than n lines need marks where the tail starts.
		if bytes.Count(trimFinalNewline(buf), []byte{'\n'}) >= n {
			break
		}
	}
	body := trimFinalNewline(buf)
	cut := len(body)
	for i := 0; i < n && cut >= 0; i++ {
		cut = bytes.LastIndexByte(body[:cut], '\n')
	}
	if cut >= 0 {
		buf = buf[cut+1:]
	}
	return buf, countLines(buf), nil
}

func trimFinalNewline(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\n' {
		return b[:len(b)-1]
	}
	return b
}

func countLines(b []byte) int {
	if len(b) == 0 {
		return 0
	}
	return bytes.Count(trimFinalNewline(b), []byte{'\n'}) + 1
}
