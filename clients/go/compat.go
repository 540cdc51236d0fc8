package plugins

import (
	"debug/dwarf"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
)

// Before it runs a plugin's code, Go's plugin.Open checks that every
// package the plugin shares with the host has the same hash (the
// fingerprint of its export data, exported as go.link.pkghashbytes.<path> by
// the host and by the plugin). Any difference ("plugin was built with a
// different version of package ...") fails Open for good for that path.
// CheckCompatible makes the same comparison from the files, without loading
// anything, and names the likely cause: the Go release and compiler flags
// (from the DWARF producer of the plugin's runtime), -trimpath (from its
// file names), then the package, or the host's module that holds it.
//
// debug/buildinfo cannot be used: the Go linker writes no build info into
// -buildmode=plugin files ("The version information is only available in
// executables", cmd/link), so a plugin's module versions and build settings
// are not recorded anywhere in it.

const hashPrefix = "go.link.pkghashbytes."

// goFile is what the check reads of a Go ELF file.
type goFile struct {
	path    string
	machine elf.Machine
	class   elf.Class
	// hashes is each package's export data fingerprint.
	hashes map[string]string
}

// unit is what the DWARF of a Go file says of its runtime package, read only
// to name the cause of a difference (decompressing a host's DWARF takes a
// noticeable fraction of a second).
type unit struct {
	// known is false for a file without DWARF (-ldflags=-w).
	known bool
	// producer is the Go release and compiler flags: "go1.19.8; -shared -dynlink regabi".
	producer string
	trimmed  bool
}

// hostFile is the running host as the check sees it.
type hostFile struct {
	goFile
	info *debug.BuildInfo

	unitOnce sync.Once
	unit     unit
}

func (h *hostFile) runtimeUnit() unit {
	h.unitOnce.Do(func() { h.unit = readUnit(h.path) })
	return h.unit
}

func readHost() (*hostFile, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("plugins: cannot find this host's executable to compare plugins with: %w", err)
	}
	f, err := readGoFile(exe)
	if err != nil {
		return nil, fmt.Errorf("plugins: this host's executable %s: %w", exe, err)
	}
	if len(f.hashes) == 0 {
		return nil, fmt.Errorf("plugins: this host's executable %s exports no package hashes; it cannot load plugins", exe)
	}
	h := &hostFile{goFile: *f}
	h.info, _ = debug.ReadBuildInfo()
	return h, nil
}

func readGoFile(path string) (*goFile, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := &goFile{path: path, machine: f.Machine, class: f.Class, hashes: map[string]string{}}
	syms, err := f.DynamicSymbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return nil, err
	}
	for _, s := range syms {
		if !strings.HasPrefix(s.Name, hashPrefix) || s.Size == 0 || s.Size > 64 {
			continue
		}
		value := make([]byte, s.Size)
		if readAt(f, s.Value, value) {
			out.hashes[strings.TrimPrefix(s.Name, hashPrefix)] = hex.EncodeToString(value)
		}
	}
	return out, nil
}

func readUnit(path string) unit {
	f, err := elf.Open(path)
	if err != nil {
		return unit{}
	}
	defer f.Close()
	data, err := f.DWARF()
	if err != nil {
		return unit{}
	}
	return runtimeUnit(data)
}

// readAt reads the bytes at a virtual address from the section holding them.
func readAt(f *elf.File, addr uint64, into []byte) bool {
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NOBITS || addr < s.Addr || addr+uint64(len(into)) > s.Addr+s.Size {
			continue
		}
		_, err := s.ReadAt(into, int64(addr-s.Addr))
		return err == nil
	}
	return false
}

// runtimeUnit reads the compile unit of package runtime: its producer
// without "Go cmd/compile ", and whether its file names are trimmed
// (-trimpath makes them relative: "runtime/proc.go", not
// "/usr/lib/go/src/runtime/proc.go").
func runtimeUnit(data *dwarf.Data) unit {
	r := data.Reader()
	for {
		e, err := r.Next()
		if err != nil || e == nil {
			return unit{}
		}
		if e.Tag != dwarf.TagCompileUnit {
			r.SkipChildren()
			continue
		}
		if name, _ := e.Val(dwarf.AttrName).(string); name != "runtime" {
			r.SkipChildren()
			continue
		}
		producer, _ := e.Val(dwarf.AttrProducer).(string)
		trimmed := true
		if lines, err := data.LineReader(e); err == nil && lines != nil {
			for _, file := range lines.Files() {
				if file != nil && strings.HasPrefix(file.Name, "/") {
					trimmed = false
					break
				}
			}
		}
		return unit{known: true, producer: strings.TrimPrefix(producer, "Go cmd/compile "), trimmed: trimmed}
	}
}

