package proxy

import "time"

// TimeoutNote exposes timeoutNote to the external tests.
func TimeoutNote(err error) string { return timeoutNote(err, "egress.dial_timeout", 10*time.Second) }
