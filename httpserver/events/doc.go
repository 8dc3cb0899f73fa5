// Package events owns the hive's change stream: one hub that turns registry
// changes and provisioner progress into numbered events, keeps the latest of
// them in a bounded in-memory ring, serves them as Server-Sent Events on
// GET /v1/events (resumable with Last-Event-ID), pushes them to queen-rbee
// when configured, and a Go client (Watch) that reconnects and resumes.
//
// The hub keeps no second copy of the hive's state: worker records come from
// registry.Watch, models and provisions from the provisioner. Only the ring
// of recent events is its own.
//
// # Event types
//
// Every event has an id, a type, a time (RFC 3339, nanoseconds) and the
// full current record it is about, so a consumer never needs a second call.
// The JSON data of an event (fields left out when empty):
//
//	{"id":N, "type":"...", "time":"...", "worker":{record}, "from":"...",
//	 "to":"...", "reason":"...", "attempt":N, "last_exit":{...},
//	 "provision":{status}, "model":{model},
//	 "snapshot":{"workers":[...], "models":[...], "provisions":[...]}}
//
// The types, exactly:
//
//   - worker_registered: a worker record was created (worker).
//   - worker_state_changed: worker, from, to and, where relevant, reason:
//     for to=restarting the last exit's reason; for to=failed the worker's
//     last_error (else the last exit's reason); for to=unhealthy the
//     worker's last_error when set. Record updates that do not change the
//     state (heartbeats, vram reports) are not events; the next event
//     carries the record as it is then.
//   - worker_restarted: the worker entered restarting (emitted right after
//     its worker_state_changed): attempt is its restart_count, last_exit
//     how it ended. The backoff it waits is not included: the record has no
//     backoff field and only the monitor's restart tracker knows it; the
//     worker_state_changed restarting→loading that follows shows when the
//     wait ended.
//   - worker_removed: the record was removed (worker as it was, from).
//   - provision_started, provision_progress, provision_done,
//     provision_failed: provision carries the provision's status; done
//     also carries the model. Progress is rate-limited per provision to one
//     event per Config.ProgressInterval (250 ms by default).
//   - model_evicted: model carries the evicted model.
//   - hive_shutting_down: the hive began its graceful shutdown.
//   - reset: snapshot carries every worker, every cached model and the
//     provisions in flight. A consumer replaces its state with it. It is sent
//     first when a Last-Event-ID is older than the ring (or unknown, such as
//     one from before a hive restart, or 0: "give me everything"), and to
//     all consumers when the hub itself lost changes (its registry watch fell
//     behind). Changes the snapshot already holds are not sent again after
//     it, except a few made while it was being taken; every event carries
//     full records, so applying events in order as upserts is always right.
//
// # Ids
//
// Ids increase by one per event. The first id of a hub is the Unix time in
// microseconds when it was created, so the ids of a restarted hive are
// larger than those of its previous run, and a Last-Event-ID from that run is
// answered with a reset rather than with the wrong events.
//
// A reset sent to one consumer (on connect, or by the pusher) carries the id
// of the latest event it summarises, which may equal or even be below an id
// that consumer already has: always apply a reset, and count ids on from it.
//
// # Stream
//
// The SSE stream writes "id: N\nevent: <type>\ndata: <json>\n\n" per event
// and a comment ": ping\n\n" every Config.Heartbeat (15 s by default) to keep
// idle connections open through proxies. It starts with "id: P\n\n" (no
// data) naming the position the stream starts after, so a client that got no
// event yet can still resume without a gap.
//
// Query parameters: type=a,b (only those types; unknown types are 400
// INVALID_REQUEST), worker_id=w1,w2 (only worker events of those workers,
// plus hive_shutting_down), last_event_id=N (for clients that cannot set the
// Last-Event-ID header). Reset events pass every filter.
//
// A consumer that does not keep up (its bounded queue in the hub fills) is
// dropped: its connection is closed and Config.OnDrop is called (the
// rbee_hive_events_dropped_total metric). It can reconnect with
// Last-Event-ID and lose nothing the ring still holds. The hub never waits
// for a consumer.
//
// # Push
//
// A Pusher POSTs the same events to queen-rbee (queen.url, as configured,
// e.g. http://queen:7833/v1/hives/events) with Authorization: Bearer
// queen.token, as {"events":[...]} in batches of at most 100 events or 100 ms,
// in order, retrying with exponential backoff. Its first batch is a reset.
// While queen is unreachable events wait in a bounded buffer (10,000); when
// it overflows they are discarded and queen gets a fresh reset once it
// answers again, then the live events after it.
package events
