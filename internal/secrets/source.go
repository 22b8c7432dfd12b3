package secrets

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"go.yaml.in/yaml/v4"
)

// Reading is what a Source returns: the secret's fields and, when the source
// keeps versions, the version read (0 when it does not).
type Reading struct {
	Fields  map[string]Secret
	Version int
	// Expiry is the expiry stored with the secret, when it has one.
	Expiry Expiry
	// Created is when this version was written (Vault KV v2); zero:
	// unknown.
	Created time.Time
}

// Source reads one credential. Implementations must be safe for concurrent
// use and must never put a value into an error.
type Source interface {
	// Read returns the credential as the source holds it now.
	Read(ctx context.Context) (Reading, error)
	// Kind is "vault", "file" or "env".
	Kind() string
	// Ref says where the credential lives, for audit and logs.
	Ref() string
}

// versioned is implemented by sources that keep earlier versions (Vault
// KV v2): after a restart, a newest version the vendor refuses gives way
// to the one before it.
type versioned interface {
	ReadVersion(ctx context.Context, version int) (Reading, error)
}

// poller is implemented by sources that are cheap to check more often than
// the refresh interval (a file: one stat).
type poller interface {
	PollInterval() time.Duration
}

// FileSource reads a JSON or YAML file that holds one flat object of string
// fields. It re-parses the file only when its identity, size or modification
// time changed, so polling it every few seconds costs one stat.
type FileSource struct {
	path string

	mu   sync.Mutex
	stat fileStamp
	last Reading
}

type fileStamp struct {
	ino   uint64
	size  int64
	mtime time.Time
}

// NewFileSource returns a source for the file at path. The file is not read
// until the first Read.
func NewFileSource(path string) *FileSource { return &FileSource{path: path} }

// Kind returns "file".
func (*FileSource) Kind() string { return "file" }

// Ref returns the file's path.
func (f *FileSource) Ref() string { return f.path }

// PollInterval is how often the cache checks the file for a change.
func (*FileSource) PollInterval() time.Duration { return 2 * time.Second }

// Read returns the file's fields.
func (f *FileSource) Read(ctx context.Context) (Reading, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return Reading{}, fmt.Errorf("file %s: %w", f.path, errors.Unwrap(err))
	}
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if st == f.stat && f.last.Fields != nil {
		return f.last, nil
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return Reading{}, fmt.Errorf("file %s: %w", f.path, errors.Unwrap(err))
	}
	fields, err := parseFields(data)
	if err != nil {
		return Reading{}, fmt.Errorf("file %s: %w", f.path, err)
	}
	exp, err := takeExpiresAt(fields)
	if err != nil {
		return Reading{}, fmt.Errorf("file %s: %w", f.path, err)
	}
	f.stat, f.last = st, Reading{Fields: fields, Expiry: exp}
	return f.last, nil
}

// parseFields reads a flat object of strings as JSON or YAML. Its errors
// never quote the input: the parsers' own messages can carry a piece of it.
func parseFields(data []byte) (map[string]Secret, error) {
	var raw map[string]any
	trimmed := bytes.TrimSpace(data)
	if bytes.HasPrefix(trimmed, []byte("{")) {
		if err := json.Unmarshal(trimmed, &raw); err != nil {
			return nil, errors.New("not a valid JSON object")
		}
	} else if err := yaml.Unmarshal(trimmed, &raw); err != nil {
		return nil, errors.New("not a valid YAML mapping")
	}
	if len(raw) == 0 {
		return nil, errors.New("holds no fields")
	}
	fields := make(map[string]Secret, len(raw))
	for k, v := range raw {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("field %q is not a string", k)
		}
		fields[k] = Secret(s)
	}
	return fields, nil
}

// EnvSource holds a credential taken from the environment once, at start.
type EnvSource struct {
	ref     string
	reading Reading
	err     error
}

// NewEnvSource reads the credential through lookup (os.LookupEnv). With key,
// the variable holds either a JSON object of fields or the value of the
// single field named single; with fields, each field names its variable.
func NewEnvSource(lookup func(string) (string, bool), key string, fields map[string]string, single string) *EnvSource {
	s := &EnvSource{ref: key}
	out := map[string]Secret{}
	switch {
	case key != "":
		v, ok := lookup(key)
		switch {
		case !ok:
			s.err = fmt.Errorf("env %s: not set", key)
		case len(bytes.TrimSpace([]byte(v))) > 0 && bytes.TrimSpace([]byte(v))[0] == '{':
			f, err := parseFields([]byte(v))
			if err != nil {
				s.err = fmt.Errorf("env %s: %w", key, err)
			}
			out = f
		case single == "":
			s.err = fmt.Errorf("env %s: holds one value, but this auth needs several fields: set a JSON object", key)
		default:
			out[single] = Secret(v)
		}
	default:
		names := make([]string, 0, len(fields))
		for field := range fields {
			names = append(names, field)
		}
		sort.Strings(names)
		s.ref = ""
		for _, field := range names {
			name := fields[field]
			if s.ref != "" {
				s.ref += ","
			}
			s.ref += name
			v, ok := lookup(name)
			if !ok {
				s.err = fmt.Errorf("env %s: not set", name)
				continue
			}
			out[field] = Secret(v)
		}
	}
	exp, err := takeExpiresAt(out)
	if err != nil && s.err == nil {
		s.err = fmt.Errorf("env %s: %w", s.ref, err)
	}
	s.reading = Reading{Fields: out, Expiry: exp}
	return s
}

// Kind returns "env".
func (*EnvSource) Kind() string { return "env" }

// Ref names the variable(s).
func (s *EnvSource) Ref() string { return s.ref }

// PollInterval is long: the environment does not change under a process.
func (*EnvSource) PollInterval() time.Duration { return 24 * time.Hour }

// Read returns what was read at start.
func (s *EnvSource) Read(context.Context) (Reading, error) { return s.reading, s.err }
