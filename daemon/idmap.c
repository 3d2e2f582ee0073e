/* idmap.c - task id to pointer hash map (see idmap.h). */
#include <stdlib.h>

#include "idmap.h"
#include "xalloc.h"

/* Fibonacci hashing: ids are sequential, the multiply spreads them. */
static size_t home(const struct idmap *m, uint64_t key)
{
	return (size_t)((key * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & m->mask;
}

void *idmap_get(const struct idmap *m, uint64_t key)
{
	if (!m->slots)
		return NULL;
	for (size_t i = home(m, key);; i = (i + 1) & m->mask) {
		if (m->slots[i].key == key)
			return m->slots[i].val;
		if (m->slots[i].key == 0)
			return NULL;
	}
}

static void insert(struct idmap *m, uint64_t key, void *val)
{
	size_t i = home(m, key);
	while (m->slots[i].key != 0)
		i = (i + 1) & m->mask;
	m->slots[i].key = key;
	m->slots[i].val = val;
}

static void resize(struct idmap *m, size_t cap)
{
	struct idmap_slot *old = m->slots;
	size_t oldcap = old ? m->mask + 1 : 0;

	m->slots = xcalloc(cap, sizeof *m->slots);
	m->mask = cap - 1;
	for (size_t i = 0; i < oldcap; i++)
		if (old[i].key)
			insert(m, old[i].key, old[i].val);
	free(old);
}

void idmap_put(struct idmap *m, uint64_t key, void *val)
{
	if (!m->slots)
		resize(m, 64);
	else if ((m->len + 1) * 4 > (m->mask + 1) * 3)   /* load <= 3/4 */
		resize(m, (m->mask + 1) * 2);
	insert(m, key, val);
	m->len++;
}

void *idmap_del(struct idmap *m, uint64_t key)
{
	/* Key 0 would "match" the first empty slot and miscount len. */
	if (!m->slots || key == 0)
		return NULL;
	size_t i = home(m, key);
	while (m->slots[i].key != key) {
		if (m->slots[i].key == 0)
			return NULL;
		i = (i + 1) & m->mask;
	}
	void *val = m->slots[i].val;
	m->len--;

	/* Backward shift: pull later entries of the run into the hole when
	 * their home slot does not lie between the hole and them. */
	for (size_t j = (i + 1) & m->mask; m->slots[j].key; j = (j + 1) & m->mask) {
		size_t h = home(m, m->slots[j].key);
		if (((j - h) & m->mask) >= ((j - i) & m->mask)) {
			m->slots[i] = m->slots[j];
			i = j;
		}
	}
	m->slots[i].key = 0;
	m->slots[i].val = NULL;

	if (m->mask + 1 > 64 && m->len * 8 < m->mask + 1)   /* shrink at 1/8 */
		resize(m, (m->mask + 1) / 2);
	return val;
}

void idmap_free(struct idmap *m)
{
	free(m->slots);
	m->slots = NULL;
	m->mask = m->len = 0;
}
