// Package deploy holds keybroker's deployment files (container image,
// Kubernetes manifests, systemd unit, Vault policy) and the tests that check
// the invariants that matter in them. It has no code of its own.
package deploy
