package eventid_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/eventid"
)

func TestAMsgIDIsScopedBySubjectAndContentAndItsKeyByTheRecordAlone(t *testing.T) {
	t.Parallel()
	web := eventid.MsgID("leads.web", "l-1", []byte(`{"id":"l-1","name":"Ann"}`))
	require.NotEqual(t, web, eventid.MsgID("leads.shop", "l-1", []byte(`{"id":"l-1","name":"Ann"}`)), "another subject, another event")
	changed := eventid.MsgID("leads.web", "l-1", []byte(`{"id":"l-1","name":"Ann Lee"}`))
	require.NotEqual(t, web, changed, "a changed body, another event")
	require.Equal(t, web, eventid.MsgID("leads.web", "l-1", []byte(`{"id":"l-1","name":"Ann"}`)), "an exact resend, the same event")

	require.Equal(t, "leads.web:l-1", eventid.Key(web))
	require.Equal(t, eventid.Key(web), eventid.Key(changed), "a changed lead keeps its key")
	for _, own := range []string{"lead-1", "", ";sha256=", "x;sha256=0123456789abcdef0123456789abcdeZ", "x;sha256=0123"} {
		require.Equal(t, own, eventid.Key(own), "a publisher's own id is its key")
	}
}

func ExampleMsgID() {
	id := eventid.MsgID("leads.web", "lead-7421", []byte(`{"id":"lead-7421","name":"Ann"}`))
	fmt.Println(eventid.Key(id))
	// Output: leads.web:lead-7421
}
