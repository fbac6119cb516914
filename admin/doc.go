// Package admin is the worker's admin HTTP server: Prometheus metrics, the
// liveness and readiness probes, the deployment's status as JSON, and a
// dashboard for operators (workflows, the run log, dead letters with
// one-click retry and purge).
//
// Routes:
//
//	GET /metrics   Prometheus metrics (GET and HEAD only)
//	GET /healthz   200 while the process serves HTTP
//	GET /readyz    200 when NATS is connected, start-up is done, every
//	               workflow's consumer is bound and Kustomer accepts the
//	               credentials; 503 with the reasons otherwise
//	GET /status    the JSON of `kustomer-sync status --json`
//	GET /          the dashboard: overview, /runs, /dead-letters
//
// A workflow paused for any other reason (Kustomer failing with 5xx or
// timeouts, a base URL that is not Kustomer's) leaves the replica ready:
// every replica would be paused alike, a restart cannot help, and an
// orchestrator that removes unready replicas would only stop the probes that
// resume the workflow. /status, the dashboard and the paused metric say why.
// Rejected credentials are an operator's to fix, so they make it unready.
//
// Safety: write actions are POSTs, checked by [http.CrossOriginProtection]
// and a per-browser CSRF token. With a Token (required when the server
// listens beyond loopback) every route but /healthz, /readyz and /metrics
// needs it, as "Authorization: Bearer <token>" or the cookie the login page
// sets. Without a Token (the server then listens on loopback) the dashboard
// and /status answer only requests whose Host is a loopback name or address
// (421 otherwise), so that a domain rebound to 127.0.0.1 cannot reach them.
// A bulk retry or purge acts on exactly the entries its confirmation page
// listed. No page shows a secret: API keys, NATS credentials and the replay
// key never reach this package.
package admin
