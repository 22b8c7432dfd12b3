// Command vaultdev runs a single-node HashiCorp Vault server for keybroker's
// integration tests and demo. It is Vault's own server code imported as a
// library (no Vault binary is packaged for this machine): an in-memory or
// file-backed core, initialised and unsealed by itself, with KV v2 mounted at
// secret/, the transit engine available (tests enable it) and the AppRole
// auth method available.
//
// It lives in its own Go module so that keybroker's module and binary never
// depend on Vault's server packages (about 300 modules, BUSL-licensed).
//
// When ready it prints one JSON line on stdout:
//
//	{"address":"http://127.0.0.1:PORT","root_token":"..."}
//
// and serves until SIGINT or SIGTERM. With -data DIR the storage, the unseal
// key and the root token persist in DIR, so a restarted server on the same
// address comes back with the same secrets (used to test Vault outages).
// Never use it for anything but tests: the unseal key sits next to the data.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	kv "github.com/hashicorp/vault-plugin-secrets-kv"
	credAppRole "github.com/hashicorp/vault/builtin/credential/approle"
	"github.com/hashicorp/vault/builtin/logical/transit"
	"github.com/hashicorp/vault/helper/namespace"
	vaulthttp "github.com/hashicorp/vault/http"
	"github.com/hashicorp/vault/internalshared/configutil"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/physical"
	"github.com/hashicorp/vault/sdk/physical/file"
	"github.com/hashicorp/vault/sdk/physical/inmem"
	"github.com/hashicorp/vault/vault"
	vaultseal "github.com/hashicorp/vault/vault/seal"
)

type initState struct {
	UnsealKey []byte `json:"unseal_key"`
	RootToken string `json:"root_token"`
}

