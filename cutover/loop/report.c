/*
 * What the cutover tells: a notice per phase to the admin who asked, and the
 * report (rows for psql, JSON for scripts) kept for SHOW CUTOVER.
 */
#include "cutover/loop/internal.h"
#include "common/log.h"
#include "proxy/pktbuf.h"
#include "proxy/proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *
cutover_kind_name(CutoverKind kind)
{
	switch (kind) {
	case CUTOVER_FORWARD:
		return "cutover";
	case CUTOVER_DRY_RUN:
		return "cutover dry run";
	case CUTOVER_ROLLBACK:
		return "rollback";
	}
	return "?";
}

/* ---- the admin who asked ---- */

void
cutover_send_notices(Cutover *c)
{
	StrBuf lines;
	const char *p;
	PktBuf pb;

	pthread_mutex_lock(&c->lock);
	lines = c->notices;
	strbuf_init(&c->notices);
	pthread_mutex_unlock(&c->lock);
	if (!cutover_admin(c) || lines.len == 0) {
		strbuf_free(&lines);
		return;
	}
	pktbuf_init(&pb);
	for (p = strbuf_str(&lines); *p;) {
		size_t n = strcspn(p, "\n");
		char line[512];

		snprintf(line, sizeof(line), "%.*s", (int) n, p);
		pktbuf_write_notice(&pb, "NOTICE", "00000", line, NULL, NULL);
		p += n + (p[n] == '\n');
	}
	strbuf_free(&lines);
	if (pb.failed || !sbuf_answer(&c->admin->sbuf, pb.buf, pb.len))
		log_warning(c->admin->subject, "could not send the cutover's progress");
	pktbuf_free(&pb);
}

void
cutover_notice(Cutover *c, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_info("cutover", "%s", line);
	strbuf_append(&c->notices, line);
	strbuf_append_char(&c->notices, '\n');
	cutover_send_notices(c);
}

