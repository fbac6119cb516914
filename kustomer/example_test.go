package kustomer_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
)

func ExampleClient_CreateCustomer() {
	sb, _ := sandbox.New(sandbox.Config{APIKey: "key"})
	srv := httptest.NewServer(sb)
	defer srv.Close()

	c, _ := kustomer.New(kustomer.Config{BaseURL: srv.URL, APIKey: "key"})
	ctx := context.Background()
	created, err := c.CreateCustomer(ctx, map[string]any{
		"name":       "Jane Doe",
		"externalId": "lead-42",
		"emails":     []map[string]any{{"email": "jane@example.com"}},
	})
	fmt.Println(err, created.Attributes["displayName"])

	_, err = c.CreateCustomer(ctx, map[string]any{"emails": []map[string]any{{"email": "not an email"}}})
	fmt.Println(kustomer.ClassOf(err), err)

	_, err = c.CustomerByExternalID(ctx, "lead-43")
	fmt.Println(kustomer.IsNotFound(err))
	// Output:
	// <nil> Jane Doe
	// permanent kustomer: create: 400 badparam: Invalid email: not an email address (/emails/0/email)
	// true
}
