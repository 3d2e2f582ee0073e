/*
 * idmap.h - a hash map from task id (a non-zero uint64) to a pointer: the
 * engine's in-flight table.  Open addressing with linear probing and
 * backward-shift deletion, so there are no tombstones and lookups stay
 * short however many tasks come and go.
 */
#ifndef JQ_IDMAP_H
#define JQ_IDMAP_H

#include <stddef.h>
#include <stdint.h>

struct idmap_slot {
	uint64_t key;      /* 0: empty */
	void *val;
};

struct idmap {
	struct idmap_slot *slots;
	size_t mask;       /* capacity - 1; capacity is a power of two */
	size_t len;
};

void *idmap_get(const struct idmap *m, uint64_t key);
/* key must be non-zero and not present yet. */
void idmap_put(struct idmap *m, uint64_t key, void *val);
/* Removes key and returns its value, or NULL if absent. */
void *idmap_del(struct idmap *m, uint64_t key);
void idmap_free(struct idmap *m);

#endif
