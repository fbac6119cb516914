package admin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
)

// csrfCookie identifies a browser for its CSRF token.
const csrfCookie = "ksync_csrf"

// csrfToken returns the token forms carry, setting the browser's cookie if
// it has none yet.
func (s *Server) csrfToken(w http.ResponseWriter, r *http.Request) string {
	id := ""
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 32 {
		id = c.Value
	} else {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		id = hex.EncodeToString(b)
		http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	}
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte(id))
	return hex.EncodeToString(m.Sum(nil))
}

// checkCSRF reports whether a POST carries the token of its browser's
// cookie; it answers 403 when not.
func (s *Server) checkCSRF(w http.ResponseWriter, r *http.Request) bool {
	c, err := r.Cookie(csrfCookie)
	if err == nil {
		m := hmac.New(sha256.New, s.csrfKey)
		m.Write([]byte(c.Value))
		want := hex.EncodeToString(m.Sum(nil))
		if hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(want)) {
			return true
		}
	}
	http.Error(w, "admin: the form's CSRF token is missing or stale: reload the page and try again", http.StatusForbidden)
	return false
}
