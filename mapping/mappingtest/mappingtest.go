// Package mappingtest gives tests the workflow configs under
// testdata/workflows/ at the repository's root, so that a test names the
// workflow it runs instead of repeating its YAML.
package mappingtest

import (
	"os"
	"path/filepath"
	"runtime"
)

// Path is the path of the test workflow called name:
// testdata/workflows/name.yaml at the repository's root.
func Path(name string) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("mappingtest: cannot tell where the repository is")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "workflows", name+".yaml")
}

// Workflow is the YAML of the test workflow called name. It panics when
// there is none: a test names a file that is not there.
func Workflow(name string) string {
	b, err := os.ReadFile(Path(name))
	if err != nil {
		panic(err)
	}
	return string(b)
}
