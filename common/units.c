/*
 * Values are integers with a unit, like postgresql.conf's.  Fractions are
 * refused rather than rounded: "1.5s" is written "1500ms", so the value the
 * DBA reads back is always the value in force.
 */
#include "common/units.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct Unit {
	const char *name;
	int64_t factor;
} Unit;

static const Unit size_units[] = {
	{"B", 1},
	{"kB", INT64_C(1) << 10},
	{"MB", INT64_C(1) << 20},
	{"GB", INT64_C(1) << 30},
	{"TB", INT64_C(1) << 40},
	{NULL, 0},
};

static const Unit duration_units[] = {
	{"us", 1},
	{"ms", 1000},
	{"s", 1000 * 1000},
	{"min", INT64_C(60) * 1000 * 1000},
	{"h", INT64_C(3600) * 1000 * 1000},
	{"d", INT64_C(86400) * 1000 * 1000},
	{NULL, 0},
};

/* Splits "  16 MB " into 16 and "MB"; fails on anything but digits then a word. */
static bool
split_number_unit(const char *s, int64_t *number, const char **unit, size_t *unitlen, char *err, size_t errlen)
{
	const char *p = s;
	const char *end;
	char *numend;
	long long v;

	while (isspace((unsigned char) *p))
		p++;
	if (!isdigit((unsigned char) *p)) {
		snprintf(err, errlen, "invalid value \"%s\": expected a non-negative whole number", s);
		return false;
	}
	errno = 0;
	v = strtoll(p, &numend, 10);
	if (errno == ERANGE) {
		snprintf(err, errlen, "value \"%s\" is out of range", s);
		return false;
	}
	p = numend;
	if (*p == '.' || *p == ',') {
		snprintf(err, errlen, "invalid value \"%s\": fractions are not accepted, use a smaller unit", s);
		return false;
	}
	while (isspace((unsigned char) *p))
		p++;
	end = p;
	while (*end && !isspace((unsigned char) *end))
		end++;
	*unit = p;
	*unitlen = (size_t) (end - p);
	while (isspace((unsigned char) *end))
		end++;
	if (*end) {
		snprintf(err, errlen, "invalid value \"%s\": unexpected text after the unit", s);
		return false;
	}
	*number = v;
	return true;
}

static bool
apply_unit(const char *s, const Unit *units, int64_t number, const char *unit, size_t unitlen, int64_t *out, char *err,
	   size_t errlen, const char *valid)
{
	const Unit *u;

	for (u = units; u->name; u++) {
		if (strlen(u->name) == unitlen && strncmp(u->name, unit, unitlen) == 0) {
			if (number > INT64_MAX / u->factor) {
				snprintf(err, errlen, "value \"%s\" is out of range", s);
				return false;
			}
			*out = number * u->factor;
			return true;
		}
	}
	snprintf(err, errlen, "invalid unit in \"%s\": valid units are %s", s, valid);
	return false;
}

bool
parse_size(const char *s, int64_t *bytes, char *err, size_t errlen)
{
	int64_t number;
	const char *unit;
	size_t unitlen;

	if (!split_number_unit(s, &number, &unit, &unitlen, err, errlen))
		return false;
	if (unitlen == 0) {
		*bytes = number;
		return true;
	}
	return apply_unit(s, size_units, number, unit, unitlen, bytes, err, errlen,
			  "\"B\", \"kB\", \"MB\", \"GB\" and \"TB\"");
}

bool
parse_duration(const char *s, int64_t *usec, char *err, size_t errlen)
{
	int64_t number;
	const char *unit;
	size_t unitlen;

	if (!split_number_unit(s, &number, &unit, &unitlen, err, errlen))
		return false;
	if (unitlen == 0) {
		snprintf(err, errlen, "invalid value \"%s\": a unit is required (for example \"%sms\" or \"%ss\")", s,
			 s, s);
		return false;
	}
	return apply_unit(s, duration_units, number, unit, unitlen, usec, err, errlen,
			  "\"us\", \"ms\", \"s\", \"min\", \"h\" and \"d\"");
}

bool
parse_int(const char *s, int64_t min, int64_t max, int64_t *out, char *err, size_t errlen)
{
	int64_t number;
	const char *unit;
	size_t unitlen;
	const char *p = s;

	while (isspace((unsigned char) *p))
		p++;
	if (*p == '-') {
		snprintf(err, errlen, "value \"%s\" is out of range (%lld .. %lld)", s, (long long) min,
			 (long long) max);
		return false;
	}
	if (!split_number_unit(s, &number, &unit, &unitlen, err, errlen))
		return false;
	if (unitlen != 0) {
		snprintf(err, errlen, "invalid value \"%s\": expected a whole number", s);
		return false;
	}
	if (number < min || number > max) {
		snprintf(err, errlen, "value \"%s\" is out of range (%lld .. %lld)", s, (long long) min,
			 (long long) max);
		return false;
	}
	*out = number;
	return true;
}

bool
parse_bool(const char *s, bool *out, char *err, size_t errlen)
{
	static const char *const yes[] = {"on", "true", "yes", "1", NULL};
	static const char *const no[] = {"off", "false", "no", "0", NULL};
	int i;

	for (i = 0; yes[i]; i++)
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
	for (i = 0; no[i]; i++)
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	snprintf(err, errlen, "invalid boolean \"%s\": use on or off", s);
	return false;
}

static void
format_with_units(int64_t value, const Unit *units, char *buf, size_t len)
{
	const Unit *best = &units[0];
	const Unit *u;

	for (u = units; u->name; u++)
		if (value != 0 && value % u->factor == 0)
			best = u;
	snprintf(buf, len, "%lld%s", (long long) (value / best->factor), best->name);
}

void
format_size(int64_t bytes, char *buf, size_t len)
{
	format_with_units(bytes, size_units, buf, len);
}

void
format_duration(int64_t usec, char *buf, size_t len)
{
	format_with_units(usec, duration_units, buf, len);
}
