package resources

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// readMeminfo returns MemTotal and MemAvailable in bytes from a
// /proc/meminfo-format file.
func readMeminfo(path string) (total, available uint64, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("read meminfo: %w", err)
	}
	var haveTotal, haveAvail bool
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := bytes.Fields(sc.Bytes())
		if len(fields) == 0 {
			continue
		}
		var dst *uint64
		switch string(fields[0]) {
		case "MemTotal:":
			dst, haveTotal = &total, true
		case "MemAvailable:":
			dst, haveAvail = &available, true
		default:
			continue
		}
		v, err := parseMeminfoValue(fields)
		if err != nil {
			return 0, 0, fmt.Errorf("parse %s: %w", path, err)
		}
		*dst = v
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("parse %s: %w", path, err)
	}
	if !haveTotal || !haveAvail {
		return 0, 0, fmt.Errorf("parse %s: MemTotal or MemAvailable missing", path)
	}
	return total, available, nil
}

// parseMeminfoValue reads "Name: N kB" (the kernel always says kB, meaning
// KiB) or a bare "Name: N" (bytes).
func parseMeminfoValue(fields [][]byte) (uint64, error) {
	name := string(fields[0])
	if len(fields) < 2 || len(fields) > 3 {
		return 0, fmt.Errorf("malformed line %q", bytes.Join(fields, []byte(" ")))
	}
	v, err := strconv.ParseUint(string(fields[1]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s value: %w", name, err)
	}
	if len(fields) == 2 {
		return v, nil
	}
	if string(fields[2]) != "kB" {
		return 0, fmt.Errorf("%s: unknown unit %q", name, fields[2])
	}
	if v > (1<<64-1)/1024 {
		return 0, fmt.Errorf("%s value %d kB overflows", name, v)
	}
	return v * 1024, nil
}
