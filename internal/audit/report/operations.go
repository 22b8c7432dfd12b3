package report

import "github.com/keybroker/keybroker/internal/audit"

// opKey is one row of the operations table.
type opKey struct{ caller, upstream, operation string }

// OperationRow is a caller's calls of one operation.
type OperationRow struct {
	Caller    string `json:"caller"`
	Upstream  string `json:"upstream"`
	Operation string `json:"operation"`
	// Tier is read, respond or admin; "" for an undocumented call, whose
	// Operation is then "METHOD path" ("(other)" past maxOpsPerRow).
	Tier         string `json:"tier"`
	Undocumented bool   `json:"undocumented,omitempty"`
	Calls        int    `json:"calls"`
	Forwarded    int    `json:"forwarded"`
	Refused      int    `json:"refused"`
}

// maxOpsPerRow bounds the undocumented method-and-path rows a caller's
// upstream keeps; the rest count as "(other)".
const maxOpsPerRow = 1000

// countOperation counts a call in the operations table.
func (r *Report) countOperation(caller string, l *line) {
	k := opKey{caller, l.Upstream, l.Operation}
	if l.Operation != "" {
		r.catalogued[l.Upstream] = true
	} else {
		k.operation = l.Method + " " + l.Path
	}
	row := r.ops[k]
	if row == nil {
		rk := [2]string{caller, l.Upstream}
		if l.Operation == "" && r.opsPerRow[rk] >= maxOpsPerRow {
			k.operation = "(other)"
			row = r.ops[k]
		} else if l.Operation == "" {
			r.opsPerRow[rk]++
		}
		if row == nil {
			row = &OperationRow{Caller: caller, Upstream: l.Upstream, Operation: k.operation, Tier: l.Tier, Undocumented: l.Operation == ""}
			r.ops[k] = row
		}
	}
	row.Calls++
	switch l.Outcome {
	case audit.OutcomeForwarded:
		row.Forwarded++
	case audit.OutcomeRefused:
		row.Refused++
	}
}

// tierRank orders the operations table: admin, respond, read, undocumented.
func tierRank(row OperationRow) int {
	switch row.Tier {
	case "admin":
		return 0
	case "respond":
		return 1
	case "read":
		return 2
	}
	return 3
}
