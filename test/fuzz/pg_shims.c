/*-------------------------------------------------------------------------
 *
 * pg_shims.c
 *	  The palloc family for the libFuzzer targets that link server code
 *	  (fuzz_phone: src/common/phone.c; fuzz_send_response:
 *	  src/dispatcher/plivo_response.c and PostgreSQL's JSON lexer).
 *
 * Each chunk is its own malloc block (so ASan puts a redzone around every
 * chunk, which the server's memory contexts never do), and every live
 * chunk is remembered: pg_shims_reset(), called after each input, frees
 * what is left, as resetting a memory context would, so LeakSanitizer
 * stays on for everything else.  Linked before libpgcommon_shlib.a, these
 * definitions keep its fe_memutils.o out.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include "pg_shims.h"

/* Every chunk starts with this header; live chunks form a list. */
typedef union ShimChunk
{
	struct
	{
		union ShimChunk *prev;
		union ShimChunk *next;
		size_t		size;
	}			h;
	max_align_t align;
} ShimChunk;

static ShimChunk *live = NULL;
static size_t nlive = 0;

static void *
shim_alloc(Size size, bool zero)
{
	ShimChunk  *c = malloc(sizeof(ShimChunk) + size);

	if (c == NULL)
		__builtin_trap();
	if (zero)
		memset(c + 1, 0, size);
	c->h.prev = NULL;
	c->h.next = live;
	c->h.size = size;
	if (live)
		live->h.prev = c;
	live = c;
	nlive++;
	return c + 1;
}

static void
shim_unlink(ShimChunk *c)
{
	if (c->h.prev)
		c->h.prev->h.next = c->h.next;
	else
		live = c->h.next;
	if (c->h.next)
		c->h.next->h.prev = c->h.prev;
	nlive--;
}

void *
palloc(Size size)
{
	return shim_alloc(size, false);
}

void *
palloc0(Size size)
{
	return shim_alloc(size, true);
}

void *
palloc_extended(Size size, int flags)
{
	return shim_alloc(size, (flags & MCXT_ALLOC_ZERO) != 0);
}

void
pfree(void *pointer)
{
	ShimChunk  *c = (ShimChunk *) pointer - 1;

	shim_unlink(c);
	free(c);
}

void *
repalloc(void *pointer, Size size)
{
	ShimChunk  *old = (ShimChunk *) pointer - 1;
	void	   *p = shim_alloc(size, false);

	memcpy(p, pointer, Min(size, old->h.size));
	shim_unlink(old);
	free(old);
	return p;
}

char *
pstrdup(const char *in)
{
	size_t		len = strlen(in);
	char	   *out = shim_alloc(len + 1, false);

	memcpy(out, in, len + 1);
	return out;
}

char *
pnstrdup(const char *in, Size len)
{
	char	   *out;

	len = strnlen(in, len);
	out = shim_alloc(len + 1, false);
	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

size_t
pg_shims_live_chunks(void)
{
	return nlive;
}

void
pg_shims_reset(void)
{
	while (live)
	{
		ShimChunk  *c = live;

		live = c->h.next;
		free(c);
	}
	nlive = 0;
}
