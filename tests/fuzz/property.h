/*
 * property.h - CHECK(cond) for the fuzz harnesses of tests/fuzz: a
 * property that does not hold abort()s with its file and line, which
 * libFuzzer reports as a crash and saves as an input.
 */
#ifndef JQ_FUZZ_PROPERTY_H
#define JQ_FUZZ_PROPERTY_H

#include <stdio.h>
#include <stdlib.h>

static inline void property_violated(const char *file, int line,
                                     const char *what)
{
	fprintf(stderr, "%s:%d: property violated: %s\n", file, line, what);
	abort();
}

#define CHECK(cond) \
	do { \
		if (!(cond)) \
			property_violated(__FILE__, __LINE__, #cond); \
	} while (0)

#endif
