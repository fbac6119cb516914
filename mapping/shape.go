package mapping

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	yamlast "github.com/goccy/go-yaml/ast"
)

// The shape check runs before a config value is decoded into its Go struct: it walks the YAML nodes
// against the struct's `yaml` tags and records every unknown key and every value of the wrong kind,
// each with its place and in the words of the file (a duration, a whole number, a list), never in the
// decoder's (uint64, Go struct field). Only a value whose shape is right is decoded.

var (
	durationType = reflect.TypeOf(time.Duration(0))
	yamlNodeType = reflect.TypeOf((*yamlast.Node)(nil)).Elem()
)

// checkShape records a ConfigError for each mistake in node against t, naming the setting by path
// ("retry.initial_delay"), and reports whether there was none. prefix starts each message (e.g.
// `workflow "batch": `).
func (p *parser) checkShape(node yamlast.Node, t reflect.Type, prefix, path string) bool {
	node = unwrap(node)
	if node == nil || t == yamlNodeType {
		return true
	}
	if _, isNull := node.(*yamlast.NullNode); isNull {
		return true // left out: the default applies
	}
	if _, isAlias := node.(*yamlast.AliasNode); isAlias {
		return true // the decoder resolves it; its anchor was checked where it stands
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	want := func(what string) bool {
		where := prefix
		switch {
		case path != "":
			where += path + ": "
		case prefix == "":
			where = "the file: "
		}
		p.errAt(node, "%swant %s, got %s", where, what, describeNode(node))
		return false
	}
	switch {
	case t == durationType:
		s, ok := node.(*yamlast.StringNode)
		if !ok {
			return want("a duration such as 5s or 1m")
		}
		if d, err := time.ParseDuration(s.Value); err != nil || d < 0 {
			return want("a duration such as 5s or 1m")
		}
		return true
	case t.Kind() == reflect.Struct:
		mvs := mappingValues(node)
		if mvs == nil {
			return want("a mapping of settings")
		}
		bad := p.settings(mvs, t, prefix, path, func(mv *yamlast.MappingValueNode, f reflect.StructField, key string) bool {
			return p.checkShape(mv.Value, f.Type, prefix, key)
		})
		return len(bad) == 0
	case t.Kind() == reflect.Slice:
		seq, isSeq := node.(*yamlast.SequenceNode)
		if !isSeq {
			return want("a list such as [a, b]")
		}
		ok := true
		for i, item := range seq.Values {
			ok = p.checkShape(item, t.Elem(), prefix, fmt.Sprintf("%s[%d]", path, i)) && ok
		}
		return ok
	case t.Kind() == reflect.String:
		switch node.(type) {
		case *yamlast.StringNode, *yamlast.LiteralNode:
			return true
		}
		return want("text")
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		if _, ok := node.(*yamlast.IntegerNode); !ok {
			return want("a whole number")
		}
		return true
	case t.Kind() == reflect.Float64 || t.Kind() == reflect.Float32:
		switch node.(type) {
		case *yamlast.IntegerNode, *yamlast.FloatNode:
			return true
		}
		return want("a number")
	case t.Kind() == reflect.Bool:
		if _, ok := node.(*yamlast.BoolNode); !ok {
			return want("true or false")
		}
		return true
	}
	return true
}

// unwrap returns the value under tags and anchors.
func unwrap(node yamlast.Node) yamlast.Node {
	for {
		switch n := node.(type) {
		case *yamlast.TagNode:
			node = n.Value
		case *yamlast.AnchorNode:
			node = n.Value
		default:
			return node
		}
	}
}

// describeNode says what a YAML value is, in the file's words: `the number 5`, `the text "5 seconds"`.
func describeNode(node yamlast.Node) string {
	switch n := unwrap(node).(type) {
	case *yamlast.IntegerNode, *yamlast.FloatNode, *yamlast.InfinityNode, *yamlast.NanNode:
		return "the number " + n.GetToken().Value
	case *yamlast.StringNode:
		return "the text " + short(n.Value)
	case *yamlast.LiteralNode:
		return "a block of text"
	case *yamlast.BoolNode:
		return fmt.Sprintf("%t", n.Value)
	case *yamlast.SequenceNode:
		return "a list"
	case *yamlast.MappingNode, *yamlast.MappingValueNode:
		return "a mapping"
	case *yamlast.NullNode, nil:
		return "nothing"
	}
	return "a " + strings.ToLower(unwrap(node).Type().String())
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// decodeSettings decodes the settings of a mapping node into the struct ptr points to, setting by
// setting: a setting whose shape is wrong is recorded as a mistake and left at its zero value (its
// default), so that the checks that follow still run on the rest and report their mistakes too. It
// returns the keys that were left out for a mistake, and false when node is not a mapping at all.
func (p *parser) decodeSettings(node yamlast.Node, ptr any, prefix string) (bad map[string]bool, ok bool) {
	v := reflect.ValueOf(ptr).Elem()
	mvs := mappingValues(unwrap(node))
	if mvs == nil {
		return nil, p.checkShape(node, v.Type(), prefix, "")
	}
	return p.settings(mvs, v.Type(), prefix, "", func(mv *yamlast.MappingValueNode, f reflect.StructField, key string) bool {
		if !p.checkShape(mv.Value, f.Type, prefix, key) {
			return false
		}
		if err := yaml.NodeToValue(mv.Value, v.FieldByIndex(f.Index).Addr().Interface(), yaml.Strict()); err != nil {
			p.yamlErr(err)
			return false
		}
		return true
	}), true
}

// settings walks the keys of a mapping against the `yaml` tags of struct type t: it records each
// unknown or repeated key, and calls check (with the key's path) for each known one. It returns the
// keys that were unknown, repeated or failed their check.
func (p *parser) settings(mvs []*yamlast.MappingValueNode, t reflect.Type, prefix, path string,
	check func(mv *yamlast.MappingValueNode, f reflect.StructField, key string) bool) map[string]bool {
	bad := make(map[string]bool)
	seen := make(map[string]bool, len(mvs))
	for _, mv := range mvs {
		key := mv.Key.GetToken().Value
		field, found := fieldByTag(t, key)
		switch {
		case !found:
			p.errAt(mv.Key, "%sunknown setting %s%s", prefix, quote(joinPath(path, key)), suggest(key, yamlTags(t)))
			bad[key] = true
		case seen[key]:
			p.errAt(mv.Key, "%s%s is given twice", prefix, joinPath(path, key))
			bad[key] = true
		case !check(mv, field, joinPath(path, key)):
			bad[key] = true
		}
		seen[key] = true
	}
	return bad
}

func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func yamlTags(t reflect.Type) []string {
	var tags []string
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag != "" && tag != "-" {
			tags = append(tags, tag)
		}
	}
	sort.Strings(tags)
	return tags
}

// suggest names the closest valid key when it is a likely typo, or lists the valid keys.
func suggest(key string, valid []string) string {
	best, bestDist := "", 3
	for _, v := range valid {
		if d := editDistance(strings.ToLower(key), v); d < bestDist {
			best, bestDist = v, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return " (valid: " + strings.Join(valid, ", ") + ")"
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
