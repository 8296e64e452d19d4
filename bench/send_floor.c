/*-------------------------------------------------------------------------
 *
 * send_floor.c
 *	  The floor under presence's cost per delivery: what one send() of a
 *	  frame of the same size costs on this machine, with as many open
 *	  loopback connections as the fan-out benchmark has.
 *
 * A reader process accepts the connections and reads everything; this
 * process sends one frame of the given size to each connection in turn,
 * in groups of as many sends as a message has deliveries, at the given
 * rate of sends per second, and reports its own CPU time (user and
 * system, from getrusage) per send.  On loopback the system time includes
 * the receiving side's TCP processing, as it does for the server, so the
 * figure is what the server's send() costs, nothing of presence's own
 * work.
 *
 *	  bench/send_floor [CONNECTIONS [FRAME_BYTES [SENDS_PER_S [SECONDS [GROUP]]]]]
 *
 * Defaults: 10000 connections, 262-byte frames (a cursor delivery of the
 * fan-out benchmark), 45000 sends/s, 20 s, groups of 9.
 *
 * bench/send_floor.c
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double
cpu_s(int who, double *user, double *sys)
{
	struct rusage usage;

	getrusage(who, &usage);
	*user = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6;
	*sys = usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
	return *user + *sys;
}

static void
die(const char *what)
{
	perror(what);
	exit(1);
}

/* The reader: accepts count connections, then reads until they close. */
static void
read_everything(int listener, int count)
{
	int			epfd = epoll_create1(0);
	int			open_count = 0;
	char		buffer[65536];
	struct epoll_event event = {.events = EPOLLIN};

	for (int accepted = 0; accepted < count; accepted++)
	{
		int			fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK);

		if (fd < 0)
			die("accept");
		event.data.fd = fd;
		epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
		open_count++;
	}
	while (open_count > 0)
	{
		struct epoll_event ready[256];
		int			n = epoll_wait(epfd, ready, 256, -1);

		for (int i = 0; i < n; i++)
		{
			ssize_t		got;

			while ((got = read(ready[i].data.fd, buffer, sizeof(buffer))) > 0)
				;
			if (got == 0)
			{
				close(ready[i].data.fd);
				open_count--;
			}
		}
	}
	exit(0);
}

int
main(int argc, char **argv)
{
	int			count = argc > 1 ? atoi(argv[1]) : 10000;
	size_t		frame_bytes = argc > 2 ? (size_t) atol(argv[2]) : 262;
	double		rate = argc > 3 ? atof(argv[3]) : 45000;
	double		seconds = argc > 4 ? atof(argv[4]) : 20;
	int			group = argc > 5 ? atoi(argv[5]) : 9;
	struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t	address_len = sizeof(address);
	struct rlimit limit;
	int			listener;
	int		   *fds;
	char	   *frame;
	pid_t		reader;
	long		sent = 0;
	int			next = 0;
	double		start,
				cpu_start,
				cpu_end,
				user0,
				sys0,
				user1,
				sys1,
				reader_user,
				reader_sys;

	if (count < 1 || frame_bytes < 2 || rate <= 0 || seconds <= 0 || group < 1)
	{
		fprintf(stderr, "usage: send_floor [CONNECTIONS [FRAME_BYTES [SENDS_PER_S [SECONDS [GROUP]]]]]\n");
		return 2;
	}
	getrlimit(RLIMIT_NOFILE, &limit);
	limit.rlim_cur = limit.rlim_max;
	setrlimit(RLIMIT_NOFILE, &limit);
	if ((listener = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
		bind(listener, (struct sockaddr *) &address, sizeof(address)) != 0 ||
		listen(listener, 4096) != 0 ||
		getsockname(listener, (struct sockaddr *) &address, &address_len) != 0)
		die("listen");
	if ((reader = fork()) == 0)
		read_everything(listener, count);
	close(listener);
	fds = calloc(count, sizeof(int));
	for (int i = 0; i < count; i++)
	{
		int			one = 1;

		/* as lws sets up a served socket: non-blocking, no Nagle */
		if ((fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)) < 0)
			die("socket");
		if (connect(fds[i], (struct sockaddr *) &address, sizeof(address)) != 0 && errno != EINPROGRESS)
			die("connect");
		setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	usleep(500000);				/* every connect completed */

	/* an unmasked text frame of frame_bytes bytes on the wire */
	frame = malloc(frame_bytes);
	memset(frame, 'x', frame_bytes);
	frame[0] = (char) 0x81;
	frame[1] = frame_bytes - 2 < 126 ? (char) (frame_bytes - 2) : 126;
	if (frame_bytes - 2 >= 126)
	{
		frame[2] = (char) ((frame_bytes - 4) >> 8);
		frame[3] = (char) (frame_bytes - 4);
	}

	start = now_s();
	cpu_start = cpu_s(RUSAGE_SELF, &user0, &sys0);
	while (now_s() - start < seconds)
	{
		long		due = (long) ((now_s() - start) * rate);

		while (sent + group <= due)
		{
			for (int g = 0; g < group; g++)
			{
				if (send(fds[next], frame, frame_bytes, MSG_NOSIGNAL) != (ssize_t) frame_bytes)
					die("send (the reader fell behind, or a short send)");
				next = (next + 1) % count;
			}
			sent += group;
		}
		usleep(200);
	}
	cpu_end = cpu_s(RUSAGE_SELF, &user1, &sys1);
	for (int i = 0; i < count; i++)
		close(fds[i]);
	waitpid(reader, NULL, 0);
	cpu_s(RUSAGE_CHILDREN, &reader_user, &reader_sys);

	printf("send_floor: %d connections, %zu-byte frames, %.0f sends/s in groups of %d, %.0f s\n",
		   count, frame_bytes, sent / seconds, group, seconds);
	printf("sender      %.3f us CPU per send (user %.3f, system %.3f), %.1f%% of a core\n",
		   1e6 * (cpu_end - cpu_start) / sent, 1e6 * (user1 - user0) / sent,
		   1e6 * (sys1 - sys0) / sent, 100 * (cpu_end - cpu_start) / seconds);
	printf("reader      %.1f%% of a core (whole run, setup included)\n",
		   100 * (reader_user + reader_sys) / (now_s() - start));
	printf("RESULT connections=%d frame_bytes=%zu sends_per_s=%.0f group=%d floor_us_per_send=%.3f "
		   "floor_user_us=%.3f floor_system_us=%.3f\n", count, frame_bytes, sent / seconds, group,
		   1e6 * (cpu_end - cpu_start) / sent, 1e6 * (user1 - user0) / sent, 1e6 * (sys1 - sys0) / sent);
	return 0;
}
