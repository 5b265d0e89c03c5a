// The API listen address: shared by the config file and POOL_MANAGERD_ADDR.

package config

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
)

// CheckListen validates a listen address: "host:port" (host may be empty for
// all interfaces) or "unix:/absolute/path". The supervisor should apply it to
// POOL_MANAGERD_ADDR too, since that overrides the file.
func CheckListen(addr string) error {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !filepath.IsAbs(path) {
			return fmt.Errorf("unix socket path %q must be absolute", path)
		}
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is neither host:port nor unix:/absolute/path", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q in %q must be a number from 0 to 65535", port, addr)
	}
	return nil
}

// IsLoopback reports whether a listen address is reachable only from this
// host (a unix socket, localhost or a loopback IP). docs/contract.md §2 requires a
// token when it is not; an empty host means every interface, so false.
func IsLoopback(addr string) bool {
	if strings.HasPrefix(addr, "unix:") {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
