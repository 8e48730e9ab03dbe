/*-------------------------------------------------------------------------
 *
 * asan_early_init.c
 *	  Preloaded after the ASan runtime into the sanitize suite's servers
 *	  (test/lib.sh, sanitizer_setup): makes ASan initialise before a
 *	  library constructor holds glibc's gettext lock.
 *
 * Debian's postgres is not built with ASan, so the runtime comes in by
 * LD_PRELOAD and initialises lazily, at the first call it intercepts.  The
 * first is a malloc inside bindtextdomain(), called by libgpg-error's
 * constructor (postgres -> libsystemd -> libgcrypt -> libgpg-error) while
 * it holds the write lock of _nl_state_lock; ASan's initialisation calls
 * dlerror(), which takes the same lock to read, and the lock is left
 * corrupted: postgres then hangs in its own bindtextdomain() in main().
 * (Any program that links libgpg-error does; pg_ctl and psql do not.)
 *
 * This bindtextdomain() interposes on glibc's: it makes ASan initialise,
 * with no lock held, by allocating once, then calls glibc's.
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>

extern char *bindtextdomain(const char *domainname, const char *dirname);

char *
bindtextdomain(const char *domainname, const char *dirname)
{
	static char *(*real) (const char *, const char *);
	void	   *volatile p = malloc(1);

	free(p);
	if (real == NULL)
		real = (char *(*) (const char *, const char *)) dlsym(RTLD_NEXT, "bindtextdomain");
	return real(domainname, dirname);
}
