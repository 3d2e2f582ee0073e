// utf8_simd.cc - utf8_valid_simd(), simdjson's validate_utf8 for C
// (see utf8_simd.h).
#include <simdjson.h>

#include "utf8_simd.h"

extern "C" bool utf8_valid_simd(const char *p, size_t len)
{
	return simdjson::validate_utf8(p, len);
}
