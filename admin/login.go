package admin

import (
	"net/http"
	"net/url"
	"strings"
)

// login sets the session cookie once the admin token is given.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	data := struct{ Next string }{localPath(r.FormValue("next"))}
	if r.Method != http.MethodPost {
		s.render(w, r, http.StatusOK, "login", view{Title: "Log in", Data: data})
		return
	}
	if s.cfg.Token == "" || !sameSecret(r.PostFormValue("token"), s.cfg.Token) {
		s.render(w, r, http.StatusUnauthorized, "login", view{Title: "Log in", Error: "That is not the admin token.", Data: data})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.tokenDigest(), Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, data.Next, http.StatusSeeOther)
}

// localPath returns next when it is a path on this server, else "/": the
// login page sends there once logged in, and nowhere else. Browsers drop
// ASCII tabs and newlines anywhere in a URL, and spaces and control
// characters around it, so "/\t/evil.example" would go to //evil.example.
// The paths the server sends to the login page are escaped and hold none of
// them, so next with any is refused; it must start with a single "/" (not
// "//" or "/\") and parse with no scheme or host.
func localPath(next string) string {
	control := strings.ContainsFunc(next, func(r rune) bool { return r <= ' ' || r == 0x7f })
	if control || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return "/"
	}
	return next
}
