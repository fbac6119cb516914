package main

import (
	"errors"
	"strconv"
	"strings"
)

// byteSize is a flag value in bytes written as a number with an optional
// unit: 512MiB, 10GB, 1073741824. KB, MB, GB and TB are powers of 1000;
// KiB, MiB, GiB and TiB powers of 1024. The zero value is 0.
type byteSize int64

var sizeUnits = []struct {
	suffix string
	factor int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12}, {"b", 1},
}

// String writes the size with the largest unit that divides it exactly
// (4MiB, 10GB), so that --help shows defaults as a person writes them; a
// size no unit divides is a plain number of bytes.
func (s *byteSize) String() string {
	n := int64(*s)
	if n == 0 {
		return "0"
	}
	for _, u := range []struct {
		name   string
		factor int64
	}{{"TiB", 1 << 40}, {"TB", 1e12}, {"GiB", 1 << 30}, {"GB", 1e9}, {"MiB", 1 << 20}, {"MB", 1e6}, {"KiB", 1 << 10}, {"KB", 1e3}} {
		if n%u.factor == 0 {
			return strconv.FormatInt(n/u.factor, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// Type names the value in --help and in badValue's "want …".
func (s *byteSize) Type() string { return "size" }

func (s *byteSize) Set(v string) error {
	text := strings.ToLower(strings.TrimSpace(v))
	factor := int64(1)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(text, u.suffix); ok {
			text, factor = strings.TrimSpace(rest), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil || n < 0 || n > (1<<63-1)/factor {
		return errors.New("want a size such as 10GB, 512MiB or 0")
	}
	*s = byteSize(n * factor)
	return nil
}