type ready struct {
	Address   string `json:"address"`
	RootToken string `json:"root_token"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback only)")
	dataDir := flag.String("data", "", "persist storage and unseal key in this directory (default: in memory)")
	logLevel := flag.String("log-level", "error", "Vault's own log level")
	flag.Parse()

	if err := run(*addr, *dataDir, *logLevel); err != nil {
		fmt.Fprintln(os.Stderr, "vaultdev:", err)
		os.Exit(1)
	}
}

func run(addr, dataDir, logLevel string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return errors.New("-addr: must be a loopback address")
	}

	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.LevelFromString(logLevel), Output: os.Stderr})
	var backend physical.Backend
	if dataDir == "" {
		backend, err = inmem.NewInmem(nil, logger)
	} else {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return err
		}
		backend, err = file.NewFileBackend(map[string]string{"path": filepath.Join(dataDir, "storage")}, logger)
	}
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}

	core, err := vault.NewCore(&vault.CoreConfig{
		Physical:           backend,
		LogicalBackends:    map[string]logical.Factory{"kv": kv.Factory, "transit": transit.Factory},
		CredentialBackends: map[string]logical.Factory{"approle": credAppRole.Factory},
		BuiltinRegistry:    builtins,
		DisableMlock:       true,
		Logger:             logger,
	})
	if err != nil {
		return fmt.Errorf("new core: %w", err)
	}

	ctx := namespace.ContextWithNamespace(context.Background(), namespace.RootNamespace)
	state, err := initAndUnseal(ctx, core, dataDir)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           vaulthttp.Handler.Handler(&vault.HandlerProperties{Core: core, ListenerConfig: &configutil.Listener{}}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	line, _ := json.Marshal(ready{Address: "http://" + ln.Addr().String(), RootToken: state.RootToken})
	fmt.Println(string(line))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sig:
	case err := <-errc:
		return err
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	return core.Shutdown()
}

// initAndUnseal initialises a new core (mounting KV v2 at secret/) or, when
// dataDir already holds an initialised one, unseals it with the stored key.
func initAndUnseal(ctx context.Context, core *vault.Core, dataDir string) (*initState, error) {
	statePath := filepath.Join(dataDir, "init.json")
	inited, err := core.Initialized(ctx)
	if err != nil {
		return nil, err
	}
	if inited {
		raw, err := os.ReadFile(statePath)
		if err != nil {
			return nil, fmt.Errorf("initialised storage without its unseal key: %w", err)
		}
		var st initState
		if err := json.Unmarshal(raw, &st); err != nil {
			return nil, err
		}
		if err := unseal(ctx, core, st.UnsealKey); err != nil {
			return nil, err
		}
		return &st, nil
	}

	barrier := &vault.SealConfig{SecretShares: 1, SecretThreshold: 1, Name: "shamir"}
	if core.SealAccess().StoredKeysSupported() != vaultseal.StoredKeysNotSupported {
		barrier.StoredShares = 1
	}
	var recovery *vault.SealConfig
	if core.SealAccess().RecoveryKeySupported() {
		recovery = &vault.SealConfig{SecretShares: 1, SecretThreshold: 1}
	}
	res, err := core.Initialize(ctx, &vault.InitParams{BarrierConfig: barrier, RecoveryConfig: recovery})
	if err != nil {
		return nil, fmt.Errorf("initialize: %w", err)
	}
	st := &initState{RootToken: res.RootToken}
	if len(res.SecretShares) > 0 {
		st.UnsealKey = res.SecretShares[0]
	}
	if err := unseal(ctx, core, st.UnsealKey); err != nil {
		return nil, err
	}

	resp, err := core.HandleRequest(ctx, &logical.Request{
		Operation:   logical.UpdateOperation,
		ClientToken: st.RootToken,
		Path:        "sys/mounts/secret",
		Data: map[string]interface{}{
			"type":    "kv",
			"path":    "secret/",
			"options": map[string]string{"version": "2"},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("mount secret/: %w", err)
	}
	if resp.IsError() {
		return nil, fmt.Errorf("mount secret/: %w", resp.Error())
	}

	if dataDir != "" {
		raw, _ := json.Marshal(st)
		if err := os.WriteFile(statePath, raw, 0o600); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func unseal(ctx context.Context, core *vault.Core, key []byte) error {
	if core.SealAccess().StoredKeysSupported() == vaultseal.StoredKeysSupportedGeneric {
		if err := core.UnsealWithStoredKeys(ctx); err != nil {
			return fmt.Errorf("unseal: %w", err)
		}
	} else {
		ok, err := core.Unseal(append([]byte(nil), key...))
		if err != nil {
			return fmt.Errorf("unseal: %w", err)
		}
		if !ok {
			return errors.New("unseal: still sealed")
		}
	}
	// Wait until the core is active (it is a single node, so promptly).
	for i := 0; i < 100; i++ {
		if leader, _, _, err := core.Leader(); err == nil && leader {
			return nil
		} else if errors.Is(err, vault.ErrHANotEnabled) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("core did not become active")
}

// registry is the builtin plugin registry: just the plugins vaultdev serves.
// (Vault's full registry pulls in every builtin plugin.)
type registry map[string]struct {
	typ     consts.PluginType
	factory logical.Factory
}

var builtins = registry{
	"kv":      {consts.PluginTypeSecrets, kv.Factory},
	"transit": {consts.PluginTypeSecrets, transit.Factory},
	"approle": {consts.PluginTypeCredential, credAppRole.Factory},
}

func (r registry) Contains(name string, t consts.PluginType) bool {
	p, ok := r[name]
	return ok && p.typ == t
}

func (r registry) Get(name string, t consts.PluginType) (func() (interface{}, error), bool) {
	p, ok := r[name]
	if !ok || p.typ != t {
		return nil, false
	}
	return func() (interface{}, error) { return p.factory, nil }, true
}

func (r registry) Keys(t consts.PluginType) []string {
	var keys []string
	for name, p := range r {
		if p.typ == t {
			keys = append(keys, name)
		}
	}
	return keys
}

func (r registry) DeprecationStatus(name string, t consts.PluginType) (consts.DeprecationStatus, bool) {
	if r.Contains(name, t) {
		return consts.Supported, true
	}
	return consts.Unknown, false
}

func (registry) IsBuiltinEntPlugin(string, consts.PluginType) bool { return false }
