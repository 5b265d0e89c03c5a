package gpu

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// returnNames spells NVML results as their constant names. nvml.Return's own
// String only does that while the library is not loaded; once it is, it
// answers nvmlErrorString's prose ("Unknown Error"), which operators cannot
// grep for.
var returnNames = map[nvml.Return]string{
	nvml.SUCCESS:                         "SUCCESS",
	nvml.ERROR_UNINITIALIZED:             "ERROR_UNINITIALIZED",
	nvml.ERROR_INVALID_ARGUMENT:          "ERROR_INVALID_ARGUMENT",
	nvml.ERROR_NOT_SUPPORTED:             "ERROR_NOT_SUPPORTED",
	nvml.ERROR_NO_PERMISSION:             "ERROR_NO_PERMISSION",
	nvml.ERROR_ALREADY_INITIALIZED:       "ERROR_ALREADY_INITIALIZED",
	nvml.ERROR_NOT_FOUND:                 "ERROR_NOT_FOUND",
	nvml.ERROR_INSUFFICIENT_SIZE:         "ERROR_INSUFFICIENT_SIZE",
	nvml.ERROR_INSUFFICIENT_POWER:        "ERROR_INSUFFICIENT_POWER",
	nvml.ERROR_DRIVER_NOT_LOADED:         "ERROR_DRIVER_NOT_LOADED",
	nvml.ERROR_TIMEOUT:                   "ERROR_TIMEOUT",
	nvml.ERROR_IRQ_ISSUE:                 "ERROR_IRQ_ISSUE",
	nvml.ERROR_LIBRARY_NOT_FOUND:         "ERROR_LIBRARY_NOT_FOUND",
	nvml.ERROR_FUNCTION_NOT_FOUND:        "ERROR_FUNCTION_NOT_FOUND",
	nvml.ERROR_CORRUPTED_INFOROM:         "ERROR_CORRUPTED_INFOROM",
	nvml.ERROR_GPU_IS_LOST:               "ERROR_GPU_IS_LOST",
	nvml.ERROR_RESET_REQUIRED:            "ERROR_RESET_REQUIRED",
	nvml.ERROR_OPERATING_SYSTEM:          "ERROR_OPERATING_SYSTEM",
	nvml.ERROR_LIB_RM_VERSION_MISMATCH:   "ERROR_LIB_RM_VERSION_MISMATCH",
	nvml.ERROR_IN_USE:                    "ERROR_IN_USE",
	nvml.ERROR_MEMORY:                    "ERROR_MEMORY",
	nvml.ERROR_NO_DATA:                   "ERROR_NO_DATA",
	nvml.ERROR_VGPU_ECC_NOT_SUPPORTED:    "ERROR_VGPU_ECC_NOT_SUPPORTED",
	nvml.ERROR_INSUFFICIENT_RESOURCES:    "ERROR_INSUFFICIENT_RESOURCES",
	nvml.ERROR_FREQ_NOT_SUPPORTED:        "ERROR_FREQ_NOT_SUPPORTED",
	nvml.ERROR_ARGUMENT_VERSION_MISMATCH: "ERROR_ARGUMENT_VERSION_MISMATCH",
	nvml.ERROR_DEPRECATED:                "ERROR_DEPRECATED",
	nvml.ERROR_NOT_READY:                 "ERROR_NOT_READY",
	nvml.ERROR_GPU_NOT_FOUND:             "ERROR_GPU_NOT_FOUND",
	nvml.ERROR_INVALID_STATE:             "ERROR_INVALID_STATE",
	nvml.ERROR_RESET_TYPE_NOT_SUPPORTED:  "ERROR_RESET_TYPE_NOT_SUPPORTED",
	nvml.ERROR_UNKNOWN:                   "ERROR_UNKNOWN",
}

// returnHints say what an operator should look at for the results that have
// a usual cause.
var returnHints = map[nvml.Return]string{
	nvml.ERROR_LIBRARY_NOT_FOUND:       "no NVIDIA driver",
	nvml.ERROR_DRIVER_NOT_LOADED:       "NVIDIA kernel driver not loaded",
	nvml.ERROR_NO_PERMISSION:           "no permission to the NVIDIA device files",
	nvml.ERROR_LIB_RM_VERSION_MISMATCH: "NVML library and kernel driver versions differ; reload the driver or reboot",
	nvml.ERROR_GPU_IS_LOST:             "GPU fell off the bus or is inaccessible; reset or reboot",
	nvml.ERROR_RESET_REQUIRED:          "GPU needs a reset",
}

func returnName(r nvml.Return) string {
	if n, ok := returnNames[r]; ok {
		return n
	}
	return fmt.Sprintf("ERROR_%d", int32(r))
}

// describeReturn renders "NAME (hint)", or "NAME (extra)" when the caller
// knows better than the generic hint.
func describeReturn(r nvml.Return, extra string) string {
	if extra == "" {
		extra = returnHints[r]
	}
	if extra == "" {
		return returnName(r)
	}
	return returnName(r) + " (" + extra + ")"
}

// Loadable reports whether NVML can be loaded and initialised on this host,
// as the guardrail would at start ("NVML init: ERROR_LIBRARY_NOT_FOUND (no
// NVIDIA driver)" when not). -check-config warns with it.
func Loadable() error {
	lib := nvml.New()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return fmt.Errorf("NVML init: %s", describeReturn(ret, ""))
	}
	lib.Shutdown()
	return nil
}
