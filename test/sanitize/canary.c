/*-------------------------------------------------------------------------
 *
 * canary.c
 *	  The sanitize suite's proof that a report would be seen (test/lib.sh,
 *	  sanitizer_canary): one real fault of each kind, in a sanitized shared
 *	  object that a plain executable dlopen()s, as the Debian postgres
 *	  loads the sanitized plivo_otp.so.
 *
 * Built twice: with -DCANARY_LIBRARY and the suite's sanitizer flags as
 * canary.so, and without either as the executable.
 *
 *		canary CANARY.SO heap-overflow|shift
 *
 *-------------------------------------------------------------------------
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef CANARY_LIBRARY

extern int	canary_fault(const char *kind, int n);

/* n is 1 at run time, unknown to the compiler. */
int
canary_fault(const char *kind, int n)
{
	if (strcmp(kind, "heap-overflow") == 0)
	{
		/* a size the compiler cannot see, so ASan, not UBSan's object-size, reports */
		char	   *p = malloc(7 + n);
		int			c;

		memset(p, 0, 7 + n);
		c = p[7 + n];			/* one byte past the end */
		free(p);
		return c;
	}
	if (strcmp(kind, "shift") == 0)
		return 1 << (31 + n);	/* shift exponent 32 is too large */
	return -1;
}

#else

int
main(int argc, char **argv)
{
	void	   *lib;
	int			(*fault) (const char *, int);

	if (argc != 3)
	{
		fprintf(stderr, "usage: %s CANARY.SO heap-overflow|shift\n", argv[0]);
		return 2;
	}
	lib = dlopen(argv[1], RTLD_NOW);
	if (lib == NULL)
	{
		fprintf(stderr, "%s\n", dlerror());
		return 2;
	}
	fault = (int (*) (const char *, int)) dlsym(lib, "canary_fault");
	if (fault == NULL)
		return 2;
	printf("%d\n", fault(argv[2], argc - 2));
	return 0;
}

#endif
