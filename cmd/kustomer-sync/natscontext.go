package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// natsContext is a context file of the nats CLI (ADR-21):
// $XDG_CONFIG_HOME/nats/context/<name>.json, by default under ~/.config.
type natsContext struct {
	Description string `json:"description"`
	URL         string `json:"url"`
	Token       string `json:"token"`
	User        string `json:"user"`
	Password    string `json:"password"`
	Creds       string `json:"creds"`
	Nkey        string `json:"nkey"`
	Cert        string `json:"cert"`
	Key         string `json:"key"`
	CA          string `json:"ca"`
	JSDomain    string `json:"jetstream_domain"`
	JSAPIPrefix string `json:"jetstream_api_prefix"`
	InboxPrefix string `json:"inbox_prefix"`
	TLSFirst    bool   `json:"tls_first"`

	// Settings this program cannot honour: an error when set, rather than a
	// connection that silently differs from the nats CLI's.
	NSC              string `json:"nsc"`
	UserJWT          string `json:"user_jwt"`
	WindowsCertStore string `json:"windows_cert_store"`
}

// natsExtras are the context's settings that have no flag of their own.
type natsExtras struct {
	token       string
	jsDomain    string
	jsAPIPrefix string
	inboxPrefix string
	tlsFirst    bool
}

// natsContextPath resolves a context name as the nats CLI does; a name that
// is a path (it has a separator or ends in .json) is used as it is.
func natsContextPath(name string) (string, error) {
	if strings.ContainsRune(name, filepath.Separator) || strings.HasSuffix(name, ".json") {
		return name, nil
	}
	if name == "." || name == ".." {
		return "", errors.New("not a context name")
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "nats", "context", name+".json"), nil
}

func loadNATSContext(name string) (natsContext, string, error) {
	var c natsContext
	path, err := natsContextPath(name)
	if err != nil {
		return c, path, err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, path, fmt.Errorf("no such context: %s does not exist (create it with 'nats context add')", path)
	}
	if err != nil {
		return c, path, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return c, path, fmt.Errorf("%s: not a nats context file: %v", path, jsonErrText(err))
	}
	var unsupported []string
	for key, v := range map[string]string{"nsc": c.NSC, "user_jwt": c.UserJWT, "windows_cert_store": c.WindowsCertStore} {
		if v != "" {
			unsupported = append(unsupported, key)
		}
	}
	if len(unsupported) > 0 {
		slices.Sort(unsupported)
		return c, path, fmt.Errorf("%s: %s not supported by kustomer-sync: use creds, nkey, user and password, or token", path, strings.Join(unsupported, ", "))
	}
	return c, path, nil
}

// jsonErrText says what is wrong with a JSON document without Go type names.
func jsonErrText(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%q has the wrong type (a %s)", te.Field, te.Value)
	}
	return err.Error()
}

// applyNATSContext fills the NATS settings that neither a flag nor its
// variable set from the context named by --context (NATS_CONTEXT).
func (a *app) applyNATSContext(cmd *cobra.Command) error {
	if a.natsContext == "" {
		return nil
	}
	c, _, err := loadNATSContext(a.natsContext)
	if err != nil {
		return flagError(cmd, "context", "%v", err)
	}
	fs := cmd.Flags()
	for name, p := range map[string]struct {
		dst  *string
		v    string
		file bool
	}{
		"nats-url":      {&a.natsURL, c.URL, false},
		"nats-user":     {&a.natsUser, c.User, false},
		"nats-password": {&a.natsPassword, c.Password, false},
		"nats-creds":    {&a.natsCreds, c.Creds, true},
		"nats-nkey":     {&a.natsNkey, c.Nkey, true},
		"nats-ca":       {&a.natsCA, c.CA, true},
		"nats-cert":     {&a.natsCert, c.Cert, true},
		"nats-key":      {&a.natsKey, c.Key, true},
	} {
		if f := fs.Lookup(name); f == nil || f.Changed || p.v == "" {
			continue
		}
		*p.dst = p.v
		if p.file {
			*p.dst = expandHome(p.v)
		}
	}
	// The nats CLI connects to localhost when a context has no url.
	if a.natsURL == "" {
		a.natsURL = defaultNATSURL
	}
	a.nats = natsExtras{token: c.Token, jsDomain: c.JSDomain, jsAPIPrefix: c.JSAPIPrefix, inboxPrefix: c.InboxPrefix, tlsFirst: c.TLSFirst}
	return nil
}

// useOwnServer forgets the NATS settings of the flags, variables and
// context, for commands (demo, bench) that connect only to the embedded
// server they start, which has no users, TLS or JetStream domain.
func (a *app) useOwnServer() {
	a.natsURL, a.natsCreds, a.natsUser, a.natsPassword, a.natsNkey = "", "", "", "", ""
	a.natsCA, a.natsCert, a.natsKey = "", "", ""
	a.nats = natsExtras{}
}

// expandHome expands a leading ~/ as the nats CLI does in context paths.
func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return p
}
