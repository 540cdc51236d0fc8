package plugins

import (
	"fmt"
	"regexp"
	"strings"
)

// Key names one artifact: a plugin at a version, built for a runtime release
// and build. A Key with Runtime or Build empty takes the client's
// (WithRuntime; the build defaults to runtime.Version()).
type Key struct {
	// Runtime is the runtime release, e.g. "3.0.0".
	Runtime string
	// Build is the runtime's build version, e.g. "go1.19.8".
	Build string
	// Name and Version name the plugin, e.g. "example.com/drivers/counter", "v1.0.0".
	Name, Version string
}

// String is name@version for runtime/build.
func (k Key) String() string {
	return fmt.Sprintf("%s@%s for runtime %s/%s", k.Name, k.Version, k.Runtime, k.Build)
}

// subject is the name a provenance statement's one subject must carry, so
// that a statement signed for one build key cannot be replayed for another.
func (k Key) subject() string {
	return fmt.Sprintf("atomix-plugin://%s/%s/%s@%s", k.Runtime, k.Build, k.Name, k.Version)
}

// ParseKey reads "name@version" (the version after the last @), leaving the
// runtime and build to the client.
func ParseKey(spec string) (Key, error) {
	at := strings.LastIndex(spec, "@")
	if at <= 0 || at == len(spec)-1 {
		return Key{}, fmt.Errorf("%q: want name@version", spec)
	}
	return Key{Name: spec[:at], Version: spec[at+1:]}, nil
}

// Reference is an atomix-plugin:// reference, which this project's servers
// answer CompilePlugin with: the key and the digest of its bytes.
type Reference struct {
	Key    Key
	Digest string
}

const referenceScheme = "atomix-plugin://"

var digestPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// String is atomix-plugin://<runtime>/<build>/<name>@<version>@sha256:<hex>.
func (r Reference) String() string {
	return fmt.Sprintf("%s%s/%s/%s@%s@%s", referenceScheme, r.Key.Runtime, r.Key.Build, r.Key.Name, r.Key.Version, r.Digest)
}

// ParseReference reads an atomix-plugin:// reference. Runtime and build
// versions never contain "/"; the digest follows the last "@", the plugin's
// version the one before.
func ParseReference(text string) (Reference, error) {
	bad := fmt.Errorf("%q is not a plugin reference (%sV/B/name@version@sha256:...)", text, referenceScheme)
	if !strings.HasPrefix(text, referenceScheme) {
		return Reference{}, bad
	}
	rest := strings.TrimPrefix(text, referenceScheme)
	at := strings.LastIndex(rest, "@")
	if at < 0 || !digestPattern.MatchString(rest[at+1:]) {
		return Reference{}, bad
	}
	parts := strings.SplitN(rest[:at], "/", 3)
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return Reference{}, bad
	}
	key, err := ParseKey(parts[2])
	if err != nil {
		return Reference{}, bad
	}
	key.Runtime, key.Build = parts[0], parts[1]
	return Reference{Key: key, Digest: rest[at+1:]}, nil
}
