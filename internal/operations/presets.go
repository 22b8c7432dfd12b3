package operations

import (
	"fmt"
	"sync"
)

// Preset returns the catalogue of a preset: huntress (from the vendor's
// spec) or infocyte (the writes of the vendor's own PowerShell module);
// nil for a preset without one.
func Preset(name string) *Catalogue {
	switch name {
	case "huntress":
		return Huntress()
	case "infocyte":
		return Infocyte()
	}
	return nil
}

// Huntress is the huntress preset's catalogue (huntress_table.go).
var Huntress = sync.OnceValue(func() *Catalogue { return must(New(huntressOps, Options{})) })

// Infocyte is the infocyte preset's catalogue (infocyte.go): templates
// relative to /api, literals matched case-insensitively as LoopBack does,
// every other GET read and every other write admin.
var Infocyte = sync.OnceValue(func() *Catalogue {
	return must(New(infocyteOps, Options{FoldCase: true, Base: "/api",
		ReadAll:  &Operation{Name: "read_any", Tier: Read, Method: "GET"},
		WriteAll: &Operation{Name: "write_other", Tier: Admin, Method: "*"},
	}))
})

func must(c *Catalogue, err error) *Catalogue {
	if err != nil {
		panic(fmt.Sprintf("operations: a preset's table does not compile: %v", err))
	}
	return c
}