static void report_add(CutoverReport *r, const char *key, bool number, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void
report_add(CutoverReport *r, const char *key, bool number, const char *fmt, ...)
{
	ReportItem *item;
	va_list ap;
	char value[2048];

	if (r->nitems == REPORT_MAX_ITEMS)
		return;
	item = &r->items[r->nitems];
	va_start(ap, fmt);
	vsnprintf(value, sizeof(value), fmt, ap);
	va_end(ap);
	item->value = strdup(value);
	if (!item->value)
		return;
	snprintf(item->key, sizeof(item->key), "%s", key);
	item->number = number;
	r->nitems++;
}

void
cutover_report_free(CutoverReport *r)
{
	int i;

	if (!r)
		return;
	for (i = 0; i < r->nitems; i++)
		free(r->items[i].value);
	free(r->json);
	free(r);
}

/* The JSON form, made again from the items whenever they change. */
static void
report_render_json(CutoverReport *r)
{
	StrBuf json;
	int i;

	strbuf_init(&json);
	strbuf_append_char(&json, '{');
	for (i = 0; i < r->nitems; i++) {
		strbuf_append(&json, i ? ", " : "");
		strbuf_append_json(&json, r->items[i].key);
		strbuf_append(&json, ": ");
		if (r->items[i].number)
			strbuf_append(&json, r->items[i].value);
		else
			strbuf_append_json(&json, r->items[i].value);
	}
	strbuf_append_char(&json, '}');
	free(r->json);
	r->json = json.failed ? NULL : strdup(strbuf_str(&json));
	strbuf_free(&json);
}

CutoverReport *
cutover_report_build(Cutover *c, bool ok)
{
	CutoverReport *r = calloc(1, sizeof(CutoverReport));
	ev_tstamp first_hold, longest;
	char when[64];
	time_t now = time(NULL);
	int i;

	if (!r)
		return NULL;
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	/* The longest wait: measured when the clients resumed (on an abort, before the report). */
	first_hold = c->first_hold;
	longest = c->longest_hold;
	report_add(r, "kind", false, "%s", cutover_kind_name(c->kind));
	report_add(r, "result", false, "%s",
		   c->kind == CUTOVER_DRY_RUN ? (ok ? "ready" : "not ready") : (ok ? "completed" : "aborted"));
	if (c->failure[0])
		report_add(r, "reason", false, "%s", c->failure);
	if (c->undo_error[0])
		report_add(r, "undo_error", false, "%s", c->undo_error);
	report_add(r, "finished_at", false, "%s", when);
	report_add(r, "from", false, "%s %s:%d", c->from->role, c->from->host, c->from->port);
	report_add(r, "to", false, "%s %s:%d", c->to->role, c->to->host, c->to->port);
	report_add(r, "lag_bytes", true, "%lld", (long long) c->lag_bytes);
	report_add(r, "precheck_ms", true, "%.1f", c->precheck_ms);
	if (c->kind == CUTOVER_DRY_RUN) {
		report_add(r, "catch_up_estimate_ms", true, "%.1f", c->catch_up_estimate * 1e3);
		report_add(r, "large_object_diff_estimate_ms", true, "%.1f", c->large_object_estimate * 1e3);
		report_add(r, "large_objects_differing", true, "%d", c->large_objects_differing);
		report_add(r, "clients", true, "%d", c->moved);
		report_add(r, "clients_unmovable", true, "%d", c->unmovable);
		report_add(r, "client_list", false, "%s", strbuf_str(&c->dry_clients));
	} else {
		if (c->t_pause > 0 && c->t_resume > 0) {
			c->pause_seconds = first_hold > 0 ? c->t_resume - first_hold : 0.0;
			report_add(r, "pause_ms", true, "%.1f", c->pause_seconds * 1e3);
			report_add(r, "paused_ms", true, "%.1f", (c->t_resume - c->t_pause) * 1e3);
			report_add(r, "longest_wait_ms", true, "%.1f", longest * 1e3);
		}
		if (c->t_settle > 0 && c->t_pause > 0) {
			report_add(r, "sessions_read_before_pause_ms", true, "%.1f", (c->t_pause - c->t_settle) * 1e3);
			report_add(r, "sessions_left_to_read", true, "%d", c->settle_unread);
			report_add(r, "session_read_rounds", true, "%d", c->settle_rounds);
		}
		report_add(r, "sessions_known_unread", true, "%d", c->sessions_known);
		if (c->t_drained > 0)
			report_add(r, "drain_ms", true, "%.1f", (c->t_drained - c->t_pause) * 1e3);
		if (c->t_captured > 0)
			report_add(r, "sessions_carried_ms", true, "%.1f", (c->t_captured - c->t_pause) * 1e3);
		for (i = 0; i < PH_COUNT; i++) {
			char key[40];

			if (c->phase_ms[i] > 0) {
				snprintf(key, sizeof(key), "%s_ms", cutover_phase_names[i]);
				report_add(r, key, true, "%.1f", c->phase_ms[i]);
			}
		}
		if (c->t_synced > 0 && c->t_resume > 0)
			report_add(r, "switch_ms", true, "%.1f", (c->t_resume - c->t_synced) * 1e3);
		report_add(r, "clients_moved", true, "%d", c->moved);
		report_add(r, "clients_terminated", true, "%d", c->terminated_clients);
		report_add(r, "sessions_fenced_off", true, "%d", c->terminated);
		report_add(r, "sequences_synced", true, "%d", c->sequences);
		report_add(r, "tables_verified", true, "%d", c->tables_verified);
		report_add(r, "marker_lsns", false, "%s", c->lsns);
	}
	report_render_json(r);
	return r;
}

void
cutover_report_set(CutoverReport *r, const char *key, bool number, const char *value)
{
	int i;
	char *copy;

	if (!r)
		return;
	for (i = 0; i < r->nitems && strcmp(r->items[i].key, key) != 0; i++)
		;
	if (i == r->nitems) {
		report_add(r, key, number, "%s", value);
	} else if ((copy = strdup(value)) != NULL) {
		free(r->items[i].value);
		r->items[i].value = copy;
		r->items[i].number = number;
	}
	report_render_json(r);
}

bool
cutover_report_send(Client *admin, const CutoverReport *r, bool json, const char *tag, const char *error)
{
	static const char *const cols[] = {"field", "value"};
	static const char *const json_cols[] = {"report"};
	PktBuf pb;
	char ctag[64];
	int i;

	pktbuf_init(&pb);
	if (json) {
		const char *v[1] = {r && r->json ? r->json : "{}"};

		pktbuf_write_row_description(&pb, 1, json_cols);
		pktbuf_write_data_row(&pb, 1, v);
		snprintf(ctag, sizeof(ctag), "%s 1", tag);
	} else {
		pktbuf_write_row_description(&pb, 2, cols);
		for (i = 0; r && i < r->nitems; i++) {
			const char *v[2] = {r->items[i].key, r->items[i].value};

			pktbuf_write_data_row(&pb, 2, v);
		}
		snprintf(ctag, sizeof(ctag), "%s %d", tag, r ? r->nitems : 0);
	}
	if (error)
		pktbuf_write_error(&pb, "ERROR", "55000", error, NULL, "SHOW CUTOVER shows the report");
	else
		pktbuf_write_command_complete(&pb, ctag);
	pktbuf_write_ready_for_query(&pb, TXN_IDLE);
	return admin_send(&pb, admin);
}
