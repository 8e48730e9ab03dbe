/*-------------------------------------------------------------------------
 *
 * connections.c
 *	  The listener's open connections: a total deadline for each request,
 *	  and room for new connections under a flood.
 *
 * libmicrohttpd's connection timeout counts inactivity only, so a client
 * that sends a byte every few seconds would hold its connection for ever,
 * and a few such clients hold every slot.  So each connection is tracked
 * here (libmicrohttpd tells us when one opens and closes), in the order
 * its current request began: at accept, or when the previous request on
 * the connection was answered.  A client has REQUEST_DEADLINE_MS from then
 * to deliver the whole request (headers and body); once the request has
 * arrived, the time we take to record and answer it does not count.  And
 * when the open connections come within an eighth of
 * plivo_otp.listen_max_connections, the oldest still delivering a request
 * (at least EVICT_MIN_AGE_MS into it) are cut first, so a new connection
 * always finds a slot and a prompt request is never the one cut.
 *
 * To cut a connection we shut its socket down (shutdown(2), not close: the
 * descriptor stays libmicrohttpd's), so libmicrohttpd sees it end on its
 * next run and closes it properly.  Plain C: libmicrohttpd's callbacks run
 * the notify and request functions, where nothing may longjmp.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <microhttpd.h>
#include <sys/socket.h>
#include <time.h>

#include "listener.h"

#define REQUEST_DEADLINE_MS 10000
#define EVICT_MIN_AGE_MS	1000

typedef struct ListenerConnection
{
	int			fd;
	int64		started_ms;		/* when its current request began */
	bool		reading;		/* the client still owes us that request */
	bool		cut;			/* shut down; libmicrohttpd closes it next */
	struct ListenerConnection *prev;
	struct ListenerConnection *next;
} ListenerConnection;

/* Open connections, by started_ms: the head's request began first. */
static ListenerConnection *head = NULL;
static ListenerConnection *tail = NULL;
static int	open_count = 0;
static int	cut_count = 0;

/* How many connections are open (the listener's wait event tells). */
int
plivo_otp_connections_open(void)
{
	return open_count;
}

/* Milliseconds of the monotonic clock (server.c too). */
int64
plivo_otp_listener_now_ms(void)
{
	return plivo_otp_listener_now_us() / 1000;
}

/* Microseconds of the monotonic clock. */
int64
plivo_otp_listener_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
unlink_connection(ListenerConnection *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		tail = c->prev;
	c->prev = c->next = NULL;
}

static void
append_connection(ListenerConnection *c)
{
	c->prev = tail;
	c->next = NULL;
	if (tail)
		tail->next = c;
	else
		head = c;
	tail = c;
}

static ListenerConnection *
connection_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *info;

	info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return info ? (ListenerConnection *) info->socket_context : NULL;
}

static void
cut(ListenerConnection *c)
{
	(void) shutdown(c->fd, SHUT_RDWR);
	c->cut = true;
	cut_count++;
}

/* libmicrohttpd's MHD_OPTION_NOTIFY_CONNECTION: a connection opened or closed. */
void
plivo_otp_connection_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
							enum MHD_ConnectionNotificationCode toe)
{
	ListenerConnection *c = *socket_context;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
	{
		const union MHD_ConnectionInfo *info;

		info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		c = info ? calloc(1, sizeof(ListenerConnection)) : NULL;
		if (c == NULL)
		{
			/* Out of memory: a connection without a deadline does not stay. */
			if (info)
				(void) shutdown(info->connect_fd, SHUT_RDWR);
			return;
		}
		c->fd = info->connect_fd;
		c->started_ms = plivo_otp_listener_now_ms();
		c->reading = true;
		append_connection(c);
		open_count++;
		*socket_context = c;
		return;
	}
	if (c == NULL)
		return;
	unlink_connection(c);
	open_count--;
	if (c->cut)
		cut_count--;
	free(c);
	*socket_context = NULL;
}

/* The request on conn has arrived whole: what follows is our time, not the client's. */
void
plivo_otp_connection_request_arrived(struct MHD_Connection *conn)
{
	ListenerConnection *c = connection_of(conn);

	if (c)
		c->reading = false;
}

/* The request on conn is over: the next one on it starts its clock now. */
void
plivo_otp_connection_request_over(struct MHD_Connection *conn)
{
	ListenerConnection *c = connection_of(conn);

	if (c == NULL)
		return;
	c->started_ms = plivo_otp_listener_now_ms();
	c->reading = true;
	unlink_connection(c);
	append_connection(c);
}

/*
 * Cut the connections whose request is overdue, and while the open ones
 * leave less than an eighth of the slots free, the oldest still delivering
 * one.  Returns how many were cut (libmicrohttpd closes them on its next
 * run).  *next_ms: milliseconds until this needs to run again, or -1.
 */
int
plivo_otp_connections_enforce(long *next_ms)
{
	int			room = Max(plivo_otp_listen_max_connections / 8, 1);
	int			high_water = plivo_otp_listen_max_connections - room;
	int64		now = plivo_otp_listener_now_ms();
	int			n = 0;

	*next_ms = -1;
	for (ListenerConnection *c = head; c; c = c->next)
	{
		int64		age = now - c->started_ms;
		bool		crowded = open_count - cut_count > high_water;

		if (!c->reading || c->cut)
			continue;
		if (age >= REQUEST_DEADLINE_MS || (crowded && age >= EVICT_MIN_AGE_MS))
		{
			cut(c);
			n++;
			continue;
		}
		/* The rest began later: the first one left is the next to watch. */
		*next_ms = (crowded ? EVICT_MIN_AGE_MS : REQUEST_DEADLINE_MS) - age;
		break;
	}
	return n;
}
