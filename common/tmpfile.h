/*
 * Scratch files that never outlive the process.
 */
#ifndef PGHANDOFF_COMMON_TMPFILE_H
#define PGHANDOFF_COMMON_TMPFILE_H

/*
 * A new file, /tmp/pghandoff-KIND-XXXXXX, unlinked at once: it lives only as
 * long as its descriptor, even after kill -9.  Returns the descriptor, or -1
 * (logged, naming subject).
 */
int tmpfile_anonymous(const char *kind, const char *subject);

#endif
