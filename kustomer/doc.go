// Package kustomer is the edge between kustomer-sync and Kustomer's REST API.
//
// A [Client] creates customers (one at a time, or up to 100 in an asynchronous
// bulk job followed with [Client.BulkJob] and [Client.BulkResults]), looks them
// up by externalId, email or phone, and updates them with replace=false (the
// upsert of Kustomer's CRM-sync guide: look up, then create or update). Every
// request costs one unit of the org's rate budget. Every outcome of a call is classified exactly once, here, into an
// [*Error] whose [Class] tells the layers above what to do:
//
//   - 200/201: success.
//   - 400, 409, 422 and any other 4xx with Kustomer's JSON error body, and a
//     look-up's 404 with it ([IsNotFound]): [ClassPermanent].
//   - 401, 403: [ClassSystemic] (credentials, role or region; pause, do not fail items).
//   - An answer that shows the base URL does not lead to Kustomer's API:
//     [ClassSystemic] too. That is a 404 on a create, a 4xx without Kustomer's
//     JSON error body (an HTML page, another API's error; 413, 414 and 431
//     excepted, as they are about the request), and a 2xx that is not a JSON
//     object or holds no customer id.
//   - 429: [ClassRetryable], with [Error.RetryAfter] from Retry-After or x-ratelimit-reset.
//   - 5xx, timeouts and connection errors: [ClassRetryable]. [Error.Timeout] is set
//     when the request may have reached Kustomer (the outcome is unknown), so a
//     caller should look the customer up by externalId before creating it again.
//     A 504 (a gateway gave up waiting) and a 2xx whose body cannot be read
//     count as unknown outcomes too.
//   - Cancellation of the caller's context is returned as the context's error,
//     wrapped; it is not a Kustomer failure and carries no class.
//
// A bulk item's own failure, reported in the job's results, is classified as
// the single create of that item would be ([BulkResult.Err]).
//
// The API key is sent only in the Authorization header. It never appears in an
// error, a log line or a [RateLimit].
//
// The sandbox sub-package is a faithful local Kustomer (an [net/http.Handler])
// for tests, demos and benchmarks; kustomertest wraps it for tests and holds
// the behaviour suite that the sandbox and a real Kustomer account must both pass.
package kustomer