// CheckCompatible checks, without loading it, that the plugin file at path
// can be loaded into this host: an ELF file for this machine, a Go plugin,
// and every package it shares with the host identical to the host's, as
// plugin.Open requires. The first difference is an *IncompatibleError naming
// its cause when the files show it (the Go release, -buildmode, -trimpath,
// the compiler flags, in that order), else the module of the host that holds
// the package, else the package. It never calls plugin.Open, whose failure
// would be permanent for path in this process; Load calls it before Open.
func CheckCompatible(path string) error {
	host, err := readHost()
	if err != nil {
		return err
	}
	return checkCompatible(path, host)
}

func checkCompatible(path string, host *hostFile) error {
	differ := func(field, want, got string) error {
		return &IncompatibleError{Path: path, Field: field, Want: want, Got: got}
	}
	p, err := readGoFile(path)
	if err != nil {
		return differ("file", "an ELF shared object", err.Error())
	}
	if p.machine != host.machine || p.class != host.class {
		return differ("GOARCH", host.machine.String(), p.machine.String())
	}
	if len(p.hashes) == 0 {
		return differ("-buildmode", "plugin", "not a Go plugin (no package hashes)")
	}
	// The packages both contain, standard library first: when the toolchain
	// or its settings differ, those differ too.
	var shared []string
	for pkg := range p.hashes {
		if _, ok := host.hashes[pkg]; ok {
			shared = append(shared, pkg)
		}
	}
	sort.Slice(shared, func(i, j int) bool {
		si, sj := isStd(shared[i]), isStd(shared[j])
		if si != sj {
			return si
		}
		return shared[i] < shared[j]
	})
	for _, pkg := range shared {
		want, got := host.hashes[pkg], p.hashes[pkg]
		if want == got {
			continue
		}
		// plugin.Open would fail: name the cause, the most general first.
		if field, want, got := diagnose(p.path, host); field != "" {
			return differ(field, want, got)
		}
		if m := host.module(pkg); m != nil {
			return differ("module "+m.Path, describeModule(m), "another version or build (package "+pkg+" differs: "+got+", the host's "+want+")")
		}
		return differ("package "+pkg, want, got)
	}
	return nil
}

// diagnose names a toolchain difference between a plugin and its host from
// the DWARF of their runtime packages: the Go release, the build mode, the
// trimming of paths, the compiler flags. "" when none shows.
func diagnose(path string, host *hostFile) (field, want, got string) {
	p := readUnit(path)
	if !p.known {
		return "", "", ""
	}
	version, flags := splitProducer(p.producer)
	if version != runtime.Version() {
		return "go version", runtime.Version(), version
	}
	if !flags["-dynlink"] {
		return "-buildmode", "plugin", "another mode"
	}
	if want := host.setting("-trimpath") == "true"; want != p.trimmed {
		return "-trimpath", fmt.Sprint(want), fmt.Sprint(p.trimmed)
	}
	if h := host.runtimeUnit(); h.known {
		_, hostFlags := splitProducer(h.producer)
		if want, got := gcflags(hostFlags), gcflags(flags); want != got {
			return "-gcflags", want, got
		}
	}
	return "", "", ""
}

// splitProducer reads "go1.19.8; -shared -dynlink regabi" into the release
// and the set of flags.
func splitProducer(producer string) (string, map[string]bool) {
	version, rest, _ := strings.Cut(producer, ";")
	flags := map[string]bool{}
	for _, f := range strings.Fields(rest) {
		flags[f] = true
	}
	return strings.TrimSpace(version), flags
}

// gcflags are the compiler flags of a producer other than those of the
// build mode (-shared -dynlink for a plugin).
func gcflags(flags map[string]bool) string {
	var out []string
	for f := range flags {
		if f != "-shared" && f != "-dynlink" {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func isStd(pkg string) bool {
	first, _, _ := strings.Cut(pkg, "/")
	return !strings.Contains(first, ".")
}

// setting is one of the host's build settings, "" when absent.
func (h *hostFile) setting(key string) string {
	if h.info == nil {
		return ""
	}
	for _, s := range h.info.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}

// module is the host's module holding pkg, if any.
func (h *hostFile) module(pkg string) *debug.Module {
	if h.info == nil {
		return nil
	}
	var best *debug.Module
	for _, m := range h.info.Deps {
		if (pkg == m.Path || strings.HasPrefix(pkg, m.Path+"/")) && (best == nil || len(m.Path) > len(best.Path)) {
			best = m
		}
	}
	return best
}

func describeModule(m *debug.Module) string {
	out := strings.TrimSpace(m.Version + " " + m.Sum)
	if r := m.Replace; r != nil {
		out += strings.TrimRight(fmt.Sprintf(" => %s %s %s", r.Path, r.Version, r.Sum), " ")
	}
	return out
}
