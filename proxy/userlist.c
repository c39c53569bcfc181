/*
 * Loading the auth file.  Parsed strictly: a line that is not two quoted
 * strings is an error naming FILE:LINE, and nothing of a bad file is used.
 *
 * Also where a login's secret is chosen, so that a user the file does not
 * list is checked the same way as one it does: against a mock secret made
 * from a random key, never shown.  The key is kept in a file of its own
 * (userlist_keep_secret), so that a restarted proxy gives an unknown user
 * the same salt, as PostgreSQL's mock salt does across restarts.
 */
#include "proxy/userlist.h"
#include "common/log.h"
#include "common/md5auth.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LINE 4096
#define MOCK_SECRET_LEN 32

static uint8_t mock_secret[MOCK_SECRET_LEN];
static char mock_password[2 * MOCK_SECRET_LEN + 1]; /* its hex form: a password no client knows */
static bool have_mock_secret;

static void
set_mock_password(void)
{
	int i;

	for (i = 0; i < MOCK_SECRET_LEN; i++)
		snprintf(mock_password + 2 * i, 3, "%02x", mock_secret[i]);
	have_mock_secret = true;
}

static bool
ensure_mock_secret(char *err, size_t errlen)
{
	if (have_mock_secret)
		return true;
	if (RAND_bytes(mock_secret, sizeof(mock_secret)) != 1) {
		snprintf(err, errlen, "could not generate a random secret");
		return false;
	}
	set_mock_password();
	return true;
}

/* The secret from its file: 64 hex digits and a newline.  False when the file is not that. */
static bool
read_secret(int fd)
{
	char hex[2 * MOCK_SECRET_LEN + 2];
	ssize_t n = read(fd, hex, sizeof(hex));
	int i;

	if (n != (ssize_t) sizeof(hex) - 1 || hex[2 * MOCK_SECRET_LEN] != '\n')
		return false;
	for (i = 0; i < MOCK_SECRET_LEN; i++) {
		unsigned v;

		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return false;
		mock_secret[i] = (uint8_t) v;
	}
	set_mock_password();
	return true;
}

void
userlist_keep_secret(const char *path)
{
	char err[128], hex[2 * MOCK_SECRET_LEN + 2];
	int fd;

	if (have_mock_secret)
		return;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		bool ok = read_secret(fd);

		close(fd);
		if (!ok)
			log_warning("auth",
				    "%s is not a secret written by pghandoff: unknown users get salts of this "
				    "process only; remove the file to have a new one written",
				    path);
		return;
	}
	if (errno != ENOENT || !ensure_mock_secret(err, sizeof(err))) {
		log_warning("auth", "could not read %s: unknown users get salts of this process only", path);
		return;
	}
	memcpy(hex, mock_password, 2 * MOCK_SECRET_LEN);
	hex[2 * MOCK_SECRET_LEN] = '\n';
	/* O_EXCL: another process writing it first wins; ours serves this process only. */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, hex, 2 * MOCK_SECRET_LEN + 1) != 2 * MOCK_SECRET_LEN + 1 || fsync(fd) != 0)
		log_warning("auth", "could not write %s: %s; unknown users get salts of this process only", path,
			    strerror(errno));
	if (fd >= 0)
		close(fd);
}

bool
userlist_entry_init(UserEntry *e, const char *name, const char *secret, char *err, size_t errlen)
{
	memset(e, 0, sizeof(*e));
	if (scram_verifier_looks_like(secret)) {
		if (!scram_verifier_parse(&e->verifier, secret, err, errlen))
			return false;
		e->kind = SECRET_SCRAM;
	} else if (md5auth_is_stored(secret)) {
		e->kind = SECRET_MD5;
	} else {
		e->kind = SECRET_PLAIN;
	}
	e->name = strdup(name);
	e->secret = strdup(secret);
	if (!e->name || !e->secret) {
		userlist_entry_clear(e);
		snprintf(err, errlen, "out of memory");
		return false;
	}
	return true;
}

void
userlist_entry_clear(UserEntry *e)
{
	free(e->name);
	OPENSSL_cleanse(&e->verifier, sizeof(e->verifier));
	if (e->secret) {
		OPENSSL_cleanse(e->secret, strlen(e->secret));
		free(e->secret);
	}
	memset(e, 0, sizeof(*e));
}

/* Reads one "quoted" token at *p into out (unescaping ""), advancing *p. */
static bool
read_quoted(const char **p, char *out, size_t outlen)
{
	const char *s = *p;
	size_t n = 0;

	while (*s == ' ' || *s == '\t')
		s++;
	if (*s != '"')
		return false;
	s++;
	for (;;) {
		if (*s == '\0' || *s == '\n')
			return false;
		if (*s == '"') {
			if (s[1] != '"')
				break;
			s++;
		}
		if (n + 1 >= outlen)
			return false;
		out[n++] = *s++;
	}
	out[n] = '\0';
	*p = s + 1;
	return true;
}

static int
compare_users(const void *a, const void *b)
{
	return strcmp(((const UserEntry *) a)->name, ((const UserEntry *) b)->name);
}

