/*
 * libFuzzer target: cutting a captured schema change out of a query string
 * (replicator/ddlsql.c).  The string is whatever a client of the source
 * sent, so arbitrary bytes.  It is scanned from a heap copy of exactly its
 * size, so AddressSanitizer catches any read past len; every tag and the
 * first ordinals are tried, and a statement found is never longer than the
 * input plus the words a rewrite adds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "replicator/ddlsql.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const tags[] = {"CREATE TABLE", "CREATE TABLE AS", "SELECT INTO", "ALTER TABLE",
					   "CREATE INDEX", "DROP INDEX",      "GRANT",       "COMMENT"};
	char *copy = malloc(size ? size : 1);

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	for (size_t t = 0; t < sizeof(tags) / sizeof(tags[0]); t++) {
		for (int ordinal = 1; ordinal <= 3; ordinal++) {
			for (int in_xact = 0; in_xact <= 1; in_xact++) {
				StrBuf out;
				DdlSqlResult r;
				bool made = false;

				strbuf_init(&out);
				r = ddlsql_statement(copy, size, tags[t], ordinal, in_xact, &out);
				made = r == DDL_SQL_OK || r == DDL_SQL_ALONE;
				if (made && !out.failed && out.len > size + 64)
					abort();
				if (!made && out.len != 0)
					abort();
				/* Inside a transaction nothing is left to run on its own. */
				if (in_xact && r == DDL_SQL_ALONE)
					abort();
				strbuf_free(&out);
			}
		}
	}
	(void) ddlsql_count_statements(copy, size);
	{
		StrBuf parent, child, finalize;

		strbuf_init(&parent);
		strbuf_init(&child);
		strbuf_init(&finalize);
		if (!ddlsql_detach(copy, size, &parent, &child, &finalize) &&
		    parent.len + child.len + finalize.len != 0)
			abort();
		strbuf_free(&parent);
		strbuf_free(&child);
		strbuf_free(&finalize);
	}
	free(copy);
	return 0;
}
