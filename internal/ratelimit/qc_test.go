package ratelimit

import "context"

// qc is a quota and a call in one value, so that a test can state both in
// one literal and change a call's fields in place.
type qc struct {
	Quota
	Call
}

// acquirer is what the tests acquire from: Local, Window and Redis.
type acquirer interface {
	Acquire(ctx context.Context, key string, lim Quota, c Call) (Result, Ticket, error)
}

func acquire(l acquirer, ctx context.Context, key string, x qc) (Result, Ticket, error) {
	return l.Acquire(ctx, key, x.Quota, x.Call)
}

func wait(l *Local, ctx context.Context, key string, x qc) (Result, error) {
	return l.Wait(ctx, key, x.Quota, x.Call)
}
