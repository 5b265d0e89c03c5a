// Comparing and looking up pools, for the SIGHUP diff.

package config

import "reflect"

// Equal reports whether two pools are configured the same, ignoring Line
// (moving an entry in the file is not a change) and treating nil and empty
// slices and maps alike. A pool that is not Equal must be reloaded.
// ReloadAllowed is ignored too: it binds only the API's reload requests,
// not the running engine, so changing it restarts nothing.
func (p Pool) Equal(q Pool) bool {
	return reflect.DeepEqual(p.comparable(), q.comparable())
}

func (p Pool) comparable() Pool {
	p.Line = 0
	if len(p.Command) == 0 {
		p.Command = nil
	}
	if len(p.Env) == 0 {
		p.Env = nil
	}
	if len(p.Devices) == 0 {
		p.Devices = nil
	}
	p.ReloadAllowed = nil
	return p
}

// Pool returns the pool with the given id. The copy shares Command, Env and
// Devices with c; treat them as read-only.
func (c *Config) Pool(id string) (Pool, bool) {
	for _, p := range c.Pools {
		if p.ID == id {
			return p, true
		}
	}
	return Pool{}, false
}
