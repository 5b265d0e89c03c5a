package gpu

// XID classes, from NVIDIA's Xid catalogue. Engine-level Xids are faults of
// the process that ran on the GPU (the engine restarts, the GPU is fine);
// device-level ones mean the GPU itself needs attention (ECC, NVLink, fell off
// the bus), so no engine should be started on it until an operator says so.
var (
	engineXIDs = map[uint64]string{
		13:  "graphics engine exception",
		31:  "GPU memory page fault",
		43:  "GPU stopped processing",
		45:  "preemptive cleanup",
		68:  "NVDEC0 exception",
		109: "context switch timeout",
	}
	deviceXIDs = map[uint64]string{
		48: "double-bit ECC error",
		63: "ECC page retirement or row remapping event",
		64: "ECC page retirement or row remapping failure",
		74: "NVLink error",
		79: "GPU has fallen off the bus",
		92: "high single-bit ECC error rate",
		94: "contained ECC error",
		95: "uncontained ECC error",
	}
)

// xidDBE is the Xid the driver logs for a double-bit ECC error; NVML reports
// that error as its own event type without a code, so we give it this one.
const xidDBE = 48

// classifyXID says whether an Xid marks the whole device unhealthy, and
// describes it. Unknown Xids (NVML reports 999 for those it cannot decode)
// count as engine-level: restarting the engine is the cheap, reversible guess.
func classifyXID(xid uint64) (deviceLevel, known bool, desc string) {
	if d, ok := deviceXIDs[xid]; ok {
		return true, true, d
	}
	if d, ok := engineXIDs[xid]; ok {
		return false, true, d
	}
	return false, false, "unknown Xid"
}