UserList *
userlist_load(const char *path)
{
	UserList *list = calloc(1, sizeof(UserList));
	char line[MAX_LINE], name[256], secret[MAX_LINE];
	int lineno = 0, cap = 0, i;
	bool ok = true;
	FILE *f;

	if (!list)
		return NULL;
	f = fopen(path, "r");
	if (!f) {
		log_error("auth", "%s: could not open auth_file: %s", path, strerror(errno));
		free(list);
		return NULL;
	}
	while (fgets(line, sizeof(line), f)) {
		const char *p = line;
		UserEntry *e;
		char err[256];

		lineno++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0' || *p == '\n' || *p == '\r' || *p == ';' || *p == '#')
			continue;
		if (!read_quoted(&p, name, sizeof(name)) || !read_quoted(&p, secret, sizeof(secret)) ||
		    name[0] == '\0') {
			log_error("auth", "%s:%d: expected \"user\" \"secret\"", path, lineno);
			ok = false;
			continue;
		}
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		if (*p != '\0') {
			log_error("auth", "%s:%d: unexpected text after the secret", path, lineno);
			ok = false;
			continue;
		}
		if (list->n == cap) {
			UserEntry *grown;

			cap = cap ? cap * 2 : 16;
			grown = realloc(list->users, sizeof(UserEntry) * (size_t) cap);
			if (!grown) {
				ok = false;
				break;
			}
			list->users = grown;
		}
		e = &list->users[list->n];
		if (!userlist_entry_init(e, name, secret, err, sizeof(err))) {
			log_error("auth", "%s:%d: user \"%s\": %s", path, lineno, name, err);
			ok = false;
			continue;
		}
		list->n++;
	}
	fclose(f);
	OPENSSL_cleanse(secret, sizeof(secret));
	OPENSSL_cleanse(line, sizeof(line));
	if (ok && list->n > 0) {
		qsort(list->users, (size_t) list->n, sizeof(UserEntry), compare_users);
		for (i = 1; i < list->n; i++) {
			if (strcmp(list->users[i - 1].name, list->users[i].name) == 0) {
				log_error("auth", "%s: user \"%s\" is listed twice", path, list->users[i].name);
				ok = false;
			}
		}
	}
	if (!ok) {
		userlist_free(list);
		return NULL;
	}
	return list;
}

const UserEntry *
userlist_find(const UserList *list, const char *name)
{
	UserEntry key;

	if (!list || list->n == 0)
		return NULL;
	key.name = (char *) name;
	return bsearch(&key, list->users, (size_t) list->n, sizeof(UserEntry), compare_users);
}

void
userlist_free(UserList *list)
{
	int i;

	if (!list)
		return;
	for (i = 0; i < list->n; i++)
		userlist_entry_clear(&list->users[i]);
	free(list->users);
	free(list);
}

bool
userlist_prepare_scram(UserList *list)
{
	char err[256];
	int i;

	if (!list)
		return true;
	if (!ensure_mock_secret(err, sizeof(err))) {
		log_error("auth", "%s", err);
		return false;
	}
	for (i = 0; i < list->n; i++)
		userlist_entry_prepare_scram(&list->users[i]);
	return true;
}

void
userlist_entry_prepare_scram(UserEntry *e)
{
	uint8_t salt[SCRAM_DEFAULT_SALT_LEN];
	char err[256];

	if (e->kind != SECRET_PLAIN)
		return;
	/* Without a verifier (an empty password, say) the user gets the mock exchange: no login. */
	if (!ensure_mock_secret(err, sizeof(err))) {
		/* err says why */
	} else if (!scram_mock_salt(e->name, mock_secret, sizeof(mock_secret), salt))
		snprintf(err, sizeof(err), "could not derive a salt");
	else if (scram_verifier_build(&e->verifier, e->secret, salt, sizeof(salt), SCRAM_DEFAULT_ITERATIONS, err,
				      sizeof(err)))
		return;
	memset(&e->verifier, 0, sizeof(e->verifier));
	log_warning("auth", "user \"%s\" cannot log in with SCRAM: %s", e->name, err);
}

bool
userlist_scram_start(const UserList *list, const char *user, ScramServer *s, bool *mock, char *err, size_t errlen)
{
	return userlist_scram_start_entry(userlist_find(list, user), user, s, mock, err, errlen);
}

bool
userlist_scram_start_entry(const UserEntry *e, const char *user, ScramServer *s, bool *mock, char *err, size_t errlen)
{
	*mock = !e || (e->kind != SECRET_SCRAM && e->verifier.iterations == 0);
	if (!*mock)
		return scram_server_init(s, &e->verifier, err, errlen);
	/* Like PostgreSQL: an exchange that can only fail, shown like a real one. */
	return ensure_mock_secret(err, errlen) &&
		scram_server_init_mock(s, user, mock_secret, sizeof(mock_secret), err, errlen);
}

bool
userlist_md5_verify(const UserList *list, const char *user, const uint8_t salt[4], const char *response,
		    size_t response_len, char *err, size_t errlen)
{
	return userlist_md5_verify_entry(userlist_find(list, user), user, salt, response, response_len, err, errlen);
}

bool
userlist_md5_verify_entry(const UserEntry *e, const char *user, const uint8_t salt[4], const char *response,
			  size_t response_len, char *err, size_t errlen)
{
	char ignored[64];
	bool matched = false;

	if (e && e->kind == SECRET_MD5)
		return md5auth_verify_stored(e->secret, salt, response, response_len, err, errlen);
	if (e && e->kind == SECRET_PLAIN)
		return md5auth_verify_password(user, e->secret, salt, response, response_len, err, errlen);
	/* The hashing a plaintext password costs, then the failure whatever it found. */
	if (ensure_mock_secret(err, errlen))
		matched = md5auth_verify_password(user, mock_password, salt, response, response_len, ignored,
						  sizeof(ignored));
	(void) matched; /* no: the secret is never shown */
	snprintf(err, errlen, e ? "only a SCRAM verifier is known for this user" : "no secret for this user");
	return false;
}
