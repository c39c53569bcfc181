#include "common/tmpfile.h"
#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int
tmpfile_anonymous(const char *kind, const char *subject)
{
	char tmpl[64];
	int fd;

	/* mkstemp replaces the six Xs. */
	snprintf(tmpl, sizeof(tmpl), "/tmp/pghandoff-%s-XXXXXX", kind);
	fd = mkstemp(tmpl);
	if (fd < 0) {
		log_error(subject, "could not create a %s file in /tmp: %s", kind, strerror(errno));
		return -1;
	}
	(void) unlink(tmpl);
	return fd;
}
