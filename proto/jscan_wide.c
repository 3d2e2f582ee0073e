/*
 * jscan_wide.c - the block finders of jscan.c's string scan (see
 * jscan_wide.h): SWAR on eight bytes, SSE2 on 16 and AVX2 on 32, and the
 * choice among them, made once from what the CPU says it has.
 *
 * Items are mostly long runs of plain bytes inside one string, so this is
 * where the scanner spends its time on big frames.  Each finder also notes
 * a byte >= 0x80 on its way: a frame the scanner takes with none is ASCII,
 * valid UTF-8 without a pass of its own (request.c).
 */
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "jscan_wide.h"

static size_t find_swar(const char *p, size_t n, bool *high)
{
	const uint64_t ones = 0x0101010101010101ULL,
	               highs = 0x8080808080808080ULL;
	uint64_t seen = 0;
	size_t i = 0;

	for (; n - i >= 8; i += 8) {
		uint64_t w, q, b;
		memcpy(&w, p + i, 8);
		q = w ^ (ones * '"');
		b = w ^ (ones * '\\');
		/* Exact as to whether the word holds one (a borrow only
		 * spreads above a byte that does); which one, the bytes say. */
		if (((w - ones * 0x20) | (q - ones) | (b - ones)) & ~w & highs) {
			while (p[i] != '"' && p[i] != '\\' &&
			       (unsigned char)p[i] >= 0x20)
				seen |= (unsigned char)p[i++];
			break;
		}
		seen |= w;
	}
	if (seen & highs)
		*high = true;
	return i;
}

#if defined(__x86_64__)

/* The bits below the first set bit of m, the bytes before the first stop. */
#define BEFORE(m) (((m) - 1) & ~(m))

static size_t find_sse2(const char *p, size_t n, bool *high)
{
	const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
	              ctl = _mm_set1_epi8(0x1F);
	unsigned seen = 0;
	size_t i = 0;

	for (; n - i >= 16; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
		__m128i stop = _mm_or_si128(
			_mm_or_si128(_mm_cmpeq_epi8(v, quote),
			             _mm_cmpeq_epi8(v, bslash)),
			_mm_cmpeq_epi8(_mm_min_epu8(v, ctl), v));   /* v <= 0x1F */
		unsigned s = (unsigned)_mm_movemask_epi8(stop),
		         h = (unsigned)_mm_movemask_epi8(v);
		if (s) {
			seen |= h & BEFORE(s);
			i += (size_t)__builtin_ctz(s);
			break;
		}
		seen |= h;
	}
	if (seen)
		*high = true;
	return i;
}

__attribute__((target("avx2")))
static size_t find_avx2(const char *p, size_t n, bool *high)
{
	const __m256i quote = _mm256_set1_epi8('"'),
	              bslash = _mm256_set1_epi8('\\'),
	              ctl = _mm256_set1_epi8(0x1F);
	unsigned seen = 0;
	size_t i = 0;

	for (; n - i >= 32; i += 32) {
		__m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(p + i));
		__m256i stop = _mm256_or_si256(
			_mm256_or_si256(_mm256_cmpeq_epi8(v, quote),
			                _mm256_cmpeq_epi8(v, bslash)),
			_mm256_cmpeq_epi8(_mm256_min_epu8(v, ctl), v));
		unsigned s = (unsigned)_mm256_movemask_epi8(stop),
		         h = (unsigned)_mm256_movemask_epi8(v);
		if (s) {
			seen |= h & BEFORE(s);
			i += (size_t)__builtin_ctz(s);
			break;
		}
		seen |= h;
	}
	if (seen)
		*high = true;
	return i;
}

#endif

jscan_finder *jscan_finder_of(enum jscan_variant v)
{
	switch (v) {
	case JSCAN_SWAR:
		return find_swar;
#if defined(__x86_64__)
	case JSCAN_SSE2:
		return find_sse2;
	case JSCAN_AVX2:
		__builtin_cpu_init();
		return __builtin_cpu_supports("avx2") ? find_avx2 : NULL;
#endif
	default:
		return NULL;
	}
}

/* The widest variant this CPU has. */
enum jscan_variant jscan_best(void)
{
	int b = JSCAN_NVARIANTS - 1;
	while (!jscan_finder_of((enum jscan_variant)b))
		b--;
	return (enum jscan_variant)b;
}

/*
 * The one piece of state here: the finder of the CPU's widest variant,
 * asked for on first use and the same ever after (two first uses at once
 * store the same pointer twice; the relaxed atomics only say so to the
 * compiler).  Asking cpuid again for every string would cost more than
 * the wide step saves on short ones.
 */
jscan_finder *jscan_best_finder(void)
{
	static jscan_finder *best;
	jscan_finder *f = __atomic_load_n(&best, __ATOMIC_RELAXED);

	if (!f) {
		f = jscan_finder_of(jscan_best());
		__atomic_store_n(&best, f, __ATOMIC_RELAXED);
	}
	return f;
}
