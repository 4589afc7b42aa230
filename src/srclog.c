/* srclog.c - at most one log line per source per minute; see srclog.h */
#include "srclog.h"

#include <stdio.h>
#include <string.h>

/* FNV-1a of the address: the first slot a source may take. */
static unsigned slot_of(const uint8_t a[16])
{
	uint32_t h = 2166136261u;

	for (int i = 0; i < 16; i++)
		h = (h ^ a[i]) * 16777619u;
	return h % SRCLOG_SLOTS;
}

bool srclog_may(struct srclog *l, const uint8_t a[16], uint64_t now_ms)
{
	unsigned first = slot_of(a), free_slot = SRCLOG_SLOTS;
	uint64_t now = now_ms ? now_ms : 1;

	for (unsigned k = 0; k < SRCLOG_WAYS; k++) {
		unsigned i = (first + k) % SRCLOG_SLOTS;
		struct srclog_slot *s = &l->slot[i];
		bool expired = !s->last_ms || now - s->last_ms >= SRCLOG_INTERVAL_MS;

		if (s->last_ms && memcmp(s->addr, a, 16) == 0) {
			if (!expired)
				return false;
			s->last_ms = now;
			return true;
		}
		if (expired && free_slot == SRCLOG_SLOTS)
			free_slot = i;
	}
	if (free_slot == SRCLOG_SLOTS) {
		l->suppressed++;
		return false;
	}
	memcpy(l->slot[free_slot].addr, a, 16);
	l->slot[free_slot].last_ms = now;
	return true;
}

void srclog_take_suppressed(struct srclog *l, const char *what, char *buf, unsigned size)
{
	buf[0] = '\0';
	if (l->suppressed)
		snprintf(buf, size, "; %llu %s from other sources not logged",
			 (unsigned long long)l->suppressed, what);
	l->suppressed = 0;
}
