package dlq_test

import (
	"fmt"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

func ExampleParseItems() {
	items, err := dlq.ParseItems("7, 0,3")
	fmt.Println(items, err)
	fmt.Println(dlq.FormatItems(items))
	// Output:
	// [0 3 7] <nil>
	// 0,3,7
}

func ExampleRecord_Header() {
	r := dlq.Record{
		Workflow:   "signup",
		Class:      outcome.Permanent,
		Error:      "kustomer: create: 400 badparam: Authorization: Bearer abcdefghijklmnop rejected",
		Attempts:   1,
		Subject:    "leads.signup",
		StreamSeq:  42,
		Items:      []int{0, 3},
		StatusCode: 400,
		Code:       "badparam",
	}
	h := r.Header()
	for _, k := range []string{dlq.HeaderClass, dlq.HeaderItems, dlq.HeaderStreamSeq, dlq.HeaderStatusCode, dlq.HeaderError} {
		fmt.Printf("%s: %s\n", k, h.Get(k))
	}
	fmt.Println(dlq.MsgID(r) == dlq.MsgID(r))
	// Output:
	// Ksync-Class: permanent
	// Ksync-Items: 0,3
	// Ksync-Stream-Seq: 42
	// Ksync-Status-Code: 400
	// Ksync-Error: kustomer: create: 400 badparam: Authorization: Bearer [redacted] rejected
	// true
}
