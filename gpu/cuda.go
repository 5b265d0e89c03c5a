package gpu

import "strings"

// CUDAEnv is the environment that pins an engine to the devices Check
// returned. UUIDs, not indices: CUDA's own enumeration order (fastest first)
// differs from NVML's, and UUIDs also name MIG instances. PCI_BUS_ID order
// makes any index an engine prints match nvidia-smi.
func CUDAEnv(devs []Device) map[string]string {
	env := map[string]string{}
	if len(devs) == 0 {
		return env
	}
	uuids := make([]string, len(devs))
	for i, d := range devs {
		uuids[i] = d.UUID
	}
	env["CUDA_VISIBLE_DEVICES"] = strings.Join(uuids, ",")
	env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
	return env
}
