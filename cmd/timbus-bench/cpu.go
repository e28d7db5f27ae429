package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Where the CPU goes during a measured run: each process's CPU time and the
// machine's idle time, per answered request; the throughput of a setup is the
// machine's CPUs divided by their sum. The machine's softirq time (loopback
// networking) is read too, for scale: the kernel charges it to whichever
// process it interrupted, so it is already inside the processes' times.

// clockTick is the unit of /proc's CPU times: USER_HZ, 100 on every Linux
// architecture Go runs on.
const clockTick = 10 * time.Millisecond

// processCPU returns the user and system CPU time pid has used so far.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(b[end+1:]))
	// fields[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	var total time.Duration
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		total += time.Duration(n) * clockTick
	}
	return total, nil
}

// machineCPU is the machine's CPU time by state, summed over its CPUs.
type machineCPU struct {
	total, idle, softirq, steal time.Duration
}

func readMachineCPU() (machineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fields := strings.Fields(string(line))
	// cpu user nice system idle iowait irq softirq steal ...
	if len(fields) < 8 || fields[0] != "cpu" {
		return machineCPU{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var m machineCPU
	for i, f := range fields[1:] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return machineCPU{}, fmt.Errorf("/proc/stat: %w", err)
		}
		d := time.Duration(n) * clockTick
		// guest times (fields 9, 10) are already counted in user and nice.
		if i < 8 {
			m.total += d
		}
		switch i {
		case 3, 4: // idle, iowait
			m.idle += d
		case 6:
			m.softirq += d
		case 7:
			m.steal += d
		}
	}
	return m, nil
}

// cpuMeter samples the processes of a run and the machine before and after.
type cpuMeter struct {
	procs   []*proc
	before  []time.Duration
	machine machineCPU
	err     error
}

func startCPUMeter(procs []*proc) *cpuMeter {
	m := &cpuMeter{procs: procs}
	for _, p := range procs {
		d, err := processCPU(p.cmd.Process.Pid)
		if err != nil && m.err == nil {
			m.err = err
		}
		m.before = append(m.before, d)
	}
	machine, err := readMachineCPU()
	if err != nil && m.err == nil {
		m.err = err
	}
	m.machine = machine
	return m
}

// perRequest returns µs of CPU per request by process role, plus the load
// generator's (measured by the caller, loadCPU) and the machine's softirq
// and idle time.
func (m *cpuMeter) perRequest(requests int64, loadName string, loadCPU time.Duration) (map[string]float64, error) {
	if m.err != nil {
		return nil, m.err
	}
	if requests <= 0 {
		return nil, fmt.Errorf("no requests")
	}
	per := func(d time.Duration) float64 {
		return float64(d.Nanoseconds()) / 1e3 / float64(requests)
	}
	out := map[string]float64{}
	for i, p := range m.procs {
		d, err := processCPU(p.cmd.Process.Pid)
		if err != nil {
			return nil, err
		}
		out[p.role] += per(d - m.before[i])
	}
	out[loadName] = per(loadCPU)
	after, err := readMachineCPU()
	if err != nil {
		return nil, err
	}
	out[cpuSoftirq] = per(after.softirq - m.machine.softirq)
	out[cpuIdle] = per(after.idle - m.machine.idle)
	out[cpuSteal] = per(after.steal - m.machine.steal)
	return out, nil
}

// Keys of the machine-wide shares in a run's CPU map.
const (
	cpuSoftirq = "softirq"
	cpuIdle    = "idle"
	// cpuSteal is time a virtual machine's CPUs were ready but the
	// hypervisor ran something else: not in the sum, a slower machine.
	cpuSteal = "steal"
)
