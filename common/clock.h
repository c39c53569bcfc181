/*
 * Time in seconds as a double: monotonic for intervals and timeouts, the
 * wall clock for what is written down (progress files, reports).
 */
#ifndef PGHANDOFF_COMMON_CLOCK_H
#define PGHANDOFF_COMMON_CLOCK_H

double clock_monotonic(void);
double clock_unix(void);

#endif
