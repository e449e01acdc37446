package registry

import "context"

// laneKey marks a context as the admin lane (WithAdminLane).
type laneKey struct{}

// WithAdminLane marks ctx as an operator's request. A store that can keeps
// such requests off the path of device traffic: sqlstore reads them on
// connections of their own and commits their writes (an admin read's
// audit event above all) ahead of queued device writes, so that a fleet
// storm filling the enrollment queue does not hold up the admin API. The
// lane changes when work runs, never what it does: a write in it is as
// durable and as audited as any other.
func WithAdminLane(ctx context.Context) context.Context {
	return context.WithValue(ctx, laneKey{}, true)
}

// InAdminLane reports whether ctx was marked by WithAdminLane.
func InAdminLane(ctx context.Context) bool {
	v, _ := ctx.Value(laneKey{}).(bool)
	return v
}
