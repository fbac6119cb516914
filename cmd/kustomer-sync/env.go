package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Flag annotations: the environment variable a flag reads, and which variable
// actually set it in this process (so errors name the variable, not the flag).
const (
	envAnnotation    = "ksync_env"
	envSetAnnotation = "ksync_env_set"
	secretAnnotation = "ksync_secret"
)

// bindEnv makes the environment variable key a fallback for flag name: a value
// given on the command line wins, then key, then the flag's default. --help
// shows "(env KEY)". The variable is parsed exactly as the flag is, at start
// (applyEnv, from the root command's PersistentPreRunE): a value the flag
// would refuse is a usage error naming the variable. An empty variable counts
// as unset. bindEnv panics on an unknown flag name (a programming error).
//
// Register the flag with a constant default and no os.Getenv: the default
// shown in --help must not depend on (or reveal) the environment.
func bindEnv(fs *pflag.FlagSet, name, key string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("bindEnv: no flag --" + name)
	}
	_ = fs.SetAnnotation(name, envAnnotation, []string{key})
	f.Usage += " (env " + key + ")"
}

// markSecret keeps flag name's value out of every error message.
func markSecret(fs *pflag.FlagSet, name string) {
	_ = fs.SetAnnotation(name, secretAnnotation, []string{"true"})
}

// applyEnv sets each flag of fs that has an environment variable (bindEnv),
// is set in the environment and was not given on the command line. It reports
// every bad value, not only the first.
func applyEnv(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		keys := f.Annotations[envAnnotation]
		if len(keys) == 0 || f.Changed {
			return
		}
		v := os.Getenv(keys[0])
		if v == "" {
			return
		}
		_ = fs.SetAnnotation(f.Name, envSetAnnotation, keys)
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, badValue(f, v))
		}
	})
	return errors.Join(errs...)
}

// flagValue names flag f with value v and where it came from:
// `--rate-per-minute "0"`, or `KSYNC_RATE_PER_MINUTE="0" (--rate-per-minute)`
// when an environment variable set it. A secret value is not shown.
func flagValue(f *pflag.Flag, v string) string {
	shown := strconv.Quote(v)
	if len(f.Annotations[secretAnnotation]) > 0 {
		shown = "[redacted]"
	}
	if keys := f.Annotations[envSetAnnotation]; len(keys) > 0 {
		return keys[0] + "=" + shown + " (--" + f.Name + ")"
	}
	return "--" + f.Name + " " + shown
}

// flagError is a usage error about the value of flag name in cmd's flags,
// naming the flag or the environment variable that set it, and the value
// unless the flag is secret: `--rate-per-minute "0": want 1 or more`.
func flagError(cmd *cobra.Command, name, format string, args ...any) error {
	f := cmd.Flags().Lookup(name)
	if f == nil || !f.Changed && f.Value.String() == "" {
		// Not given: there is no value to show, secret or not.
		return usageError{fmt.Errorf("--"+name+": "+format, args...)}
	}
	if !f.Changed && len(f.Annotations[secretAnnotation]) == 0 {
		return usageError{fmt.Errorf("--%s (default %s): %s", name, f.Value.String(), fmt.Sprintf(format, args...))}
	}
	return usageError{fmt.Errorf("%s: %s", flagValue(f, f.Value.String()), fmt.Sprintf(format, args...))}
}

// badValue says what a flag of f's type wants, without Go's parser errors.
func badValue(f *pflag.Flag, v string) error {
	want := map[string]string{
		"int":         "a whole number, digits only (1000, not 1,000)",
		"int64":       "a whole number, digits only (1000, not 1,000)",
		"uint64":      "a whole number, digits only (1000, not 1,000)",
		"float64":     "a number such as 0.25",
		"duration":    "a duration with a unit, such as 500ms, 30s, 5m or 24h",
		"bool":        "true or false",
		"intSlice":    "whole numbers separated by commas, such as 1,3",
		"stringSlice": "values separated by commas",
		"size":        "a size in bytes, with an optional unit: 10GB, 512MiB, or 0",
	}[f.Value.Type()]
	if want == "" {
		want = "a valid " + f.Value.Type()
	}
	return usageError{fmt.Errorf("%s: want %s", flagValue(f, v), want)}
}

// flagParseError turns pflag's parse errors into usage errors that name the
// flag and what it wants (cobra's SetFlagErrorFunc).
func flagParseError(_ *cobra.Command, err error) error {
	var inv *pflag.InvalidValueError
	if errors.As(err, &inv) {
		return badValue(inv.GetFlag(), inv.GetValue())
	}
	return usageError{err}
}

// checkFlags runs each check on cmd's flags and joins the failures.
func checkFlags(cmd *cobra.Command, checks ...flagCheck) error {
	var errs []error
	for _, c := range checks {
		if err := c(cmd); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return usageError{errors.Join(errs...)}
}

// flagCheck checks one flag's value; nil if it is fine.
type flagCheck func(cmd *cobra.Command) error

// atLeast wants flag name (an int flag) to be min or more.
func atLeast(name string, min int) flagCheck {
	return func(cmd *cobra.Command) error {
		n, err := cmd.Flags().GetInt(name)
		if err != nil || n >= min {
			return nil
		}
		return flagError(cmd, name, "want %d or more", min)
	}
}

// between wants flag name (an int flag) to be in [lo, hi].
func between(name string, lo, hi int) flagCheck {
	return func(cmd *cobra.Command) error {
		n, err := cmd.Flags().GetInt(name)
		if err != nil || (n >= lo && n <= hi) {
			return nil
		}
		return flagError(cmd, name, "want %d to %d", lo, hi)
	}
}

// positiveDuration wants flag name (a duration flag) to be above zero.
func positiveDuration(name string) flagCheck {
	return func(cmd *cobra.Command) error {
		d, err := cmd.Flags().GetDuration(name)
		if err != nil || d > 0 {
			return nil
		}
		return flagError(cmd, name, "want a duration above zero, such as 30s")
	}
}

// share wants flag name (a float64 flag) to be a share: 0 to 1.
func share(name string) flagCheck {
	return func(cmd *cobra.Command) error {
		x, err := cmd.Flags().GetFloat64(name)
		if err != nil || (x >= 0 && x <= 1) {
			return nil
		}
		return flagError(cmd, name, "want a share from 0 to 1, such as 0.2")
	}
}
