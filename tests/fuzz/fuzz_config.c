/*
 * libFuzzer target: the configuration parser on arbitrary bytes.  It must
 * never crash, leak or read out of bounds, whatever the file says.
 */
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FILE *in, *errors;
	Config config;

	if (size == 0)
		return 0;
	in = fmemopen((void *) data, size, "r");
	errors = fopen("/dev/null", "w");
	if (!in || !errors) {
		if (in)
			fclose(in);
		if (errors)
			fclose(errors);
		return 0;
	}
	if (config_load_stream(in, "/tmp/fuzz.ini", &config, errors))
		config_free(&config);
	fclose(in);
	fclose(errors);
	return 0;
}
