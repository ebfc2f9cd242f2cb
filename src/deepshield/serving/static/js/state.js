/* What the page knows and is doing, shared by its modules. */

// What the server owns (limits, accepted media, the status of a failed job's error code) comes from
// GET /healthz at start; nothing of it is written into this page.
export const state = { limits: null, accepted: null, terms: null, jobErrorStatuses: {}, card: null, run: 0, example: null, batch: null, job: null, upload: null, analysedAt: null, lostSince: null };
// lostSince: when the polls of the job waited for stopped finding the server (null while it answers).
